"""The write stage on the fitted demo fixture, through real Delta tables: validated outputs, published
together, with or without a cache, unsegmented customers, and a retried write."""
import time

import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import refuse_cache
from seglib import publish as P
from seglib import tables as TB
from seglib.cluster import save_cluster_outputs
from seglib.errors import ValidationError
from seglib.features import build_features
from seglib.load import read_input, record_inputs
from seglib.write import UNSEGMENTED_NAME, build_outputs, validate_outputs, write_outputs


def _profile_and_kpi(spark, demo, fitted):
    features, result = fitted
    kpi = read_input(spark, TB.KPI_CUSTOMER_VALUE, demo)
    return kpi, result.assignments


def _cached_dataframes(spark) -> list[str]:
    """The session's cached DataFrames (Delta caches each table's log state as well: left out)."""
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return sorted(i.name() for i in infos if not i.name().startswith("Delta Table State"))


def test_outputs_are_validated_and_written(spark, demo, fitted, where, tmp_path):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    # What the earlier steps hand over for the run log
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
    build_features(kpi)[1].save(spark, where)
    save_cluster_outputs(fitted[1], str(tmp_path / "model"), where)
    cached = _cached_dataframes(spark)
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    # Nothing it cached stays behind on the session: a kept server runs many jobs (unpersist frees the
    # blocks asynchronously, hence the wait)
    deadline = time.monotonic() + 30
    while _cached_dataframes(spark) != cached and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cached_dataframes(spark) == cached
    assert {k: written[k] for k in ("customers", "unsegmented", "summary_total", "run_id")} == {
        "customers": 3000, "unsegmented": 0, "summary_total": 3000, "run_id": "r1"}
    seg = spark.read.table(where.qualified(TB.GOLD_SEGMENTS))
    assert seg.columns == kpi.columns + ["segment", "segment_name", "run_id"]
    summary = spark.read.table(where.qualified(TB.GOLD_SUMMARY))
    assert summary.columns == TB.GOLD_SUMMARY_COLUMNS
    # avg columns rounded as the lab does: flights 1 dp, points 0 dp, revenue 2 dp
    expected = (seg.groupBy("segment").agg(F.round(F.avg("total_flights"), 1).alias("f"),
                                           F.round(F.avg("total_loyalty_points"), 0).alias("p"),
                                           F.round(F.avg("total_spent"), 2).alias("r")))
    bad = summary.join(expected, "segment").where("avg_flights != f OR avg_points != p OR avg_revenue != r")
    assert bad.count() == 0


def test_without_a_cache_as_on_serverless_the_same_outputs_are_validated_and_published(
        spark, demo, fitted, tmp_path, monkeypatch):
    """Databricks serverless refuses DataFrame.cache/unpersist; the write step then recomputes its outputs
    for each action and publishes the same tables as with a cache, and still refuses bad ones."""
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    schemas = []
    for refuse in (False, True):
        where = TB.Location(f"nocache_{int(refuse)}")
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
        record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
        build_features(kpi)[1].save(spark, where)
        save_cluster_outputs(fitted[1], str(tmp_path / where.schema), where)
        if refuse:
            monkeypatch.setattr(type(kpi), "cache", refuse_cache)
            monkeypatch.setattr(type(kpi), "unpersist", refuse_cache)
            with pytest.raises(ValidationError, match="3 duplicate customer_key rows"):
                write_outputs(spark, kpi, assignments.unionByName(assignments.limit(3)), where, log=lambda *a: None)
            assert not spark.catalog.tableExists(where.qualified(TB.GOLD_SEGMENTS))
        written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
        assert written["customers"] == 3000
        schemas.append(where)
    monkeypatch.undo()
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION):
        cached, recomputed = (spark.read.table(s.qualified(table)) for s in schemas)
        assert recomputed.count() == cached.count() > 0
        assert recomputed.exceptAll(cached).count() == 0 and cached.exceptAll(recomputed).count() == 0


def test_validation_refuses_duplicates_and_writes_nothing(spark, demo, fitted, where):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    doubled = assignments.unionByName(assignments.limit(3))
    with pytest.raises(ValidationError, match="3 duplicate customer_key rows"):
        write_outputs(spark, kpi, doubled, where, log=lambda *a: None)
    assert not spark.catalog.tableExists(where.qualified(TB.GOLD_SEGMENTS))


def test_customers_left_out_by_drop_policy_are_labelled_unsegmented(spark, demo, fitted):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    segments, summary = build_outputs(kpi, assignments.where("customer_key > 10"), "r")
    checks = validate_outputs(kpi, segments, summary)
    assert checks["unsegmented"] == 10
    assert segments.where(F.col("segment_name") == UNSEGMENTED_NAME).count() == 10


def _previous_run(spark, kpi, assignments, where):
    """Run r0 before r1: without the first 50 customers, and every tenth customer one segment along, so
    r1's migration has new, moved and stayed customers."""
    names = dict(assignments.select("segment", "segment_name").distinct().collect())
    ring = sorted(names)
    along = F.create_map(*[x for i, s in enumerate(ring) for x in (F.lit(s), F.lit(ring[(i + 1) % len(ring)]))])
    name_of = F.create_map(*[x for s in ring for x in (F.lit(s), F.lit(names[s]))])
    moved = F.col("customer_key") % 10 == 0
    r0 = (assignments.withColumn("segment", F.when(moved, along[F.col("segment")]).otherwise(F.col("segment")))
          .withColumn("segment_name", name_of[F.col("segment")]))
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION, TB.GOLD_RUNS):  # a fresh start
        spark.sql(f"DROP TABLE IF EXISTS {where.schema}.{table}")
    write_outputs(spark, kpi.where("customer_key > 50"), r0, where, run_id="r0", log=lambda *a: None)


def _rows(df) -> pd.DataFrame:
    return df.orderBy(*df.columns).toPandas()


@pytest.fixture(scope="module")
def one_attempt(spark, demo, fitted, tmp_path_factory):
    """A schema with what the steps before the write hand over (the run log reads it), and the gold tables
    runs r0 and then r1 leave, each in one successful attempt: what a retried r1 must leave too."""
    kpi, assignments = read_input(spark, TB.KPI_CUSTOMER_VALUE, demo), fitted[1].assignments
    where = TB.Location("retried")
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
    build_features(kpi)[1].save(spark, where)
    save_cluster_outputs(fitted[1], str(tmp_path_factory.mktemp("model") / "model"), where)
    _previous_run(spark, kpi, assignments, where)
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    gold = {t: _rows(spark.read.table(where.qualified(t))) for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION)}
    compared = _rows(TB.read_version(spark, TB.GOLD_SEGMENTS, written["previous_version"], where))
    return where, kpi, assignments, gold, compared


RETRIED = {
    # the first attempt published everything, then failed in a later cell (lab queries, a display)
    "failed after publishing": {},
    # the first attempt appended its run log row, then failed: its gold tables were restored, its row stayed
    "failed after the run log row": {"fault": "publish:end"},
    # the first attempt's driver died after replacing gold_customer_segments_ml, before it could restore it
    "died while publishing": {"fault": f"publish:{TB.GOLD_SEGMENTS}", "no_restore": True},
}


@pytest.mark.parametrize("first_attempt", list(RETRIED))
def test_a_retried_write_publishes_what_one_attempt_does(spark, one_attempt, monkeypatch, first_attempt):
    """The job retries 05_write with the same run id. Whatever the first attempt left, the retry compares
    with the run before (not with its own rows: everyone would have "stayed"), leaves one run log row for
    the run id, and the gold tables end as one successful attempt leaves them."""
    where, kpi, assignments, once, compared_once = one_attempt
    _previous_run(spark, kpi, assignments, where)
    how = RETRIED[first_attempt]
    if how:
        monkeypatch.setenv(P.FAULT_ENV, how["fault"])
        if how.get("no_restore"):
            monkeypatch.setattr(P, "_restore", lambda *a: None)
        with pytest.raises(P.InjectedFault):
            write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
        monkeypatch.undo()
    else:
        write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    printed = []
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=printed.append)  # the retry

    gold = {t: _rows(spark.read.table(where.qualified(t))) for t in once}
    for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY):
        pd.testing.assert_frame_equal(gold[t], once[t], obj=t)
    # The migration: the one-run migration's rows (not all "stayed"), from a version holding r0's rows (the
    # restored one when the first attempt was rolled back) to the version now holding r1's.
    versions = ["from_version", "to_version"]
    pd.testing.assert_frame_equal(gold[TB.GOLD_MIGRATION].drop(columns=versions),
                                  once[TB.GOLD_MIGRATION].drop(columns=versions), obj=TB.GOLD_MIGRATION)
    changes = once[TB.GOLD_MIGRATION].groupby("change").customers.sum()
    assert changes["new"] == 50 and changes["moved"] > 200 and changes.sum() == 3000
    now = TB.table_version(spark, TB.GOLD_SEGMENTS, where)
    assert set(map(tuple, gold[TB.GOLD_MIGRATION][versions].values)) == {(written["previous_version"], now)}
    assert written["output_versions"][TB.GOLD_SEGMENTS] == now
    compared = _rows(TB.read_version(spark, TB.GOLD_SEGMENTS, written["previous_version"], where))
    pd.testing.assert_frame_equal(compared, compared_once, obj="the version compared with")
    # The run log: one row per run id, r1's naming the versions it published.
    runs = spark.read.table(where.qualified(TB.GOLD_RUNS)).orderBy("run_time").collect()
    assert [r.run_id for r in runs] == ["r0", "r1"]
    assert runs[1].output_versions == written["output_versions"] and runs[1].customers == 3000
    assert P.published_run_id(spark, list(once), where) == "r1"
    if first_attempt != "failed after the run log row":  # the restored tables hold r0's rows: nothing to say
        assert any("already holds this run's rows" in p for p in printed), printed
    if first_attempt != "died while publishing":  # that attempt died before its run log row
        assert any(f"replaced this run's row in {TB.GOLD_RUNS}" in p for p in printed), printed


def test_gold_tables_and_their_columns_are_documented_for_delta_rs_readers(spark, one_attempt, lakehouse):
    """Each gold table has a description and each column a comment, as delta-rs (Power BI, Fabric, any
    reader without Spark) reads them, after two runs overwrote the tables; DESCRIBE TABLE shows them too.
    A gold column added without a comment fails here. The handover tables say they are internal."""
    from deltalake import DeltaTable
    from seglib import comments as C
    from seglib.local.spark import table_path

    where = one_attempt[0]
    for table in C.GOLD_TABLES:
        dt = DeltaTable(str(table_path(lakehouse, where.schema, table)))
        assert dt.version() >= 1, table  # overwritten (appended, for the run log) at least once since created
        assert (dt.metadata().description or "").strip() == C.table_description(table, "airline"), table
        uncommented = [f.name for f in dt.schema().fields if not (f.metadata.get("comment") or "").strip()]
        assert uncommented == [], f"{table}: columns without a comment: {uncommented}"
    summary = DeltaTable(str(table_path(lakehouse, where.schema, TB.GOLD_SUMMARY)))
    assert {f.name: f.metadata["comment"] for f in summary.schema().fields}["avg_revenue"] == (
        C.column_comments(TB.GOLD_SUMMARY, "airline")["avg_revenue"])
    described = spark.sql(f"DESCRIBE TABLE {where.qualified(TB.GOLD_SEGMENTS)}").collect()
    assert {r.col_name: r.comment for r in described}["total_spent"].startswith("Sum of the member's completed purchases")
    extended = spark.sql(f"DESCRIBE TABLE EXTENDED {where.qualified(TB.GOLD_SEGMENTS)}").collect()
    assert {r.col_name: r.data_type for r in extended}["Comment"].startswith("Customer segments: one row per customer")
    for table in (TB.SEG_INPUTS, TB.SEG_ASSIGNMENTS, TB.SEG_CLUSTER_METRICS, TB.SEG_FEATURE_REPORT):
        description = DeltaTable(str(table_path(lakehouse, where.schema, table))).metadata().description
        assert description.startswith("Internal to seglib: scratch handover"), table
