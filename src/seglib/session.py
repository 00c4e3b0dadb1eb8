"""One way for notebooks to get Spark.

In Databricks or Fabric the platform's session is used as it is. Anywhere else seglib starts a local
session with Delta, a persistent Hive catalog on embedded Derby and a warehouse under a *lakehouse*
folder, so a table one notebook process saves is read by the next with ``spark.read.table``.
"""
from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

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


def default_model_path(lakehouse: str | os.PathLike, schema: str) -> str:
    """Where a local run saves the fitted pipeline model."""
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


def local_session(lakehouse: str | os.PathLike, app_name: str = "seglib") -> SparkSession:
    from delta import configure_spark_with_delta_pip

    # The JVM otherwise warns that the host name resolves to loopback; local runs need nothing else.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    root = Path(lakehouse).resolve()
    root.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    log4j = here / "log4j2.properties"
    cores = os.cpu_count() or 2
    java_opts = f"-Dderby.system.home={root} -Dlog4j2.configurationFile=file:{log4j} " + os.environ.get("SEGLIB_JAVA_OPTS", "")
    builder = (
        SparkSession.builder.master(os.environ.get("SEGLIB_SPARK_MASTER", f"local[{cores}]"))
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.catalogImplementation", "hive")
        .config("spark.sql.warehouse.dir", str(warehouse_dir(root)))
        .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.driver.memory", os.environ.get("SEGLIB_DRIVER_MEMORY", "4g"))
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
    jars = _cached_jars()
    if jars:
        return builder.config("spark.jars", ",".join(jars)).getOrCreate()
    # First start on this machine: delta-spark names its Maven artifact; Ivy downloads and caches it.
    builder = (builder.config("spark.jars.excludes", ",".join(_DUPLICATES_OF_PYSPARK_JARS))
               .config("spark.jars.ivySettings", str(here / "ivysettings.xml"))
               .config("spark.jars.ivy", str(Path.home() / ".cache" / "seglib" / "ivy")))
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    resolved = [j for j in spark.conf.get("spark.jars", "").split(",") if j.endswith(".jar")]
    if resolved:
        _jar_manifest().write_text("\n".join(resolved) + "\n")
    return spark
