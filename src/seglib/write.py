"""Stage 5: the two gold tables, validated before anything is written."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables as TB
from .errors import ValidationError
from .tables import save_table

UNSEGMENTED_ID = -1
UNSEGMENTED_NAME = "Unsegmented (incomplete data)"  # only with null_policy=drop


def build_outputs(kpi: DataFrame, assignments: DataFrame, profile: DataFrame) -> tuple[DataFrame, DataFrame]:
    """gold_customer_segments_ml (every KPI column + segment + segment_name) and gold_segment_summary."""
    labels = assignments.join(F.broadcast(profile.select("cluster", "segment", "segment_name")), "cluster")
    segments = (kpi.join(labels.select("customer_key", "segment", "segment_name"), "customer_key", "left")
                .withColumn("segment", F.coalesce("segment", F.lit(UNSEGMENTED_ID)).cast("int"))
                .withColumn("segment_name", F.coalesce("segment_name", F.lit(UNSEGMENTED_NAME))))
    segments = segments.select(*kpi.columns, "segment", "segment_name")
    summary = (segments.groupBy("segment", "segment_name")
               .agg(F.count("*").alias("customer_count"),
                    F.round(F.avg("total_flights"), 1).alias("avg_flights"),
                    F.round(F.avg("total_loyalty_points"), 0).alias("avg_points"),
                    F.round(F.avg("total_spent"), 2).alias("avg_revenue"))
               .orderBy("segment"))
    return segments, summary.select(*TB.GOLD_SUMMARY_COLUMNS)


def validate_outputs(kpi: DataFrame, segments: DataFrame, summary: DataFrame) -> dict[str, int]:
    """Each KPI customer exactly once with a segment and a name; summary counts add up."""
    kpi_rows = kpi.count()
    s = segments.agg(F.count("*").alias("rows"), F.countDistinct("customer_key").alias("keys"),
                     F.count_if(F.col("segment").isNull() | F.col("segment_name").isNull()).alias("unlabelled"),
                     F.count_if(F.col("segment") == UNSEGMENTED_ID).alias("unsegmented")).first()
    summary_total = summary.agg(F.sum("customer_count")).first()[0] or 0
    problems = []
    if s["rows"] != kpi_rows:
        problems.append(f"{TB.GOLD_SEGMENTS} has {s['rows']:,} rows but {TB.KPI_CUSTOMER_VALUE} has {kpi_rows:,}")
    if s["keys"] != s["rows"]:
        problems.append(f"{TB.GOLD_SEGMENTS}: {s['rows'] - s['keys']:,} duplicate customer_key rows")
    if s["unlabelled"]:
        problems.append(f"{TB.GOLD_SEGMENTS}: {s['unlabelled']:,} rows without segment or segment_name")
    if summary_total != s["rows"]:
        problems.append(f"{TB.GOLD_SUMMARY}.customer_count sums to {summary_total:,}, expected {s['rows']:,}")
    if problems:
        raise ValidationError("outputs failed validation, nothing was written: " + "; ".join(problems))
    return {"customers": s["rows"], "unsegmented": s["unsegmented"], "summary_total": summary_total}


def write_outputs(spark: SparkSession, kpi: DataFrame, assignments: DataFrame, profile: DataFrame,
                  schema: str, catalog: str | None = None) -> dict[str, int]:
    segments, summary = build_outputs(kpi, assignments, profile)
    checks = validate_outputs(kpi, segments, summary)
    save_table(segments, TB.GOLD_SEGMENTS, schema, catalog)
    save_table(summary, TB.GOLD_SUMMARY, schema, catalog)
    return checks


def lab_queries(schema: str, catalog: str | None = None) -> dict[str, str]:
    """The lab's two validation queries over the written table."""
    path = TB.table_path(TB.GOLD_SEGMENTS)  # OneLake / path mode: query the Delta folder directly
    t = f"delta.`{path}`" if path else TB.qualified(TB.GOLD_SEGMENTS, schema, catalog)
    return {
        "customers per segment": f"SELECT segment_name, COUNT(*) AS customers FROM {t} "
                                 f"GROUP BY segment_name ORDER BY customers DESC",
        "segment x loyalty tier": f"SELECT segment_name, loyalty_tier, COUNT(*) AS customers FROM {t} "
                                  f"GROUP BY segment_name, loyalty_tier ORDER BY segment_name, loyalty_tier",
    }
