"""The RFM declarative pipeline end to end, as a user runs it: `seglib generate --recipe retail`, then
`seglib pipeline run` twice (spark-pipelines, its own Spark), the tables read back with delta-rs and
compared with the notebooks' retail recipe on the same invoice lines."""
import pytest
from deltalake import DeltaTable

from seglib import comments as C
from seglib import pipeline as P
from seglib import tables as TB
from seglib.features import build_retail_features
from seglib.local.spark import table_path

from conftest import seglib_cli

pytestmark = pytest.mark.e2e

CUSTOMERS = 300


def _run(lakehouse, *args):
    proc = seglib_cli("pipeline", "run", "--lakehouse", str(lakehouse), "--schema", "shop", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _read(lakehouse, table):
    found = DeltaTable(str(table_path(lakehouse, "shop", table)))
    return found, found.to_pandas()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The lakehouse and, per run, the CLI's output and every table as delta-rs reads it then."""
    lakehouse = tmp_path_factory.mktemp("rfm-pipeline") / "lakehouse"
    made = seglib_cli("generate", "--recipe", "retail", "--customers", str(CUSTOMERS), "--seed", "11",
                      "--lakehouse", str(lakehouse), "--schema", "shop")
    assert made.returncode == 0, made.stdout + made.stderr
    found = []
    for args in ((), ("--rfm-bins", "5")):
        proc = _run(lakehouse, *args)
        found.append((proc, {t: _read(lakehouse, t) for t in TB.PIPELINE_TABLES}))
    return lakehouse, found


@pytest.fixture(scope="module")
def invoice_lines(spark, runs):
    return spark.read.format("delta").load(str(table_path(runs[0], "shop", TB.RETAIL_TRANSACTIONS)))


@pytest.mark.parametrize("run,bins", [(0, 4), (1, 5)])
def test_segments_equal_the_notebooks_retail_recipe(runs, invoice_lines, run, bins):
    proc, tables = runs[1][run]
    segments = tables[TB.GOLD_RFM_SEGMENTS][1]
    assert list(segments.columns) == TB.RETAIL_RFM_COLUMNS
    assert len(segments) == segments.customer_id.nunique()  # refreshed in place, not appended
    notebooks, _ = build_retail_features(invoice_lines, rfm_bins=bins)
    expected = {r.customer_key: (r.r_score, r.f_score, r.m_score, r.rfm_segment, r.recency_days, r.frequency,
                                 round(r.monetary, 2)) for r in notebooks.collect()}
    got = {int(r.customer_id): (r.r_score, r.f_score, r.m_score, r.rfm_segment, r.recency_days, r.frequency,
                                round(r.monetary, 2)) for r in segments.itertuples()}
    assert len(got) > CUSTOMERS * 0.9
    assert got == expected
    assert segments[["r_score", "f_score", "m_score"]].max().max() == bins
    assert f"{len(got):,} customers segmented" in proc.stdout


def test_the_second_run_refreshed_every_table(runs):
    lakehouse, ((first, before), (second, after)) = runs
    for table in TB.PIPELINE_TABLES:
        assert after[table][0].version() > before[table][0].version(), table
        assert len(after[table][1]) == len(before[table][1]), table
    summary = after[TB.GOLD_RFM_SUMMARY][1]
    assert summary.customer_count.sum() == len(after[TB.GOLD_RFM_SEGMENTS][1])
    for proc in (first, second):
        for table in TB.PIPELINE_TABLES:
            assert f"shop.{table}:" in proc.stdout
            assert f"Flow spark_catalog.shop.{table} has COMPLETED" in proc.stdout


def test_quality_checks_all_passed(runs):
    for proc, tables in runs[1]:
        checks = tables[TB.RFM_QUALITY_CHECKS][1]
        assert sorted(checks.check) == sorted(P.CHECKS)
        assert checks.passed.all() and (checks.failing == 0).all()
        assert all(f"check {name}: ok" in proc.stdout for name in P.CHECKS)


def test_tables_and_columns_carry_their_comments(runs):
    for table in TB.PIPELINE_TABLES:
        found = runs[1][1][1][table][0]
        assert found.metadata().description == C.TABLES[table]
        assert {f.name: f.metadata.get("comment") for f in found.schema().fields} == C.PIPELINE_COLUMNS[table]
