"""End to end: the CLI runs every notebook through papermill against a fresh lakehouse (conftest's
`published`: `seglib demo`, once per test session).

The notebooks run in their own kernels, as Spark Connect clients of one local server the runner starts
(so any sparkContext/RDD use in seglib or a notebook fails here, as it would on Databricks serverless).
This test reads their tables by path, with delta-rs (no Spark) and with the test session, so it never
shares the server's Derby catalog.
"""
import pytest
from conftest import DEMO_CUSTOMERS as CUSTOMERS
from conftest import seglib_cli
from deltalake import DeltaTable
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from seglib import tables as TB
from seglib.recipes import get as recipe
from seglib.local.spark import table_path

pytestmark = pytest.mark.e2e
GENERATE = "00_generate_demo_data"
RECIPE = recipe("airline")
PIPELINE = ["01_load", "02_features", "03_cluster", "04_profile", "05_write", "06_insights"]


@pytest.fixture(scope="module")
def run(published):
    return published


def read(spark, lakehouse, table):
    return spark.read.format("delta").load(str(table_path(lakehouse, "contoso", table)))


def test_cli_reports_progress_and_summary(run):
    lakehouse, out, proc = run
    assert "Running job demo_data (seglib demo data)" in proc.stdout
    assert f"[1/1] {GENERATE} ... ok" in proc.stdout
    assert "Running job segmentation (seglib segmentation)" in proc.stdout
    for i, name in enumerate(PIPELINE, 1):
        assert f"[{i}/{len(PIPELINE)}] {name} ... ok" in proc.stdout
    for name in [GENERATE] + PIPELINE:
        assert (out / f"{name}.ipynb").exists()
    assert proc.stdout.count("[spark] starting the local Spark server ... ok") == 1  # one server for both jobs
    assert (out / "spark-server.log").exists()
    assert f"gold_segment_summary ({CUSTOMERS:,} customers)" in proc.stdout
    assert "Premium Elite Members" in proc.stdout


def test_every_notebook_ran_as_a_spark_connect_client(run):
    import nbformat
    _, out, _ = run
    for name in [GENERATE] + PIPELINE:
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "(Spark Connect)" in printed, name


def test_gold_tables_read_back_with_delta_rs(run):
    lakehouse, _, _ = run
    seg = DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SEGMENTS)))
    names = [f.name for f in seg.schema().fields]
    assert names == [f.name for f in TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE].fields] + TB.GOLD_SEGMENT_COLUMNS
    assert seg.to_pandas().shape[0] == CUSTOMERS
    summary = DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SUMMARY))).to_pandas()
    assert list(summary.columns) == TB.GOLD_SUMMARY_COLUMNS
    assert summary.customer_count.sum() == CUSTOMERS


def test_every_customer_segmented_once_and_summary_reconciles(spark, run):
    lakehouse, _, _ = run
    seg = read(spark, lakehouse, TB.GOLD_SEGMENTS)
    kpi = read(spark, lakehouse, TB.KPI_CUSTOMER_VALUE)
    assert seg.count() == kpi.count() == seg.select("customer_key").distinct().count()
    assert seg.where("segment IS NULL OR segment_name IS NULL OR segment < 0").count() == 0
    assert kpi.join(seg, "customer_key", "left_anti").count() == 0
    summary = read(spark, lakehouse, TB.GOLD_SUMMARY)
    counts = seg.groupBy("segment", "segment_name").count()
    assert summary.join(counts, ["segment", "segment_name"]).where("customer_count != count").count() == 0
    assert summary.count() == counts.count() == 5


def test_silhouette_recorded_above_the_lab_bar(spark, run):
    lakehouse, _, _ = run
    metrics = read(spark, lakehouse, TB.SEG_CLUSTER_METRICS).first()
    assert metrics.k == 5 and metrics.seed in (42, 43)  # the best of n_init=2 seeds from 42
    assert metrics.silhouette > 0.3


def test_run_log_and_run_id_tie_the_outputs_together(spark, run):
    """The run id is the local run folder's name ({{job.run_id}} on Databricks), on both gold tables."""
    lakehouse, out, _ = run
    runs = read(spark, lakehouse, TB.GOLD_RUNS).collect()
    assert len(runs) == 1 and runs[0].run_id == out.name and runs[0].mode == "fit"
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION):
        assert [r.run_id for r in read(spark, lakehouse, table).select("run_id").distinct().collect()] == [out.name]
    assert runs[0].input_rows[TB.KPI_CUSTOMER_VALUE] == CUSTOMERS and runs[0].input_versions[TB.KPI_CUSTOMER_VALUE] == 0
    assert runs[0].stability_ari > 0.9 and runs[0].unstable_segments == []
    migration = read(spark, lakehouse, TB.GOLD_MIGRATION).collect()  # the first run: everyone is new
    assert {r.change for r in migration} == {"new"} and sum(r.customers for r in migration) == CUSTOMERS


def test_names_agree_with_profiles(spark, run):
    lakehouse, _, _ = run
    stats = (read(spark, lakehouse, TB.GOLD_SEGMENTS).groupBy("segment_name")
             .agg(F.avg("total_loyalty_points").alias("points"), F.avg("days_since_last_flight").alias("days"),
                  F.avg("total_flights").alias("flights")).toPandas().set_index("segment_name"))
    assert stats.points.idxmax() == "Premium Elite Members"
    assert stats.days.idxmax() == "At-Risk Customers"
    assert stats.flights.idxmin() == "New Joiners"


def test_planted_archetypes_are_recovered(spark, run):
    lakehouse, _, _ = run
    both = (read(spark, lakehouse, TB.GOLD_SEGMENTS).select("customer_key", "segment", "segment_name")
            .join(read(spark, lakehouse, TB.FIXTURE_TRUTH), "customer_key").toPandas())
    assert len(both) == CUSTOMERS
    assert adjusted_rand_score(both.archetype, both.segment) >= 0.8
    assert (both.archetype == both.segment_name).mean() >= 0.9


def test_report_reads_right_in_a_browser(run):
    """report.html in headless Chromium, offline: every chart drew, no raw value on screen, the summary's
    figures are the gold tables'. (The browser: `make browser`; see report_browser.)"""
    from report_browser import check_report, read_report
    lakehouse, out, _ = run
    gold = DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SEGMENTS))).to_pandas()
    summary = DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SUMMARY))).to_pandas()
    page = read_report(out / "report.html")
    try:
        check_report(page, gold, RECIPE.insights["revenue"], dict(zip(summary.segment_name, summary.customer_count)))
        assert "This is the first run on these members" in page.text  # the demo's single run
        assert "Premium Elite Members are " in page.text
    finally:
        page.driver.quit()
    assert (out / "report.html").stat().st_size < 6_000_000


def test_bad_parameter_fails_before_anything_starts(run, tmp_path):
    """Bad inputs and parameters, case by case: test_fail_safe.py."""
    lakehouse, _, _ = run
    proc = seglib_cli("run", "--lakehouse", str(lakehouse), "--schema", "contoso", "--param", "null_policy=zero",
                      "--output", str(tmp_path / "failed"))
    assert proc.returncode == 1
    assert "seglib: error: null_policy must be one of impute, drop, got 'zero'" in proc.stderr
    assert "[spark]" not in proc.stdout and not (tmp_path / "failed").exists()


def test_target_path_mode_writes_every_output_as_a_delta_folder(run, published_spark, tmp_path):
    """The OneLake mode's local equivalent: inputs from the catalog, outputs to a folder of Delta tables.
    (On the shared server: the runner uses the Spark that SPARK_REMOTE names.)"""
    lakehouse, _, _ = run
    target = tmp_path / "Tables"
    catalog_version = DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SEGMENTS))).version()
    env = published_spark["env"]
    proc = seglib_cli("run", "--lakehouse", str(lakehouse), "--schema", "contoso", "--param", f"target_path={target}",
                      "--param", "k=4", "--param", "n_init=1", "--param", "stability_runs=0",
                      "--output", str(tmp_path / "runs"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for table in (TB.SEG_FEATURES, TB.SEG_ASSIGNMENTS, TB.SEG_PROFILE, TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY):
        assert DeltaTable(str(target / table)).version() >= 0, table
    assert len(DeltaTable(str(target / TB.GOLD_SEGMENTS)).to_pandas()) == CUSTOMERS
    assert "customers per segment" in (tmp_path / "runs" / "05_write.ipynb").read_text()
    printed = proc.stdout.split(f"gold_segment_summary ({CUSTOMERS:,} customers):")[1].strip().splitlines()
    assert len(printed) == 1 + 4  # header + the k=4 segments written to the folder, not the catalog's five
    assert DeltaTable(str(table_path(lakehouse, "contoso", TB.GOLD_SEGMENTS))).version() == catalog_version
    assert "[spark] starting" not in proc.stdout
