"""One local Spark session (Delta + Hive catalog in a temporary lakehouse) for the whole test run, and
one published demo lakehouse for the end-to-end modules.

The tests mirror the layout: unit/ needs no JVM (seconds), stages/ runs one stage module on real Spark and
Delta in this process, e2e/ runs the notebooks through `seglib run`, platform/ covers the runtime matrix, the
wheel and the local Spark server."""
import itertools
import os
import subprocess
import sys

import pytest

_schemas = itertools.count()

# A run here never leaves its Spark server behind for a next run (test_session tests that on purpose):
# every test's lakehouse is its own, and CI's machine should end with the suite.
os.environ["SEGLIB_SERVER_IDLE"] = "0"

# A CLI process that starts its own Spark server lives for one run: only the JIT's first tier, which
# warms up sooner (a 3,000-member `seglib demo` took 129 s instead of 150 s). The long-lived JVMs (this
# session's, the shared server's) keep both tiers: C1 alone made each warm Delta commit ~35% slower.
ONE_RUN_JVM = {"SEGLIB_JAVA_OPTS": os.environ.get("SEGLIB_JAVA_OPTS", "-XX:TieredStopAtLevel=1")}


@pytest.fixture(scope="session", autouse=True)
def runtime_rows(request, tmp_path_factory):
    """The runtime matrix's rows (runtime_rows, test_runtimes), started with the session when a test of
    theirs is selected, so they build beside the rest of the suite: row name -> its future Row. At the
    session's end a row still building stops at its next notebook."""
    names = sorted({item.callspec.params["row"] for item in request.session.items
                    if "row" in getattr(getattr(item, "callspec", None), "params", {})})
    if not names:
        yield {}
        return
    from runtime_rows import start
    rows, stop = start(names, tmp_path_factory)
    yield rows
    stop.set()


@pytest.fixture(scope="session")
def lakehouse(tmp_path_factory):
    return tmp_path_factory.mktemp("lakehouse")


@pytest.fixture(scope="session")
def spark(lakehouse):
    from seglib.local.spark import local_session
    session = local_session(lakehouse, app_name="seglib-tests")
    yield session
    session.stop()


@pytest.fixture
def where(spark):
    """A fresh, empty schema per test, as the Location of its catalog tables."""
    from seglib.tables import Location
    name = f"t{next(_schemas)}"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {name}")
    return Location(name)


@pytest.fixture(scope="session")
def demo(spark):
    """A small demo Gold layer generated once, in schema `demo` (its Location)."""
    from seglib.generate import generate_demo_data
    from seglib.tables import Location
    generate_demo_data(spark, Location("demo"), customers=3000, seed=7, log=lambda *a: None)
    return Location("demo")


@pytest.fixture(scope="session")
def fitted(spark, demo):
    """The demo layer's features and one fit of them, shared by the cluster, profile and write tests."""
    from seglib import tables as TB
    from seglib.cluster import fit_segments
    from seglib.features import build_features
    from seglib.load import read_input
    features, _ = build_features(read_input(spark, TB.KPI_CUSTOMER_VALUE, demo))
    features = features.cache()
    return features, fit_segments(features, k=5, seed=42, stability_runs=0, log=lambda *a: None)


DEMO_CUSTOMERS = 3000
# Fewer restarts and refits than the job's defaults (3 and 2): the runs here test the product around the
# model; model quality has its own tests (test_segment_quality).
# MLflow tracking off: it costs seconds per run, and test_retail_job checks the run it records.
DEMO_PARAMS = ["--param", "n_init=2", "--param", "stability_runs=1", "--param", "mlflow_tracking=off"]


# What Databricks serverless answers DataFrame.cache/persist/unpersist (it has no cache).
SERVERLESS_NO_CACHE = ("[NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported on serverless compute. "
                       "SQLSTATE: 0A000")


def refuse_cache(*args, **kwargs):
    """A DataFrame method as serverless compute has it: patched over cache/unpersist."""
    from pyspark.errors import AnalysisException
    raise AnalysisException(message=SERVERLESS_NO_CACHE)


def seglib_cli(*args, env=None):
    """The CLI in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "seglib.cli", *args], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **ONE_RUN_JVM, **(env or {})})


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """`seglib demo` once (its own Spark server, demo data, the five notebooks): test_airline_job checks the run,
    then test_fail_safe uses its gold tables as the previous run's."""
    root = tmp_path_factory.mktemp("e2e")
    lakehouse, out = root / "lakehouse", root / "runs"
    proc = seglib_cli("demo", "--lakehouse", str(lakehouse), "--customers", str(DEMO_CUSTOMERS), "--seed", "42",
                      "--output", str(out), *DEMO_PARAMS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lakehouse, out, proc


@pytest.fixture(scope="session")
def published_spark(published, tmp_path_factory):
    """One Spark server on the published lakehouse for later runs on it: ``env``, the environment that
    points a `seglib run` at it (this process keeps its own classic session), and the server's ``log``."""
    from seglib.local.server import shared_local_spark
    log = tmp_path_factory.mktemp("published-spark") / "spark-server.log"
    with shared_local_spark(published[0], log):
        yield {"env": {k: os.environ.pop(k) for k in ("SPARK_REMOTE", "SPARK_CONNECT_AUTHENTICATE_TOKEN")},
               "log": str(log)}
