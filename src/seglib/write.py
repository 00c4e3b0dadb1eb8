"""Stage 5: the gold tables and the migration since the previous run, validated before anything is
written, then published together with one row in the run log (publish.py)."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import publish as P
from . import tables as TB
from .errors import ValidationError
from .migration import segment_migration
from .tables import save_table

UNSEGMENTED_ID = -1
UNSEGMENTED_NAME = "Unsegmented (incomplete data)"  # only with null_policy=drop

RUNS_SCHEMA = ("run_id string, run_time timestamp, mode string, parameters map<string,string>, k int, "
               "silhouette double, stability_ari double, segment_stability map<string,double>, "
               "unstable_segments array<string>, customers long, input_rows map<string,long>, "
               "input_versions map<string,long>, output_versions map<string,long>, model_path string")


def new_run_id() -> str:
    """For runs without one (interactive): UTC time plus a random suffix, sortable and unique."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def build_outputs(kpi: DataFrame, assignments: DataFrame, run_id: str) -> tuple[DataFrame, DataFrame]:
    """gold_customer_segments_ml (every KPI column + segment, segment_name, run_id) and gold_segment_summary."""
    labels = assignments.select("customer_key", "segment", "segment_name")
    segments = (kpi.join(labels, "customer_key", "left")
                .withColumn("segment", F.coalesce("segment", F.lit(UNSEGMENTED_ID)).cast("int"))
                .withColumn("segment_name", F.coalesce("segment_name", F.lit(UNSEGMENTED_NAME)))
                .withColumn("run_id", F.lit(run_id)))
    segments = segments.select(*kpi.columns, *TB.GOLD_SEGMENT_COLUMNS)
    summary = (segments.groupBy("segment", "segment_name")
               .agg(F.count("*").alias("customer_count"),
                    F.round(F.avg("total_flights"), 1).alias("avg_flights"),
                    F.round(F.avg("total_loyalty_points"), 0).alias("avg_points"),
                    F.round(F.avg("total_spent"), 2).alias("avg_revenue"))
               .withColumn("run_id", F.lit(run_id))
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
        raise ValidationError("outputs failed validation, nothing was published: " + "; ".join(problems))
    return {"customers": s["rows"], "unsegmented": s["unsegmented"], "summary_total": summary_total}


# Published together (publish.publish): each carries the run id; the run log row is appended last.
PUBLISHED = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION]


def write_outputs(spark: SparkSession, kpi: DataFrame, assignments: DataFrame, schema: str,
                  catalog: str | None = None, run_id: str = "", log=print) -> dict:
    """Compute and validate the gold tables and the migration since the previous version, then publish
    them together with the run log row (publish.py). Returns the checks, the run id, the output tables'
    Delta versions and the run log row."""
    run_id = run_id or new_run_id()
    previous = TB.table_version(spark, TB.GOLD_SEGMENTS, schema, catalog)
    segments, summary = build_outputs(kpi, assignments, run_id)
    # Cached: validated, compared with the previous version and written from the same computed rows.
    segments, summary = segments.cache(), summary.cache()
    try:
        log(f"run {run_id}: validating")
        checks = validate_outputs(kpi, segments, summary)
        next_version = 0 if previous is None else previous + 1
        old = TB.read_version(spark, TB.GOLD_SEGMENTS, previous, schema, catalog) if previous is not None else None
        migration = segment_migration(old, segments, run_id, previous, next_version).cache()
        migration.count()  # computed before publishing starts, so the publish itself only writes
        P.checkpoint("validated")
        written = {**checks, "run_id": run_id, "previous_version": previous}

        def log_this_run(after: dict[str, int]) -> None:
            written["output_versions"] = after
            written["run_log"] = log_run(spark, written, schema, catalog)

        log(f"run {run_id}: publishing")
        P.publish(spark, {TB.GOLD_SEGMENTS: segments, TB.GOLD_SUMMARY: summary, TB.GOLD_MIGRATION: migration},
                  schema, catalog, guard=(TB.GOLD_SEGMENTS, previous), then=log_this_run, log=log)
    finally:
        for df in (segments, summary):
            df.unpersist()
    return written


def log_run(spark: SparkSession, written: dict, schema: str, catalog: str | None = None) -> DataFrame:
    """Append this run's row to gold_segmentation_runs, from the steps' handover tables."""
    m = TB.read_table(spark, TB.SEG_CLUSTER_METRICS, schema, catalog).first()
    inputs = TB.read_table(spark, TB.SEG_INPUTS, schema, catalog).collect()  # one row per Gold table
    report = TB.read_table(spark, TB.SEG_FEATURE_REPORT, schema, catalog).first()
    parameters = {**(m["parameters"] or {}), "null_policy": report["null_policy"]}
    row = (written["run_id"], datetime.now(timezone.utc).replace(tzinfo=None), m["mode"], parameters, m["k"],
           m["silhouette"], m["stability_ari"], m["segment_stability"], m["unstable_segments"],
           written["customers"], {r["table"]: r["rows"] for r in inputs},
           {r["table"]: r["version"] for r in inputs}, written["output_versions"], m["model_path"])
    record = spark.createDataFrame([row], RUNS_SCHEMA)
    save_table(record, TB.GOLD_RUNS, schema, catalog, mode="append")
    return record


def lab_queries(schema: str, catalog: str | None = None) -> dict[str, str]:
    """The lab's two validation queries over the written table."""
    t = TB.sql_name(TB.GOLD_SEGMENTS, schema, catalog)
    return {
        "customers per segment": f"SELECT segment_name, COUNT(*) AS customers FROM {t} "
                                 f"GROUP BY segment_name ORDER BY customers DESC",
        "segment x loyalty tier": f"SELECT segment_name, loyalty_tier, COUNT(*) AS customers FROM {t} "
                                  f"GROUP BY segment_name, loyalty_tier ORDER BY segment_name, loyalty_tier",
    }


def run_log_json(record: DataFrame) -> str:
    """The run's log row as indented JSON, for the notebook."""
    return json.dumps(record.first().asDict(recursive=True), indent=2, default=str)
