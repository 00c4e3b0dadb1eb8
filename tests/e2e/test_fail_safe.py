"""Fails safe: every bad input, parameter or mid-run failure ends `seglib run` with a non-zero exit and
the error named, and the previous gold tables unchanged (README, "What happens when the input is bad").

The previous run is conftest's published `seglib demo`; every case is a real `seglib run` (papermill,
notebooks, Spark Connect) on its lakehouse, with its parameters. The runs share one Spark server
(conftest's published_spark), so a case costs its kernels, not a JVM start. Broken inputs are copies of the Gold tables as Delta folders, read
through source_path; the gold tables stay catalog tables in schema contoso, read back with delta-rs.
"""
import shutil
import uuid
from pathlib import Path

import pytest
from conftest import DEMO_CUSTOMERS, DEMO_PARAMS, seglib_cli
from deltalake import DeltaTable
from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.features import FEATURES
from seglib.local.runner import output_lock
from seglib.local.spark import table_path

pytestmark = pytest.mark.e2e
SCHEMA = "contoso"
# The failure-injection cases rerun only the write task (`--from write`, like a Databricks repair run):
# it is the one that touches the gold tables, and the earlier tasks' handover tables are in place.
GOLD = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION, TB.GOLD_RUNS]


class Lake:
    def __init__(self, lakehouse: Path, root: Path, env: dict):
        self.lakehouse, self.root, self.env = lakehouse, root, env
        self.good = root / "good"

    def run(self, *args, env=None, schema=SCHEMA):
        out = self.root / "runs" / uuid.uuid4().hex[:8]
        return seglib_cli("run", "--lakehouse", str(self.lakehouse), "--schema", schema, "--output", str(out),
                          *DEMO_PARAMS, *args, env={**self.env, **(env or {})}), out

    def path(self, table):
        return table_path(self.lakehouse, SCHEMA, table)

    def gold(self):
        """Each gold table's Delta version and rows, as a reader sees them."""
        state = {}
        for t in GOLD:
            dt = DeltaTable(str(self.path(t)))
            rows = sorted(repr(sorted(r.items())) for r in dt.to_pyarrow_table().to_pylist())
            state[t] = (dt.version(), dt.to_pandas(), rows)
        return state

    def tables(self):
        """Rows of every table in the schema (inputs, handover, staging, gold)."""
        folder = self.path(TB.GOLD_SEGMENTS).parent
        return {p.name: len(DeltaTable(str(p)).to_pyarrow_table()) for p in folder.iterdir()
                if (p / "_delta_log").is_dir()}

    def inputs(self, name):
        """A copy of the good Gold inputs to break, read through source_path."""
        target = self.root / "cases" / name
        shutil.copytree(self.good, target)
        return target


@pytest.fixture(scope="module")
def lake(published, published_spark, tmp_path_factory):
    """The published demo lakehouse (its run is "the previous run") and a copy of its Gold inputs as
    Delta folders; runs use the shared server on it."""
    env = published_spark["env"]
    lake = Lake(published[0], tmp_path_factory.mktemp("failsafe"), env)
    lake.server_log = Path(published_spark["log"])
    for t in TB.GOLD_INPUTS:
        shutil.copytree(lake.path(t), lake.good / t)
    lake.published = lake.tables()
    return lake


def assert_failed_safely(lake, before, proc, *messages):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for m in messages:
        assert m in proc.stderr, proc.stderr
    after = lake.gold()
    for t in GOLD:
        assert after[t][0] == before[t][0], f"{t} version moved"
        assert after[t][2] == before[t][2], f"{t} rows changed"


def _overwrite(spark, folder, table, df):
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(str(folder / table))


KPI = TB.KPI_CUSTOMER_VALUE


def _read(spark, folder, table):
    return spark.read.format("delta").load(str(folder / table)).cache()


@pytest.fixture(scope="module")
def broken_values(spark, lake):
    """One run on a copy with five value violations in three tables: the load step must name every one
    of them in its one error (each case's test below checks its own line)."""
    folder = lake.inputs("broken_values")
    dim = _read(spark, folder, TB.DIM_CUSTOMERS)
    _overwrite(spark, folder, TB.DIM_CUSTOMERS, dim.unionByName(dim.where("customer_key IN (4, 9)")))
    flights = _read(spark, folder, TB.FACT_FLIGHTS)
    _overwrite(spark, folder, TB.FACT_FLIGHTS, flights
               .withColumn("total_loyalty_points", F.when(F.col("customer_key") == 6, -10)
                           .otherwise(F.col("total_loyalty_points")))
               .withColumn("total_flights", F.when(F.col("customer_key") == 2, "many")
                           .otherwise(F.col("total_flights").cast("string"))))
    kpi = _read(spark, folder, KPI)  # one feature without values, the other six constant
    _overwrite(spark, folder, KPI, kpi.select(*[
        F.lit(None).cast("int").alias(c) if c == "total_km_flown" else
        F.lit(1).cast(dict(kpi.dtypes)[c]).alias(c) if c in FEATURES else F.col(c) for c in kpi.columns]))
    before = lake.gold()
    proc, _ = lake.run("--param", f"source_path={folder}")
    return before, proc


VALUE_CASES = {
    "duplicate keys": "dim_customers.customer_key: 2 duplicate key row(s), expected one row per customer_key, "
                      "e.g. customer_key 4 (2 rows), 9 (2 rows)",
    "negative values": "fact_flights.total_loyalty_points: 1 negative value(s), expected >= 0, "
                       "e.g. customer_key 6 (total_loyalty_points -10)",
    "uncastable type": "fact_flights.total_flights: 1 value(s) cannot be read as int (the column is string), "
                       "e.g. customer_key 2 (value 'many')",
    "feature entirely null": f"kpi_customer_value.total_km_flown: null in all {DEMO_CUSTOMERS:,} rows",
    "every feature constant": "kpi_customer_value: every clustering feature is constant (age, total_flights, "
                              "total_loyalty_points, days_since_last_flight, total_spent, transaction_count)",
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_bad_values_stop_the_load_step(lake, broken_values, case):
    before, proc = broken_values
    assert_failed_safely(lake, before, proc, "01_load failed", "InputContractError: the input breaks the airline "
                         "contract (5 problem(s)); nothing was written", VALUE_CASES[case])


@pytest.mark.parametrize("case, breaks, message", [
    ("missing column", lambda kpi: kpi.drop("days_since_last_flight"),
     "kpi_customer_value is missing column(s) days_since_last_flight"),
    ("empty kpi table", lambda kpi: kpi.limit(0), "kpi_customer_value: 0 rows, expected at least 1"),
])
def test_broken_kpi_table_stops_the_load_step(spark, lake, case, breaks, message):
    folder = lake.inputs(case.replace(" ", "_"))
    _overwrite(spark, folder, KPI, breaks(_read(spark, folder, KPI)))
    before = lake.gold()
    proc, _ = lake.run("--param", f"source_path={folder}")
    assert_failed_safely(lake, before, proc, "01_load failed", "InputContractError", message)


def test_missing_table(lake):
    folder = lake.inputs("missing_table")
    shutil.rmtree(folder / TB.FACT_FLIGHTS)
    before = lake.gold()
    proc, _ = lake.run("--param", f"source_path={folder}")
    assert_failed_safely(lake, before, proc, "01_load failed",
                         f"InputContractError: input table {folder}/fact_flights does not exist")


def test_missing_lakehouse_folder(lake, tmp_path):
    before = lake.gold()
    proc, _ = lake.run("--param", f"source_path={tmp_path / 'nowhere'}")
    assert_failed_safely(lake, before, proc, f"input table {tmp_path / 'nowhere'}/dim_customers does not exist")


def test_unreadable_table(lake):
    folder = lake.inputs("unreadable")
    for commit in (folder / KPI / "_delta_log").glob("*.json"):
        commit.write_text("this is not a Delta commit\n")
    before = lake.gold()
    proc, _ = lake.run("--param", f"source_path={folder}")
    assert_failed_safely(lake, before, proc, "01_load failed", f"input table {folder}/kpi_customer_value cannot be read")


def test_fewer_customers_than_k(spark, lake):
    folder = lake.inputs("three_customers")
    _overwrite(spark, folder, KPI, _read(spark, folder, KPI).where("customer_key <= 3"))
    before = lake.gold()
    proc, _ = lake.run("--from", "features", "--param", f"source_path={folder}", "--param", "k=4")
    assert_failed_safely(lake, before, proc, "03_cluster failed",
                         "kpi_customer_value has 3 customer(s) with features, fewer than the 4 segments k=4 asks for")


@pytest.mark.parametrize("args, message", [
    (["--schema", "my schema"], "schema must match [A-Za-z0-9_]+, got 'my schema'"),
    (["--schema", "contoso'"], "schema must match [A-Za-z0-9_]+, got \"contoso'\""),
    (["--schema", "contoso;DROP"], "schema must match [A-Za-z0-9_]+, got 'contoso;DROP'"),
    (["--schema", "`contoso`"], "schema must match [A-Za-z0-9_]+, got '`contoso`'"),
    (["--param", "catalog=main;DROP SCHEMA x"], "catalog must match [A-Za-z0-9_]+, got 'main;DROP SCHEMA x'"),
    (["--param", "k=0"], "k must be a whole number >= 2 or auto, got '0'"),
    (["--param", "k=1"], "k must be a whole number >= 2 or auto, got '1'"),
    (["--param", "k=five"], "k must be a whole number >= 2 or auto, got 'five'"),
])
def test_bad_parameters_stop_before_anything_runs(lake, args, message):
    before = lake.gold()
    schema = args[1] if args[0] == "--schema" else SCHEMA
    extra = args[2:] if args[0] == "--schema" else args
    proc, out = lake.run(*extra, schema=schema)
    assert_failed_safely(lake, before, proc, f"seglib: error: {message}")
    assert not out.exists()  # nothing started: no kernel, no Spark


def test_a_second_run_on_the_same_schema_stops_at_once(lake):
    before = lake.gold()
    with output_lock(str(lake.lakehouse), {"schema": SCHEMA, "run_id": "the-first-run"}):
        proc, _ = lake.run()
    assert_failed_safely(lake, before, proc, f"another seglib run is writing schema {SCHEMA}",
                         '"run": "the-first-run"')


def test_failure_between_the_two_gold_tables_changes_nothing(lake):
    """Every output computed and validated, the run dies before the first gold write."""
    before = lake.gold()
    proc, _ = lake.run("--from", "write", env={"SEGLIB_FAULT": "validated"})
    assert_failed_safely(lake, before, proc, "05_write failed", "InjectedFault: failure injected at validated")


def test_failure_while_publishing_restores_the_previous_tables(spark, lake):
    """The publish: gold_customer_segments_ml replaced, then the run dies before the summary. It is restored
    (same rows, two more versions in its history), so both tables still come from one run."""
    before = lake.gold()
    proc, _ = lake.run("--from", "write", env={"SEGLIB_FAULT": f"publish:{TB.GOLD_SEGMENTS}"})
    assert proc.returncode == 1 and f"failure injected at publish:{TB.GOLD_SEGMENTS}" in proc.stderr, proc.stderr
    after = lake.gold()
    for t in GOLD:
        assert after[t][2] == before[t][2], f"{t} rows changed"
    assert after[TB.GOLD_SEGMENTS][0] == before[TB.GOLD_SEGMENTS][0] + 2  # overwrite, then RESTORE
    history = DeltaTable(str(lake.path(TB.GOLD_SEGMENTS))).history(2)
    assert history[0]["operation"] == "RESTORE"
    assert all(after[t][0] == before[t][0] for t in GOLD if t != TB.GOLD_SEGMENTS)
    published = {t: set(after[t][1].run_id) for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION)}
    assert len(set.union(*published.values())) == 1, published


def test_rerun_is_idempotent(lake):
    """Same inputs and parameters: the same gold rows (but the run id), nothing grows but the run log."""
    before = lake.gold()
    proc, out = lake.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = lake.gold()
    for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY):
        def rows(state):
            df = state[t][1].drop(columns="run_id")
            return df.sort_values(list(df.columns)).reset_index(drop=True)
        assert rows(after).equals(rows(before)), t
        assert set(after[t][1].run_id) == {out.name}
    migration = after[TB.GOLD_MIGRATION][1]
    assert set(migration.change) == {"stayed"} and migration.customers.sum() == DEMO_CUSTOMERS
    # Compared with the published run: same tables, same rows, one more run log row (the cases in
    # between append nothing: they failed).
    published = dict(lake.published, **{TB.GOLD_RUNS: lake.published[TB.GOLD_RUNS] + 1})
    assert lake.tables() == published


def test_secrets_never_leave_the_secret_store(lake):
    """OneLake mode with a service principal whose secret comes from the environment: the run fails
    here (no OneLake), and the secret's value is nowhere: output, notebooks, logs, tables."""
    secret, client = f"fake-secret-{uuid.uuid4().hex}", f"client-{uuid.uuid4().hex}"
    env = {"SEGLIB_SECRET_KV_SP_SECRET": secret, "SEGLIB_SECRET_KV_SP_CLIENT": client,
           "SEGLIB_SECRET_KV_SP_TENANT": "00000000-0000-0000-0000-000000000000"}
    onelake = "abfss://ws@onelake.dfs.fabric.microsoft.com/lh.Lakehouse/Tables"
    before = lake.gold()
    proc, out = lake.run("--param", f"source_path={onelake}", "--param", "secret_scope=kv",
                         "--param", "tenant_id_key=sp-tenant", "--param", "client_id_key=sp-client",
                         "--param", "client_secret_key=sp-secret", env=env)
    assert_failed_safely(lake, before, proc, "01_load failed")
    assert "OAuth service principal for onelake.dfs.fabric.microsoft.com" in (out / "01_load.ipynb").read_text()
    places = {"stdout": proc.stdout, "stderr": proc.stderr}
    for folder in (out, lake.lakehouse, lake.server_log):
        files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
        places.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in files})
    assert len(places) > 10
    leaks = [where for where, text in places.items() if secret in text or client in text]
    assert leaks == []
