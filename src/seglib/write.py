"""Stage 5: the gold tables and the migration since the previous run, validated before anything is
written, then published together with one row in the run log (publish.py)."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import comments as C
from . import parallel
from . import publish as P
from . import recipes as R
from . import tables as TB
from .load import read_input
from .errors import ValidationError
from .migration import MIGRATION_COLUMNS, segment_migration
from .session import cache, uncache
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


def customer_base(spark: SparkSession, where: TB.Location, recipe: str | R.Recipe = R.DEFAULT) -> DataFrame:
    """The rows gold_customer_segments_ml has one of per customer, before the segment columns: the
    airline's kpi_customer_value; retail's customers with their RFM values, scores and rule segment
    (seg_features, from the features step)."""
    rec = R.get(recipe)
    if rec.base_table in rec.inputs:
        return read_input(spark, rec.base_table, where, rec)
    return TB.read_table(spark, rec.base_table, where)


def _labelled(base: DataFrame, assignments: DataFrame, run_id: str, key: str = "customer_key") -> DataFrame:
    """*base* with each customer's segment; *key*: the base's customer column (assignments call it customer_key)."""
    labels = assignments.select(F.col("customer_key").alias(key), "segment", "segment_name")
    return (base.join(labels, key, "left")
            .withColumn("segment", F.coalesce("segment", F.lit(UNSEGMENTED_ID)).cast("int"))
            .withColumn("segment_name", F.coalesce("segment_name", F.lit(UNSEGMENTED_NAME)))
            .withColumn("run_id", F.lit(run_id)))


def build_outputs(base: DataFrame, assignments: DataFrame, run_id: str,
                  recipe: str | R.Recipe = R.DEFAULT) -> tuple[DataFrame, DataFrame]:
    """gold_customer_segments_ml (the customer base + segment, segment_name, run_id) and gold_segment_summary,
    each column with its comment (seglib.comments)."""
    rec = R.get(recipe)
    if rec.build == "rfm":
        segments, summary = _rfm_outputs(base, assignments, run_id, rec)
        columns = [*TB.RETAIL_RFM_COLUMNS, *[c for c in rec.attributes if c in base.columns], *TB.GOLD_SEGMENT_COLUMNS]
        return (C.commented(segments, C.column_comments(TB.GOLD_SEGMENTS, rec), columns),
                C.commented(summary, C.column_comments(TB.GOLD_SUMMARY, rec), TB.RETAIL_SUMMARY_COLUMNS))
    key = rec.tables[rec.customers_table].key or rec.key
    columns = [*base.columns, *TB.GOLD_SEGMENT_COLUMNS]
    segments = C.commented(_labelled(base, assignments, run_id, key), C.column_comments(TB.GOLD_SEGMENTS, rec), columns)
    averages = rec.summary
    summary = (segments.groupBy("segment", "segment_name")
               .agg(F.count("*").alias("customer_count"),
                    *[F.round(F.avg(column), decimals).alias(name) for name, (column, decimals) in averages.items()])
               .withColumn("run_id", F.lit(run_id))
               .orderBy("segment"))
    return segments, C.commented(summary, C.column_comments(TB.GOLD_SUMMARY, rec),
                                 ["segment", "segment_name", "customer_count", *averages, "run_id"])


def _rfm_outputs(base: DataFrame, assignments: DataFrame, run_id: str,
                 rec: R.Recipe) -> tuple[DataFrame, DataFrame]:
    """RFM recipes: customer_id, the RFM columns, the customer attributes present, the cluster; the summary
    has one row per cluster and one per RFM rule segment (segment = its place in rfm.RFM_SEGMENTS)."""
    from .rfm import rule_summary, summary_measures
    labelled = _labelled(base, assignments, run_id).withColumnRenamed("customer_key", "customer_id")
    attributes = [c for c in rec.attributes if c in base.columns]
    segments = labelled.select(*TB.RETAIL_RFM_COLUMNS, *attributes, *TB.GOLD_SEGMENT_COLUMNS)
    by_cluster = (segments.groupBy("segment", "segment_name").agg(*summary_measures())
                  .withColumn("grouping", F.lit("cluster")))
    by_rule = rule_summary(segments).withColumn("grouping", F.lit("rfm_segment"))
    summary = (by_cluster.unionByName(by_rule).withColumn("run_id", F.lit(run_id))
               .orderBy("grouping", "segment"))
    return segments, summary.select(*TB.RETAIL_SUMMARY_COLUMNS)


def validate_outputs(kpi: DataFrame, segments: DataFrame, summary: DataFrame, recipe: str | R.Recipe = R.DEFAULT) -> dict[str, int]:
    """Each customer of the base exactly once with a segment and a name; summary counts add up (per
    grouping, for retail)."""
    rec = R.get(recipe)
    key, source = rec.key, rec.base_table
    kpi_rows = kpi.count()
    s = segments.agg(F.count("*").alias("rows"), F.countDistinct(key).alias("keys"),
                     F.count_if(F.col("segment").isNull() | F.col("segment_name").isNull()).alias("unlabelled"),
                     F.count_if(F.col("segment") == UNSEGMENTED_ID).alias("unsegmented")).first()
    groupings = 2 if rec.build == "rfm" else 1  # rfm: per cluster and per RFM rule segment
    summary_total = (summary.agg(F.sum("customer_count")).first()[0] or 0) // groupings
    problems = []
    if s["rows"] != kpi_rows:
        problems.append(f"{TB.GOLD_SEGMENTS} has {s['rows']:,} rows but {source} has {kpi_rows:,}")
    if s["keys"] != s["rows"]:
        problems.append(f"{TB.GOLD_SEGMENTS}: {s['rows'] - s['keys']:,} duplicate {key} rows")
    if s["unlabelled"]:
        problems.append(f"{TB.GOLD_SEGMENTS}: {s['unlabelled']:,} rows without segment or segment_name")
    if summary_total != s["rows"]:
        problems.append(f"{TB.GOLD_SUMMARY}.customer_count sums to {summary_total:,}"
                        + (" per grouping" if groupings > 1 else "") + f", expected {s['rows']:,}")
    if problems:
        raise ValidationError("outputs failed validation, nothing was published: " + "; ".join(problems))
    return {"customers": s["rows"], "unsegmented": s["unsegmented"], "summary_total": summary_total}


# Published together (publish.publish): each carries the run id; the run log row is appended last.
PUBLISHED = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION]


def _holds_run(spark: SparkSession, table: str, run_id: str, where: TB.Location,
               version: int | None = None) -> bool:
    """Whether *table* (at Delta *version*; default: now) holds rows of run *run_id*; False when it does not
    exist. The rows of other runs skip every file on Delta's run_id statistics."""
    try:
        rows = (TB.read_table(spark, table, where) if version is None
                else TB.read_version(spark, table, version, where))
        return "run_id" in rows.columns and bool(rows.where(F.col("run_id") == run_id).limit(1).collect())
    except Exception as e:  # noqa: BLE001 - only "does not exist" means no
        if version is None and TB.is_missing_table(e):
            return False
        raise


def compared_version(spark: SparkSession, run_id: str, current: int | None, where: TB.Location, log=print) -> int | None:
    """The version of gold_customer_segments_ml run *run_id*'s migration compares with: *current*, the
    table's version now (None: not there yet), unless an earlier attempt of the same run id already
    published there. The job retries the write task with the same run_id, and a first attempt can fail
    after publishing (in a later cell, or killed before it could restore the tables); then it is the
    newest version before this run's first publish (Delta time travel, one version back at a time), so a
    retry compares with the run before it, as its first attempt did, not with its own rows. None when
    this run was the table's first."""
    if current is None or not _holds_run(spark, TB.GOLD_SEGMENTS, run_id, where):
        return current
    previous = current - 1 if current > 0 else None
    while previous is not None and _holds_run(spark, TB.GOLD_SEGMENTS, run_id, where, previous):
        previous = previous - 1 if previous > 0 else None
    log(f"run {run_id}: {TB.GOLD_SEGMENTS} version {current} already holds this run's rows (an earlier "
        f"attempt published them); the migration compares with version {previous}, the one before")
    return previous


def write_outputs(spark: SparkSession, kpi: DataFrame, assignments: DataFrame, where: TB.Location,
                  run_id: str = "", recipe: str | R.Recipe = R.DEFAULT, published=None, log=print) -> dict:
    """Compute and validate the gold tables and the migration since the previous run, then publish
    them together with the run log row (publish.py). Returns the checks, the run id, the output tables'
    Delta versions and the run log row. *kpi*: the customer base (customer_base).

    Idempotent per run id: a retry of a run that already published (all or part of) its outputs compares
    with the version before its first publish (compared_version), and replaces its run log row rather
    than adding a second one (log_run), so the gold tables end as one successful attempt leaves them.

    *published*: called with the result once the publish has succeeded, and only then (the registry's
    champion moves there: registry.promote); what it returns is ``written["published"]``."""
    given = bool(run_id)  # a generated id cannot have published before
    run_id = run_id or new_run_id()
    key = R.get(recipe).key
    current = TB.table_version(spark, TB.GOLD_SEGMENTS, where)
    segments, summary = build_outputs(kpi, assignments, run_id, recipe)
    # Cached: validated, compared with the previous version and written from the same computed rows
    # (recomputed for each action where the compute has no cache: see session.cache).
    segments, summary = cache(segments), cache(summary)
    migration = None
    try:
        log(f"run {run_id}: validating")
        validated = []
        # While the outputs validate: what an earlier attempt of this run id left (the job retries the write
        # task with the same id; a generated id is new): the version to compare with, and its run log row.
        looks = [lambda: compared_version(spark, run_id, current, where, log),
                 lambda: _holds_run(spark, TB.GOLD_RUNS, run_id, where)] if given else []
        found = parallel.each(lambda look: look(), looks, meanwhile=lambda: validated.append(
            validate_outputs(kpi, segments, summary, recipe)))
        previous, logged = found if given else (current, False)
        checks = validated[0]
        next_version = 0 if current is None else current + 1
        old = TB.read_version(spark, TB.GOLD_SEGMENTS, previous, where) if previous is not None else None
        migration = cache(C.commented(segment_migration(old, segments, run_id, previous, next_version, key=key),
                                      C.MIGRATION_COLUMNS, MIGRATION_COLUMNS))
        migration.count()  # computed before publishing starts, so the publish itself only writes
        P.checkpoint("validated")
        written = {**checks, "run_id": run_id, "previous_version": previous, "logged_before": logged}

        def log_this_run(after: dict[str, int]) -> None:
            written["output_versions"] = after
            written["run_log"] = log_run(spark, written, where, log)

        log(f"run {run_id}: publishing")
        P.publish(spark, {TB.GOLD_SEGMENTS: segments, TB.GOLD_SUMMARY: summary, TB.GOLD_MIGRATION: migration},
                  where, guard=(TB.GOLD_SEGMENTS, current), then=log_this_run, log=log,
                  descriptions={t: C.table_description(t, recipe) for t in PUBLISHED})
    finally:
        for df in (segments, summary, migration):
            uncache(df)
    # After publish returned, not in its *then*: a failure after *then* (the last checkpoint) still fails
    # the run and restores the tables, and a failed run must not have moved anything.
    written["published"] = published(written) if published is not None else None
    return written


def log_run(spark: SparkSession, written: dict, where: TB.Location, log=print) -> DataFrame:
    """This run's row in gold_segmentation_runs, from the steps' handover tables: appended, or replacing
    the row an earlier attempt of the same run id left (*written*["logged_before"], see write_outputs)."""
    m, inputs, report = parallel.each(lambda t: TB.read_table(spark, t, where).collect(),
                                      [TB.SEG_CLUSTER_METRICS, TB.SEG_INPUTS, TB.SEG_FEATURE_REPORT])
    (m,), (report,) = m, report  # one row each; inputs: one row per Gold table
    parameters = {**(m["parameters"] or {}), "null_policy": report["null_policy"]}
    row = (written["run_id"], datetime.now(timezone.utc).replace(tzinfo=None), m["mode"], parameters, m["k"],
           m["silhouette"], m["stability_ari"], m["segment_stability"], m["unstable_segments"],
           written["customers"], {r["table"]: r["rows"] for r in inputs},
           {r["table"]: r["version"] for r in inputs}, written["output_versions"], m["model_path"])
    record = C.commented(spark.createDataFrame([row], RUNS_SCHEMA), C.RUNS_COLUMNS, list(C.RUNS_COLUMNS))
    if not written.get("logged_before"):
        save_table(record, TB.GOLD_RUNS, where, mode="append")
        return record
    # A retry of this run (see write_outputs): its row replaces the earlier attempt's, in one commit (MERGE,
    # SQL as on every Spark and Delta version), so the log never holds two rows for the run nor none.
    view = f"seglib_run_log_{uuid.uuid4().hex}"
    record.createOrReplaceTempView(view)
    try:
        spark.sql(f"MERGE INTO {where.sql(TB.GOLD_RUNS)} AS t USING {view} AS s "
                  f"ON t.run_id = s.run_id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
    finally:
        spark.catalog.dropTempView(view)
    log(f"run {written['run_id']}: replaced this run's row in {TB.GOLD_RUNS} (an earlier attempt's)")
    return record


def lab_queries(where: TB.Location, recipe: str | R.Recipe = R.DEFAULT) -> dict[str, str]:
    """The lab's two validation queries over the written table: customers (and revenue) per segment, and
    segments against the recipe's first breakdown (loyalty tier, RFM rule segment)."""
    t = where.sql(TB.GOLD_SEGMENTS)
    spec = R.get(recipe).insights
    revenue = f", ROUND(SUM({TB.quote(spec['revenue'])}), 2) AS revenue" if spec.get("revenue") else ""
    queries = {"customers per segment": f"SELECT segment_name, COUNT(*) AS customers{revenue} FROM {t} "
                                        f"GROUP BY segment_name ORDER BY customers DESC"}
    for b in (spec.get("breakdowns") or [])[:1]:
        c = TB.quote(b["column"])
        queries[f"segment x {b.get('legend') or b['column']}"] = (
            f"SELECT segment_name, {c}, COUNT(*) AS customers FROM {t} GROUP BY segment_name, {c} "
            f"ORDER BY segment_name, {c}")
    return queries


def run_log_json(record: DataFrame) -> str:
    """The run's log row as indented JSON, for the notebook."""
    return json.dumps(record.first().asDict(recursive=True), indent=2, default=str)
