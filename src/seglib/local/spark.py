"""A local Spark with Delta on a laptop or CI machine: a persistent Hive catalog on embedded Derby and a
warehouse under a *lakehouse* folder, Delta's jars resolved once and cached, a class-data-sharing archive
for faster JVM starts. Only a local run needs this (the local extra); platforms bring their own Spark.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from ..session import is_managed_runtime
from ..tables import Location

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


def warehouse_dir(lakehouse: str | os.PathLike) -> Path:
    return Path(lakehouse).resolve() / "warehouse"


def table_path(lakehouse: str | os.PathLike, schema: str, table: str) -> Path:
    """Where the local catalog keeps a managed table (Hive layout: <warehouse>/<schema>.db/<table>)."""
    return warehouse_dir(lakehouse) / f"{schema.lower()}.db" / table.lower()


def table_folder(lakehouse: str | os.PathLike, where: Location, table: str) -> str:
    """*table*'s Delta folder in a local run: its path in *where*, else the local catalog's folder."""
    return where.path(table) or str(table_path(lakehouse, where.schema, table))


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


def _class_archive() -> Path:
    """Where the server JVM's class-data-sharing archive lives (one per Java, pyspark and Delta jars)."""
    import hashlib
    import shutil
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") \
        else shutil.which("java")
    key = f"{os.path.realpath(java or 'java')}|{_jar_manifest().name}|{' '.join(_cached_jars() or [])}"
    return Path.home() / ".cache" / "seglib" / f"spark-classes-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"


def session_conf(lakehouse: str | os.PathLike) -> dict[str, str]:
    """The Spark settings of a local session on *lakehouse* (Delta, its Hive catalog, laptop sizing), apart
    from the master, the JVM's options and the jars: also what `seglib pipeline run` hands spark-pipelines."""
    root = Path(lakehouse).resolve()
    cores = os.cpu_count() or 2
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(warehouse_dir(root)),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        "spark.driver.memory": os.environ.get("SEGLIB_DRIVER_MEMORY") or "4g",
        # A laptop has a handful of cores: 200 shuffle partitions would be 200 tiny tasks per stage.
        "spark.sql.shuffle.partitions": str(max(4, 2 * cores)),
        "spark.default.parallelism": str(max(4, 2 * cores)),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.snapshotPartitions": "2",
        # Delta registers a placeholder schema, then alters it; Hive 2.3 would reject that and retry.
        "spark.hadoop.hive.metastore.disallow.incompatible.col.type.changes": "false",
        "spark.sql.debug.maxToStringFields": "200",
    }


def base_java_options(lakehouse: str | os.PathLike) -> str:
    """The driver JVM's options for *lakehouse*: Derby's home in it, seglib's quiet log4j set-up, UTC."""
    log4j = Path(__file__).parent / "log4j2.properties"
    # UTC for the JVM as for the SQL session: outside UTC, Delta 4.3 re-reads a table's whole log to verify
    # every commit (allFilesInCrc.verificationMode.forceOnNonUTC): an append to a small table took 1.7-3.9 s
    # with TZ=Europe/Berlin against 0.7 s.
    return f"-Dderby.system.home={Path(lakehouse).resolve()} -Dlog4j2.configurationFile=file:{log4j} -Duser.timezone=UTC"


def local_session(lakehouse: str | os.PathLike, app_name: str = "seglib", conf: dict[str, str] | None = None,
                  java_options: str = "") -> SparkSession:
    from delta import configure_spark_with_delta_pip

    # The JVM otherwise warns that the host name resolves to loopback; local runs need nothing else.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (its pyspark, pandas, pyarrow), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = Path(lakehouse).resolve()
    root.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent  # ivysettings.xml
    cores = os.cpu_count() or 2
    if "-XX:SharedArchiveFile" not in java_options and "-XX:ArchiveClassesAtExit" not in java_options:
        # The class archive the shared server recorded (_serve) serves any local JVM with these jars:
        # a test session or a notebook's own Spark loads Spark's classes from it too.
        archive = _class_archive()
        if archive.exists() and _cached_jars():
            java_options += f" -XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    java_opts = " ".join([base_java_options(root), java_options, os.environ.get("SEGLIB_JAVA_OPTS", "")])
    builder = (SparkSession.builder.master(os.environ.get("SEGLIB_SPARK_MASTER") or f"local[{cores}]")
               .appName(app_name).config("spark.driver.extraJavaOptions", java_opts))
    for key, value in session_conf(root).items():
        builder = builder.config(key, value)
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


def stop_local_spark(timeout: float = 300.0) -> None:
    """Stop this process's local classic Spark and wait until its JVM has exited, so the lakehouse's Derby
    catalog is free for the next process (a notebook after this one). Nothing to do on a platform, over
    Spark Connect, or without a session."""
    active = SparkSession.getActiveSession()
    if is_managed_runtime() or (active is not None and type(active).__module__.startswith("pyspark.sql.connect")):
        return
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    if active is not None:
        active.stop()
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()  # the JVM exits when its stdin closes
        gateway.proc.wait(timeout=timeout)


