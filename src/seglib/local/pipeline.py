"""`seglib pipeline run`: the RFM declarative pipeline (pipelines/rfm) on a local lakehouse, with Spark's own
``spark-pipelines`` CLI, as Lakeflow runs the same source on Databricks.

spark-pipelines starts a Spark Connect server of its own through spark-submit and rebuilds the --conf
options it passes on: it dropped ``spark.sql.catalog.spark_catalog`` (without Delta's catalog a
materialized view cannot be created: CANNOT_CREATE_DATA_SOURCE_TABLE.EXTERNAL_METADATA_UNSUPPORTED). So
the local session's settings (Delta's jars on the driver class path, its extension and catalog, the
lakehouse's Hive catalog on Derby) go into a ``spark-defaults.conf`` of a folder passed as SPARK_CONF_DIR,
which spark-submit reads whatever the command line says. The persistent catalog is what makes a second
run refresh the views in place: on an in-memory catalog it would find their folders and stop
(DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION).

The spec (spark-pipeline.yml) and a copy of the source folder live under ``<lakehouse>/.seglib-pipelines/``:
the spec holds this run's schema and settings, and spark-pipelines finds the sources relative to it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import yaml

from .. import pipeline as P
from .. import tables as TB
from ..errors import SeglibError
from .spark import _cached_jars, base_java_options, local_session, session_conf, stop_local_spark, table_path

PIPELINE = "rfm"
SOURCES = Path("pipelines") / PIPELINE / "transformations"  # in the repository (the bundle's root)


class PipelineFailure(SeglibError):
    """spark-pipelines failed, or a data quality check of the pipeline failed."""


def _cli() -> str:
    """The spark-pipelines of this Python's pyspark (Spark 4.1+)."""
    found = Path(sys.executable).with_name("spark-pipelines")
    if found.exists():
        return str(found)
    on_path = shutil.which("spark-pipelines")
    if on_path:
        return on_path
    raise PipelineFailure("spark-pipelines was not found beside this Python or on PATH; it comes with pyspark 4.1 "
                          "or newer: `make install` (the local extra) installs it")


def _delta_jars(lakehouse: Path, log) -> list[str]:
    """Delta's jars as the local sessions use them; resolved (and cached) by one short session the first time."""
    jars = _cached_jars()
    if not jars:
        log("Resolving Delta's jars (first local Spark on this machine)")
        local_session(lakehouse, app_name="seglib-jars")
        stop_local_spark()
        jars = _cached_jars()
    if not jars:
        raise PipelineFailure("Delta's jars could not be resolved (see the Spark output above)")
    return [j.removeprefix("file:") for j in jars]


def prepare(root: Path, lakehouse: Path, schema: str, settings: P.Settings, log=print) -> Path:
    """Write this run's spec, Spark settings and a copy of the sources; returns the spec's path."""
    sources = root / SOURCES
    if not sources.is_dir():
        raise PipelineFailure(f"the pipeline's sources {sources} were not found: run from the seglib repository "
                              f"(or pass --bundle)")
    home = lakehouse / ".seglib-pipelines" / PIPELINE
    code = home / "code"
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(sources, code / "transformations", ignore=shutil.ignore_patterns("__pycache__"))
    spec = {
        "name": f"seglib_{PIPELINE}",
        "storage": (home / "storage").as_uri(),  # the pipeline's checkpoints and state
        "database": schema,
        "configuration": {"spark.sql.sources.default": "delta", **settings.conf()},
        "libraries": [{"glob": {"include": "transformations/**"}}],
    }
    (code / "spark-pipeline.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    conf = {**session_conf(lakehouse),
            "spark.driver.extraClassPath": os.pathsep.join(_delta_jars(lakehouse, log)),
            "spark.driver.extraJavaOptions": f"{base_java_options(lakehouse)} {os.environ.get('SEGLIB_JAVA_OPTS', '')}"}
    (home / "conf").mkdir(parents=True, exist_ok=True)
    (home / "conf" / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
    return code / "spark-pipeline.yml"


def _check_source(lakehouse: Path, schema: str, source_table: str) -> None:
    """An input missing from the local catalog fails now, by name, not after the pipeline's Spark started."""
    parts = source_table.split(".")
    if len(parts) == 3:
        return  # a catalog.schema.table name: for the session's catalogs to resolve
    table_schema, table = (schema, parts[0]) if len(parts) == 1 else parts
    if not (table_path(lakehouse, table_schema, table) / "_delta_log").is_dir():
        raise PipelineFailure(f"input table {table_schema}.{table} was not found in {lakehouse}: the pipeline reads "
                              f"invoice lines from it (`seglib generate --recipe retail --schema {schema}` makes "
                              f"one, or pass --source-table)")


def run_pipeline(root: Path, lakehouse: str | os.PathLike, schema: str, settings: P.Settings | None = None,
                 log=print) -> dict[str, int]:
    """Run the RFM pipeline on *lakehouse*'s tables in *schema*; returns the rows of each of its tables.
    Raises PipelineFailure when spark-pipelines fails or a data quality check fails."""
    from .server import stop_server
    settings = settings or P.Settings()
    lakehouse = Path(lakehouse).resolve()
    TB.check_identifier(schema, "schema")
    # One JVM at a time on the lakehouse's Derby catalog: a kept server of an earlier `seglib run` holds it.
    if stop_server(lakehouse):
        log(f"stopped the Spark server kept for {lakehouse} (the pipeline needs its catalog)")
    _check_source(lakehouse, schema, settings.source_table)
    spec = prepare(root, lakehouse, schema, settings, log)
    env = {**os.environ, "SPARK_CONF_DIR": str(spec.parent.parent / "conf"), "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    log(f"Running pipeline {PIPELINE} on {lakehouse}, schema {schema} ({settings.source_table}, "
        f"rfm_bins {settings.rfm_bins}, as_of {settings.as_of or 'the day after the last transaction'})")
    start = time.perf_counter()
    proc = subprocess.Popen([_cli(), "run", "--spec", str(spec)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=spec.parent)
    tail: deque[str] = deque(maxlen=40)
    for line in proc.stdout:  # the run's own progress: flows queued, running, completed
        line = line.rstrip()
        tail.append(line)
        # The flows' progress and errors; not the client's "releaseExecute" noise as it disconnects.
        if ("Flow " in line or "Run " in line or "ERROR" in line or "Error" in line) and "releaseExecute" not in line:
            log(f"  {line}")
    if proc.wait() != 0:
        raise PipelineFailure(f"spark-pipelines failed (exit {proc.returncode}); its last lines:\n" + "\n".join(tail))
    log(f"pipeline {PIPELINE} refreshed in {time.perf_counter() - start:.0f} s")
    return report(lakehouse, schema, log)


def report(lakehouse: Path, schema: str, log=print) -> dict[str, int]:
    """Rows of each of the pipeline's tables and its data quality checks, read with delta-rs (no JVM)."""
    from deltalake import DeltaTable
    counts = {}
    read = {}
    for table in TB.PIPELINE_TABLES:
        read[table] = DeltaTable(str(table_path(lakehouse, schema, table))).to_pyarrow_table()
        counts[table] = read[table].num_rows
        log(f"  {schema}.{table}: {counts[table]:,} rows")
    checks = read[TB.RFM_QUALITY_CHECKS].to_pylist()
    failed = [c for c in checks if not c["passed"]]
    for c in sorted(checks, key=lambda c: c["check"]):
        status = "ok" if c["passed"] else f"FAILED ({c['failing']:,} failing)"
        log(f"  check {c['check']}: {status}")
    if failed:
        raise PipelineFailure("data quality check(s) failed: " + "; ".join(
            f"{c['check']} ({c['failing']:,} failing): expected {c['expectation']}" for c in failed))
    return counts
