"""One way for notebooks to get Spark.

In Databricks or Fabric the platform's session is used as it is. Anywhere else seglib starts a local
session with Delta, a persistent Hive catalog on embedded Derby and a warehouse under a *lakehouse*
folder, so a table one notebook process saves is read by the next with ``spark.read.table``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

from .errors import LocalSparkError

DEFAULT_LAKEHOUSE = ".lakehouse"

# delta-spark's POM pulls older copies of libraries pyspark already ships (Hadoop client, Parquet,
# Jackson, log4j, compression codecs). Excluding them keeps one version of each on the classpath and
# makes the first download ~10x smaller; only delta-* and unitycatalog-* jars remain.
_DUPLICATES_OF_PYSPARK_JARS = [
    "org.apache.hadoop:hadoop-client-runtime", "org.apache.hadoop:hadoop-client-api",
    "org.apache.parquet:parquet-hadoop", "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common", "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures", "org.apache.parquet:parquet-jackson",
    "com.fasterxml.jackson.core:jackson-databind", "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-annotations", "com.fasterxml.jackson.datatype:jackson-datatype-jdk8",
    "org.apache.logging.log4j:log4j-api", "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl", "org.slf4j:slf4j-api",
    "org.xerial.snappy:snappy-java", "com.github.luben:zstd-jni", "io.airlift:aircompressor",
    "org.roaringbitmap:RoaringBitmap", "org.roaringbitmap:shims", "org.locationtech.jts:jts-core",
    "commons-logging:commons-logging", "commons-pool:commons-pool", "javax.annotation:javax.annotation-api",
    "com.google.code.findbugs:jsr305",
]


def is_managed_runtime() -> bool:
    """True inside Databricks (classic or serverless) or Microsoft Fabric."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    try:  # Fabric and Synapse expose notebookutils; nothing else does.
        import notebookutils  # type: ignore  # noqa: F401
        return True
    except ImportError:
        return False


def warehouse_dir(lakehouse: str | os.PathLike) -> Path:
    return Path(lakehouse).resolve() / "warehouse"


def table_path(lakehouse: str | os.PathLike, schema: str, table: str) -> Path:
    """Where the local catalog keeps a managed table (Hive layout: <warehouse>/<schema>.db/<table>)."""
    return warehouse_dir(lakehouse) / f"{schema.lower()}.db" / table.lower()


def default_model_path(lakehouse: str | os.PathLike, schema: str, catalog: str | None = None) -> str:
    """Where the fitted pipeline model goes when model_path is empty.

    Databricks with Unity Catalog: a volume in the output schema (seglib creates it when saving).
    Fabric: the attached lakehouse's Files area. Locally: under the lakehouse folder.
    """
    if os.environ.get("DATABRICKS_RUNTIME_VERSION") and catalog:
        return f"/Volumes/{catalog}/{schema}/seglib_models/segmentation"
    if is_managed_runtime():
        return f"Files/seglib_models/{schema}/segmentation"
    return str(Path(lakehouse).resolve() / "models" / schema / "segmentation")


def _jar_manifest() -> Path:
    import pyspark
    from importlib.metadata import version
    return Path.home() / ".cache" / "seglib" / f"delta-{version('delta-spark')}-spark-{pyspark.__version__}.jars"


def _cached_jars() -> list[str] | None:
    """Delta's jars from an earlier resolution, if all are still on disk (skips Ivy: faster, quiet)."""
    manifest = _jar_manifest()
    if not manifest.exists():
        return None
    jars = [j for j in manifest.read_text().split() if j]
    return jars if jars and all(Path(j.removeprefix("file:")).exists() for j in jars) else None


def get_spark(lakehouse: str | os.PathLike | None = None, app_name: str = "seglib") -> SparkSession:
    """The active session if there is one (Databricks, Fabric, a test's), else a local one."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if is_managed_runtime() or os.environ.get("SPARK_REMOTE"):
        return SparkSession.builder.getOrCreate()
    return local_session(lakehouse or DEFAULT_LAKEHOUSE, app_name=app_name)


def describe(spark: SparkSession) -> str:
    """One line for a notebook's first output: which Spark, and whether it is a Spark Connect client."""
    kind = "Spark Connect" if type(spark).__module__.startswith("pyspark.sql.connect") else "classic"
    return f"Spark {spark.version} ({kind})"


def local_session(lakehouse: str | os.PathLike, app_name: str = "seglib", conf: dict[str, str] | None = None,
                  java_options: str = "") -> SparkSession:
    from delta import configure_spark_with_delta_pip

    # The JVM otherwise warns that the host name resolves to loopback; local runs need nothing else.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    root = Path(lakehouse).resolve()
    root.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    log4j = here / "log4j2.properties"
    cores = os.cpu_count() or 2
    if "-XX:SharedArchiveFile" not in java_options and "-XX:ArchiveClassesAtExit" not in java_options:
        # The class archive the shared server recorded (_serve) serves any local JVM with these jars:
        # a test session or a notebook's own Spark loads Spark's classes from it too.
        archive = _class_archive()
        if archive.exists() and _cached_jars():
            java_options += f" -XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    java_opts = " ".join([f"-Dderby.system.home={root} -Dlog4j2.configurationFile=file:{log4j}", java_options,
                          os.environ.get("SEGLIB_JAVA_OPTS", "")])
    builder = (
        SparkSession.builder.master(os.environ.get("SEGLIB_SPARK_MASTER") or f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.catalogImplementation", "hive")
        .config("spark.sql.warehouse.dir", str(warehouse_dir(root)))
        .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.driver.memory", os.environ.get("SEGLIB_DRIVER_MEMORY") or "4g")
        # A laptop has a handful of cores: 200 shuffle partitions would be 200 tiny tasks per stage.
        .config("spark.sql.shuffle.partitions", str(max(4, 2 * cores)))
        .config("spark.default.parallelism", str(max(4, 2 * cores)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # Delta registers a placeholder schema, then alters it; Hive 2.3 would reject that and retry.
        .config("spark.hadoop.hive.metastore.disallow.incompatible.col.type.changes", "false")
        .config("spark.sql.debug.maxToStringFields", "200")
    )
    # SEGLIB_SPARK_CONF="key=value,key=value" tunes a local session without code changes.
    extra = dict(kv.split("=", 1) for kv in os.environ.get("SEGLIB_SPARK_CONF", "").split(",") if "=" in kv)
    for key, value in {**(conf or {}), **extra}.items():
        builder = builder.config(key.strip(), value.strip())
    jars = _cached_jars()
    if jars:
        # On the JVM's own class path (local mode: the driver is the executor) rather than spark.jars, so
        # Delta's classes load once, by the app loader, and can go into the class-data-sharing archive.
        classpath = os.pathsep.join(j.removeprefix("file:") for j in jars)
        return builder.config("spark.driver.extraClassPath", classpath).getOrCreate()
    # First start on this machine: delta-spark names its Maven artifact; Ivy downloads and caches it.
    builder = (builder.config("spark.jars.excludes", ",".join(_DUPLICATES_OF_PYSPARK_JARS))
               .config("spark.jars.ivySettings", str(here / "ivysettings.xml"))
               .config("spark.jars.ivy", str(Path.home() / ".cache" / "seglib" / "ivy")))
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    resolved = [j for j in spark.conf.get("spark.jars", "").split(",") if j.endswith(".jar")]
    if resolved:
        _jar_manifest().write_text("\n".join(resolved) + "\n")
    return spark


# --- One local Spark shared by the notebooks of a run ------------------------------------------------
# Each notebook kernel starting its own JVM (and booting the Derby catalog) cost 10-25 s per notebook.
# Instead the runner starts one Spark Connect server on the lakehouse (as Databricks serverless is a
# Spark Connect service) and points every kernel at it through SPARK_REMOTE. The server listens on
# loopback only and demands a random per-run token, passed through the environment, never printed.
_TOKEN_ENV = "SPARK_CONNECT_AUTHENTICATE_TOKEN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _class_archive() -> Path:
    """Where the server JVM's class-data-sharing archive lives (one per Java, pyspark and Delta jars)."""
    import hashlib
    import shutil
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") \
        else shutil.which("java")
    key = f"{os.path.realpath(java or 'java')}|{_jar_manifest().name}|{' '.join(_cached_jars() or [])}"
    return Path.home() / ".cache" / "seglib" / f"spark-classes-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"


def _serve(lakehouse: str, port: str, ready_file: str) -> None:
    """Server process body: start Spark with the Connect plugin, boot the catalog, wait for stdin EOF.

    A cold JVM spends much of a small run loading and verifying Spark's classes. The first server on a
    machine records them into an AppCDS archive when it exits; later servers map it and start, boot the
    catalog and run their first queries about twice as fast. A stale or mismatched archive is ignored
    by the JVM (-Xshare:auto), so this can only cost the one-off dump.
    """
    archive = _class_archive()
    dump = archive.with_suffix(f".{os.getpid()}.tmp")
    cds = (f"-XX:SharedArchiveFile={archive}" if archive.exists() and _cached_jars()
           else f"-XX:ArchiveClassesAtExit={dump}")
    spark = local_session(lakehouse, app_name="seglib-connect", java_options=f"{cds} -Xlog:cds=off -Xlog:cds+dynamic=off",
                          conf={"spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
                                "spark.connect.grpc.binding.address": "127.0.0.1",
                                "spark.connect.grpc.binding.port": port})
    spark.sql("SHOW DATABASES").collect()  # boot the metastore now rather than in the first notebook
    Path(ready_file).write_text(str(os.getpid()))
    sys.stdin.read()  # EOF when the runner finishes or dies: either way the server goes too
    # This process is the classic driver, not a Connect client: waiting for its JVM to exit lets the
    # class archive be written completely before it is moved into place.
    from pyspark import SparkContext
    jvm = SparkContext._gateway.proc
    spark.stop()
    jvm.stdin.close()
    jvm.wait(timeout=300)
    if dump.exists():
        dump.replace(archive)


@contextlib.contextmanager
def shared_local_spark(lakehouse: str | os.PathLike, log_path: Path, timeout: float = 900.0):
    """Start a local Spark Connect server on *lakehouse*; within the block SPARK_REMOTE points at it."""
    port, token = _free_port(), secrets.token_hex(16)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready = log_path.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    # A process that has been a Spark Connect client carries pyspark's connect-mode flag; the server
    # must start classic Spark.
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    env[_TOKEN_ENV] = token
    code = "import sys; from seglib.session import _serve; _serve(*sys.argv[1:])"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(Path(lakehouse).resolve()), str(port), str(ready)],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
    saved = {k: os.environ.get(k) for k in ("SPARK_REMOTE", _TOKEN_ENV)}
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise LocalSparkError(f"the local Spark server exited with code {proc.returncode} before it was "
                                      f"ready{_lock_hint(log_path)}; see {log_path}")
            if time.monotonic() > deadline:
                raise LocalSparkError(f"the local Spark server was not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        os.environ["SPARK_REMOTE"] = f"sc://localhost:{port}"
        os.environ[_TOKEN_ENV] = token
        yield os.environ["SPARK_REMOTE"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=360)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        ready.unlink(missing_ok=True)


def _lock_hint(log_path: Path) -> str:
    """Derby admits one JVM per catalog: say so plainly when that is why the server died."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    if "Another instance of Derby may have already booted" in text:
        return " (another Spark process, e.g. a concurrent seglib run, holds this lakehouse's catalog)"
    return ""
