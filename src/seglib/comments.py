"""What seglib's tables say about themselves: a description per table and a comment per column, written
with the table (Delta's table description and column metadata), so DESCRIBE TABLE, Catalog Explorer,
Fabric's lakehouse view, Power BI, Genie and delta-rs readers can tell what each gold table and column is.

One source of truth, as plain data: TABLES (table -> description), the column comments of seglib's own
columns below, and the recipe files' ``descriptions`` for the input columns a gold table passes through
(``InputTable.description`` falls back to the input table and column it comes from, so every column has
one). ``commented`` puts comments on a DataFrame's columns; ``tables.save_table`` writes them and the
table's description (see there for how, and what it costs in Delta versions).
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import recipes as R
from . import tables as TB

COMMENT = "comment"  # the field metadata key Spark, Delta and delta-rs read as a column's comment

_HANDOVER = ("Internal to seglib: scratch handover between its notebooks ({what}); replaced by every run. "
             "Not for reports, dashboards or Genie: read the gold_* tables.")

# Table -> description. The gold tables' gain a sentence naming the recipe (table_description).
TABLES = {
    TB.SEG_FEATURES: _HANDOVER.format(what="each customer's clustering features, from 02_features to 03_cluster"),
    TB.SEG_ASSIGNMENTS: _HANDOVER.format(what="each customer's cluster, segment id and name, from 03_cluster"),
    TB.SEG_CLUSTER_METRICS: _HANDOVER.format(what="the fit's parameters and quality metrics, from 03_cluster "
                                                  "to the run log"),
    TB.SEG_PROFILE: _HANDOVER.format(what="per-segment profiles, from 04_profile"),
    TB.SEG_INPUTS: _HANDOVER.format(what="the Delta versions and row counts of the input tables the run read, "
                                         "from 01_load to the run log"),
    TB.SEG_FEATURE_REPORT: _HANDOVER.format(what="the features step's report: null policy, rows left out"),
    TB.FIXTURE_TRUTH: "Tests only: the archetype each demo member was drawn from. The pipeline never reads it.",
    TB.GOLD_SEGMENTS: ("Customer segments: one row per customer with the segment seglib's clustering assigned "
                       "in the latest run, and the customer values the segments rest on. Replaced by each run; "
                       "Delta history keeps earlier runs (gold_segment_migration compares them)."),
    TB.GOLD_SUMMARY: ("Segment summary of the latest run: customers per segment and averages of "
                      "gold_customer_segments_ml columns. Replaced by each run."),
    TB.GOLD_MIGRATION: ("Segment migration: customers per (previous segment, new segment) pair between the "
                        "previous run's version of gold_customer_segments_ml and this run's (Delta time travel), "
                        "with new and departed customers. Replaced by each run."),
    TB.GOLD_RUNS: ("seglib's run log: one row per run id (a retried write replaces its earlier attempt's row) with "
                   "its parameters, model quality, row counts and the Delta versions it read and published. "
                   "Appended by each run."),
}
# The RFM declarative pipeline's materialized views (pipelines/rfm, seglib.pipeline)
TABLES.update({
    TB.GOLD_RFM_SEGMENTS: ("RFM segments: one row per customer with the RFM values, R/F/M scores and rule segment "
                           "(Champions, Loyal, Regular, New Customers, At Risk, Churned) from the invoice lines. "
                           "Refreshed by seglib's RFM pipeline."),
    TB.GOLD_RFM_SUMMARY: ("RFM segment summary: one row per rule segment with its customers, mean recency, "
                          "frequency and monetary value, and total revenue. Refreshed by seglib's RFM pipeline."),
    TB.RFM_QUALITY_CHECKS: ("Data quality checks of seglib's RFM pipeline, one row per check over its outputs: "
                            "failing > 0 is a failed check. Refreshed with them."),
})
GOLD_TABLES = (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION, TB.GOLD_RUNS)

# The columns every recipe's gold_customer_segments_ml ends with (tables.GOLD_SEGMENT_COLUMNS)
SEGMENT_COLUMNS = {
    "segment": ("Segment id from seglib's clustering, in business order (0 = the most valuable named segment); "
                "-1 = not segmented (incomplete data, null_policy=drop)."),
    "segment_name": ("Segment name: the recipe's name whose profile the cluster matches, or one made from its "
                     "traits; \"Unsegmented (incomplete data)\" for segment -1."),
    "run_id": "Id of the seglib run that wrote the row (gold_segmentation_runs.run_id).",
}

# RFM recipes' per-customer columns (tables.RETAIL_RFM_COLUMNS; definitions: seglib.rfm)
RFM_COLUMNS = {
    "customer_id": "Customer identifier, from the invoice lines; one row per customer with an invoice line kept.",
    "recency_days": ("Days from the customer's last purchase line to as_of (the day after the last transaction "
                     "day in the data, unless the run sets as_of), days; from cancellation lines for a customer "
                     "with no purchase line."),
    "frequency": "Distinct invoices (invoice_id) among the customer's purchase lines, cancellations excluded, a count.",
    "monetary": ("Net revenue: sum of quantity * unit_price over the customer's lines, cancellations netted, "
                 "rounded to cents; currency of the source."),
    "first_purchase": "Day of the customer's first purchase line (session time zone).",
    "last_purchase": "Day of the customer's last purchase line (session time zone).",
    "r_score": ("Recency score, 1 to rfm_bins (4 or 5), higher = more recent: quantile of recency_days among "
                "the run's customers."),
    "f_score": ("Frequency score, 1 to rfm_bins (4 or 5), higher = more invoices: quantile of frequency among "
                "the run's customers."),
    "m_score": ("Monetary score, 1 to rfm_bins (4 or 5), higher = more revenue: quantile of monetary among "
                "the run's customers."),
    "rfm_segment": ("RFM rule segment from the three scores and one purchase or more: Champions, Loyal, Regular, "
                    "New Customers, At Risk or Churned (seglib.rfm)."),
}

_CUSTOMER_COUNT = "Customers in the segment, a count."

# RFM recipes' gold_segment_summary (tables.RETAIL_SUMMARY_COLUMNS)
RFM_SUMMARY_COLUMNS = {
    "grouping": ("What the row groups by: cluster (segment = the cluster's segment id) or rfm_segment "
                 "(segment = the rule segment's place in Champions, Loyal, Regular, New Customers, At Risk, Churned)."),
    "segment": "Segment id of the cluster, or the RFM rule segment's place (see grouping).",
    "segment_name": "Cluster name, or RFM rule segment (see grouping).",
    "customer_count": "Customers in the group, a count.",
    "avg_recency_days": "Mean recency_days of the group's customers, days, rounded to 1 decimal.",
    "avg_frequency": "Mean frequency (invoices) of the group's customers, rounded to 2 decimals.",
    "avg_monetary": "Mean monetary (net revenue per customer) of the group, currency of the source, rounded to 2 decimals.",
    "total_revenue": "Sum of monetary (net revenue) over the group's customers, currency of the source, rounded to 2 decimals.",
    "run_id": SEGMENT_COLUMNS["run_id"],
}

# The RFM pipeline's columns, per materialized view (its summary has no grouping: rule segments only)
PIPELINE_COLUMNS = {
    TB.GOLD_RFM_SEGMENTS: RFM_COLUMNS,
    TB.GOLD_RFM_SUMMARY: {
        "segment": "The rule segment's place in Champions, Loyal, Regular, New Customers, At Risk, Churned (0 to 5).",
        "segment_name": "RFM rule segment.",
        **{c: RFM_SUMMARY_COLUMNS[c].replace("group", "segment") for c in
           ("customer_count", "avg_recency_days", "avg_frequency", "avg_monetary", "total_revenue")},
    },
    TB.RFM_QUALITY_CHECKS: {
        "check": "The check's name.",
        "failing": "Rows or customers that break the check, a count; 0 when it passed.",
        "passed": "True when failing is 0.",
        "expectation": "What the check expects, and what failing counts.",
    },
}

# gold_segment_migration (migration.MIGRATION_COLUMNS)
MIGRATION_COLUMNS = {
    "run_id": "Id of the seglib run that wrote the row.",
    "from_version": ("Delta version of gold_customer_segments_ml compared with (the previous run's); null when "
                     "there was none."),
    "to_version": "Delta version of gold_customer_segments_ml this run published.",
    "from_segment": "Segment id in the previous version; null for new customers.",
    "from_segment_name": "Segment name in the previous version; null for new customers.",
    "to_segment": "Segment id in this run; null for departed customers.",
    "to_segment_name": "Segment name in this run; null for departed customers.",
    "change": ("stayed (same segment name), moved (another one), new (not in the previous version) or departed "
               "(not in this run)."),
    "customers": "Customers with this previous and new segment, a count.",
}

# gold_segmentation_runs (write.RUNS_SCHEMA)
RUNS_COLUMNS = {
    "run_id": "The run's id: the job's run id, the run folder's name under `seglib run`, or a generated one.",
    "run_time": "When the run wrote this row, UTC.",
    "mode": "fit (the model was fitted and saved in this run) or score (a saved model assigned the customers).",
    "parameters": "The run's parameters as given (name -> value as text), with null_policy.",
    "k": "Number of clusters.",
    "silhouette": ("Mean silhouette of the clusters (squared Euclidean, on a seeded sample of at most 10,000 "
                   "customers), -1 to 1, higher = better separated."),
    "stability_ari": ("Mean adjusted Rand index between the fit and refits on half-samples (1 = the same "
                      "clusters); null when stability_runs = 0."),
    "segment_stability": ("Segment name -> best-match Jaccard similarity across the refits, 0 to 1; below 0.75 "
                          "the segment is unstable."),
    "unstable_segments": "Segment names whose stability is below 0.75.",
    "customers": "Customers in gold_customer_segments_ml, a count.",
    "input_rows": "Input table -> rows the run read.",
    "input_versions": "Input table -> Delta version the run read.",
    "output_versions": "Gold table -> Delta version the run published.",
    "model_path": "Where the model the run used is saved.",
}


def commented(df: DataFrame, comments: dict[str, str], columns: list[str] | None = None) -> DataFrame:
    """*df* with each column named in *comments* carrying that text as its comment (field metadata
    ``{"comment": text}``, which Delta stores in the table schema: DESCRIBE TABLE, Catalog Explorer and
    delta-rs show it). Columns without an entry keep theirs; entries for absent columns are ignored.

    A projection only, lazy, Spark Connect safe: no job. *columns*: *df*'s columns in order, when the
    caller knows them (saves looking up the schema). A column's other metadata is replaced, on purpose:
    it may be an input table's (e.g. Delta column-mapping ids) that do not belong to the new table.
    ``tables.save_table`` keeps the comments across overwrites (a changed comment replaces the schema)."""
    columns = df.columns if columns is None else list(columns)
    return df.select([F.col(TB.quote(c)).alias(c, metadata={COMMENT: comments[c]}) if c in comments
                      else F.col(TB.quote(c)) for c in columns])


def table_description(table: str, recipe: str | R.Recipe | None = None) -> str | None:
    """*table*'s description (None for a table seglib does not own: an input); a gold table's names the
    recipe when one is given."""
    text = TABLES.get(table)
    if text is None or recipe is None or table not in GOLD_TABLES or table == TB.GOLD_RUNS:
        return text
    rec = R.get(recipe)
    return f"{text} Recipe {rec.name}: {rec.describes}; {_rows(table, rec)}"


def _rows(table: str, rec: R.Recipe) -> str:
    if table == TB.GOLD_SEGMENTS:
        if rec.build == "rfm":
            return ("each customer's RFM values, scores and rule segment, the customer attributes, then segment, "
                    "segment_name, run_id.")
        return f"every column of {rec.customers_table}, then segment, segment_name, run_id."
    if table == TB.GOLD_SUMMARY:
        if rec.build == "rfm":
            return "a row per cluster (grouping = cluster) and one per RFM rule segment (grouping = rfm_segment)."
        return "a row per segment."
    return f"customers matched by {rec.key}."


def column_comments(table: str, recipe: str | R.Recipe = R.DEFAULT) -> dict[str, str]:
    """Column -> comment for every column gold *table* can have under *recipe* (its own columns, and the
    input columns it passes through, described by the recipe file or by where they come from)."""
    rec = R.get(recipe)
    if table == TB.GOLD_MIGRATION:
        return dict(MIGRATION_COLUMNS)
    if table == TB.GOLD_RUNS:
        return dict(RUNS_COLUMNS)
    if table == TB.GOLD_SEGMENTS:
        if rec.build == "rfm":
            attributes = {a: spec.description(a) for spec in rec.tables.values() for a in spec.attributes}
            lines = rec.tables[rec.customers_table]
            key = (f"Customer identifier (input {lines.table}.{lines.source_column('customer_id')}); one row per "
                   f"customer with an invoice line kept.")
            return {**attributes, **RFM_COLUMNS, "customer_id": key, **SEGMENT_COLUMNS}
        base = rec.tables[rec.customers_table]
        return {**{c: base.description(c) for c in base.schema.fieldNames()}, **SEGMENT_COLUMNS}
    if table == TB.GOLD_SUMMARY:
        if rec.build == "rfm":
            return dict(RFM_SUMMARY_COLUMNS)
        gold = column_comments(TB.GOLD_SEGMENTS, rec)
        averages = {name: (f"Mean of {column} over the segment's customers, {_rounded(decimals)}. "
                           f"{column}: {gold.get(column, 'a column of gold_customer_segments_ml.')}")
                    for name, (column, decimals) in rec.summary.items()}
        return {"segment": SEGMENT_COLUMNS["segment"], "segment_name": SEGMENT_COLUMNS["segment_name"],
                "customer_count": _CUSTOMER_COUNT, **averages, "run_id": SEGMENT_COLUMNS["run_id"]}
    raise KeyError(f"{table} is not a gold table ({', '.join(GOLD_TABLES)})")


def _rounded(decimals: int) -> str:
    return "rounded to a whole number" if decimals == 0 else f"rounded to {decimals} decimal{'s' * (decimals != 1)}"


def uncommented(schema) -> list[str]:
    """The top-level columns of *schema* (a StructType) without a non-empty comment."""
    return [f.name for f in schema.fields if not str(f.metadata.get(COMMENT) or "").strip()]
