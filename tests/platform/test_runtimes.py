"""The runtime matrix: the notebooks on the Spark and Delta of each platform seglib supports.

Each row (runtime_rows) runs, with the seglib wheel installed over the platform's pyspark and Delta,
the demo data, the segmentation job (fit, then `mode=score`) and the retail recipe, with papermill on a
classic Spark session (no Spark Connect server). Here they are compared with the default run (conftest's
published demo and test_retail_job's run, on the local Spark 4.1 through Spark Connect): same inputs,
same segment ids and names. On the oldest row the refresh goes through `seglib run`, a kernel and a
Spark per notebook, and the fail-safe cases run there too.
"""
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DEMO_CUSTOMERS
from deltalake import DeltaTable, write_deltalake
from runtime_rows import FIT, GOLD, OLDEST, RETAIL_CUSTOMERS, RETAIL_SEED, ROOT, ROWS

from seglib import tables as TB
from seglib.local.runner import SEGMENTATION_JOB, job_params

pytestmark = [pytest.mark.e2e, pytest.mark.matrix]


@pytest.fixture(scope="module", params=ROWS)
def row(request, runtime_rows):
    """The row, once built (conftest starts every selected row with the session)."""
    row = runtime_rows[request.param].result()
    print(f"\n{row.summary()}")
    return row


def _segments(df, key):
    return df[[key, "segment", "segment_name"]].sort_values(key).reset_index(drop=True)


def _summary(df):
    order = ["grouping", "segment"] if "grouping" in df.columns else ["segment"]
    return df.drop(columns=["run_id"]).sort_values(order).reset_index(drop=True)


def _default(lakehouse: Path, schema: str, table: str):
    return DeltaTable(str(lakehouse / "warehouse" / f"{schema}.db" / table)).to_pandas()


def test_the_wheel_leaves_the_platform_as_it_was(row):
    versions = subprocess.run([str(row.python), "-c", "import pyspark, delta; print(pyspark.__version__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    wanted = next(line.split("==")[1] for line in (ROOT / "runtimes" / f"{row.name}.txt").read_text().splitlines()
                  if line.startswith("pyspark=="))
    assert versions == wanted
    assert row.install_problems == []


def test_same_inputs_as_the_default_run(row, published):
    """The generator gives the same Gold layer on every Spark (the fixture the comparisons rest on)."""
    for table, key in [(TB.KPI_CUSTOMER_VALUE, "customer_key"), (TB.DIM_CUSTOMERS, "customer_key")]:
        mine = row.table("contoso", table).to_pandas().drop(columns=["load_timestamp"], errors="ignore")
        theirs = _default(published[0], "contoso", table).drop(columns=["load_timestamp"], errors="ignore")
        assert mine.sort_values(key).reset_index(drop=True).equals(theirs.sort_values(key).reset_index(drop=True)), table


def test_fit_gives_the_default_runs_segments(row, published):
    mine, theirs = row.fit[TB.GOLD_SEGMENTS], _default(published[0], "contoso", TB.GOLD_SEGMENTS)
    assert len(mine) == DEMO_CUSTOMERS
    assert _segments(mine, "customer_key").equals(_segments(theirs, "customer_key"))
    assert _summary(row.fit[TB.GOLD_SUMMARY]).equals(_summary(_default(published[0], "contoso", TB.GOLD_SUMMARY)))
    assert set(mine.run_id) == {"fit"}


def test_seglib_run_refreshes_with_a_classic_session_per_notebook(row):
    if row.name != OLDEST:
        pytest.skip(f"`seglib run` refreshes on {OLDEST}; this row refreshes in the job's kernel")
    assert "Each notebook starts its own Spark session (classic)" in row.score.stdout
    for i, name in enumerate(["01_load", "02_features", "03_cluster", "04_profile", "05_write", "06_insights"], 1):
        assert f"[{i}/6] {name} ... ok" in row.score.stdout
    assert (row.root / "runs" / "score" / "report.html").is_file()


def test_score_keeps_the_fits_ids_and_names(row):
    scored = row.table("contoso", TB.GOLD_SEGMENTS).to_pandas()
    assert set(scored.run_id) == {"score"}
    assert _segments(scored, "customer_key").equals(_segments(row.fit[TB.GOLD_SEGMENTS], "customer_key"))
    runs = row.table("contoso", TB.GOLD_RUNS).to_pandas().sort_values("run_id")
    assert list(zip(runs.run_id, runs["mode"])) == [("fit", "fit"), ("score", "score")]
    migration = row.table("contoso", TB.GOLD_MIGRATION).to_pandas()
    assert set(migration.change) == {"stayed"} and migration.customers.sum() == DEMO_CUSTOMERS


def test_retail_gives_the_default_runs_segments(row, published, retail_default):
    mine = row.table("shop", TB.GOLD_SEGMENTS).to_pandas()
    theirs = _default(published[0], "shop", TB.GOLD_SEGMENTS)
    assert len(mine) > 0
    assert _segments(mine, "customer_id").equals(_segments(theirs, "customer_id"))
    rfm = ["customer_id", "r_score", "f_score", "m_score", "rfm_segment"]
    assert mine[rfm].sort_values("customer_id").reset_index(drop=True).equals(
        theirs[rfm].sort_values("customer_id").reset_index(drop=True))
    assert _summary(row.table("shop", TB.GOLD_SUMMARY).to_pandas()).equals(
        _summary(_default(published[0], "shop", TB.GOLD_SUMMARY)))


@pytest.fixture(scope="module")
def retail_default(published, published_spark):
    """test_retail_job's run (`seglib demo --recipe retail`, schema shop of the published lakehouse), if that
    module has not made it already."""
    if not (published[0] / "warehouse" / "shop.db" / TB.GOLD_SEGMENTS / "_delta_log").is_dir():
        from conftest import seglib_cli
        proc = seglib_cli("demo", "--recipe", "retail", "--lakehouse", str(published[0]), "--schema", "shop",
                          "--customers", str(RETAIL_CUSTOMERS), "--seed", str(RETAIL_SEED), "--output",
                          str(published[0].parent / "retail-runs"), "--param", "n_init=2",
                          "--param", "stability_runs=1", env=published_spark["env"])
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Fail-safe on the oldest runtime: a failed run leaves the gold tables at their Delta version -----------

def _gold_state(row):
    return {t: (row.table("contoso", t).version(), _rows(row.table("contoso", t))) for t in GOLD}


def _rows(dt):
    return sorted(repr(sorted(r.items())) for r in dt.to_pyarrow_table().to_pylist())


@pytest.fixture(scope="module")
def failsafe_row(row):
    if row.name != OLDEST:
        pytest.skip(f"the fail-safe cases run on {OLDEST}")
    return row


def test_bad_input_stops_the_load_step_and_changes_nothing(failsafe_row):
    row = failsafe_row
    broken = row.root / "broken"
    for t in TB.GOLD_INPUTS:
        shutil.copytree(row.lakehouse / "warehouse" / "contoso.db" / t, broken / t)
    dim = DeltaTable(str(broken / TB.DIM_CUSTOMERS)).to_pyarrow_table()
    import pyarrow.compute as pc
    write_deltalake(str(broken / TB.DIM_CUSTOMERS), dim.filter(pc.is_in(dim["customer_key"], value_set=_ints([4, 9]))),
                    mode="append")
    before = _gold_state(row)
    params = job_params(row.bundle, SEGMENTATION_JOB, {"schema": "contoso", **FIT, "source_path": str(broken)},
                        str(row.lakehouse))
    proc = row.notebook("01_load", {**params, "run_id": "broken"}, label="broken")
    assert proc.returncode != 0
    assert "InputContractError" in proc.stderr and "dim_customers.customer_key: 2 duplicate key row(s)" in proc.stderr, \
        proc.stderr[-3000:]
    assert _gold_state(row) == before


def _ints(values):
    import pyarrow as pa
    return pa.array(values, type=pa.int32())


@pytest.mark.parametrize("fault", ["validated", f"publish:{TB.GOLD_SEGMENTS}"])
def test_a_failed_write_changes_no_gold_rows(failsafe_row, fault):
    """The write step fails after validating, or while publishing (the tables already replaced are
    restored with Delta RESTORE); the gold tables keep their rows."""
    row = failsafe_row
    before = _gold_state(row)
    params = job_params(row.bundle, SEGMENTATION_JOB, {"schema": "contoso", **FIT, "mode": "score"}, str(row.lakehouse))
    proc = row.notebook("05_write", {**params, "run_id": f"fault-{fault.split(':')[0]}"},
                        env={"SEGLIB_FAULT": fault}, label=f"fault-{fault.split(':')[0]}")
    assert proc.returncode != 0 and f"failure injected at {fault}" in proc.stderr, proc.stderr[-3000:]
    after = _gold_state(row)
    for t in GOLD:
        assert after[t][1] == before[t][1], f"{t} rows changed"
        if fault == "validated":
            assert after[t][0] == before[t][0], f"{t} version moved"
