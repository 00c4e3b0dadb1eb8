"""Who moved between segments since the previous run: gold_segment_migration, from Delta time travel."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

NEW = "(new customers)"
DEPARTED = "(departed)"

MIGRATION_COLUMNS = ["run_id", "from_version", "to_version", "from_segment", "from_segment_name", "to_segment",
                     "to_segment_name", "change", "customers"]


def segment_migration(previous: DataFrame | None, current: DataFrame, run_id: str,
                      from_version: int | None, to_version: int | None, key: str = "customer_key") -> DataFrame:
    """from-segment x to-segment customer counts between two versions of gold_customer_segments_ml.

    Customers only in *current* are ``new`` (from_* null), only in *previous* ``departed`` (to_* null).
    Without a previous version every customer is new.
    """
    cur = current.select(key, F.col("segment").alias("to_segment"),
                         F.col("segment_name").alias("to_segment_name"), F.lit(True).alias("_in_cur"))
    if previous is not None and key not in previous.columns:
        previous = None  # the previous run segmented another recipe's customers: nothing to compare with
    if previous is None:
        joined = cur.select("*", F.lit(None).cast("int").alias("from_segment"),
                            F.lit(None).cast("string").alias("from_segment_name"), F.lit(None).alias("_in_prev"))
    else:
        prev = previous.select(key, F.col("segment").alias("from_segment"),
                               F.col("segment_name").alias("from_segment_name"), F.lit(True).alias("_in_prev"))
        joined = prev.join(cur, key, "full_outer")
    change = (F.when(F.col("_in_prev").isNull(), "new").when(F.col("_in_cur").isNull(), "departed")
              .when(F.col("from_segment_name") == F.col("to_segment_name"), "stayed").otherwise("moved"))
    counts = (joined.withColumn("change", change)
              .groupBy("from_segment", "from_segment_name", "to_segment", "to_segment_name", "change")
              .agg(F.count("*").alias("customers")))
    return (counts.select(F.lit(run_id).alias("run_id"), F.lit(from_version).cast("long").alias("from_version"),
                          F.lit(to_version).cast("long").alias("to_version"), "*")
            .select(*MIGRATION_COLUMNS).orderBy(F.col("from_segment").asc_nulls_first(),
                                                F.col("to_segment").asc_nulls_last()))


def migration_matrix(migration: DataFrame):
    """The migration as a pandas matrix: rows = previous segment (and new customers), columns = this
    run's segment (and departed); segment-id order."""
    pdf = migration.toPandas()  # at most (k+1) x (k+1) rows
    if pdf.empty:
        return pdf
    pdf["from"] = pdf.from_segment_name.fillna(NEW)
    pdf["to"] = pdf.to_segment_name.fillna(DEPARTED)
    order_from = (pdf.sort_values("from_segment", na_position="last").drop_duplicates("from")["from"].tolist())
    order_to = (pdf.sort_values("to_segment", na_position="last").drop_duplicates("to")["to"].tolist())
    matrix = pdf.pivot_table(index="from", columns="to", values="customers", aggfunc="sum", fill_value=0)
    return matrix.reindex(index=order_from, columns=order_to, fill_value=0).astype("int64")


def heatmap(matrix, title: str = "Segment migration since the previous run"):
    """A plotly heat map of migration_matrix(...) with the counts written in the cells."""
    import plotly.express as px
    fig = px.imshow(matrix, text_auto=True, color_continuous_scale="Blues", aspect="auto",
                    labels={"x": "this run", "y": "previous run", "color": "customers"}, title=title)
    fig.update_xaxes(side="top")
    return fig
