"""One way for notebooks to get Spark.

In Databricks or Fabric the platform's session is used as it is. Anywhere else seglib uses a local Spark
with Delta and a catalog under a *lakehouse* folder (seglib.local.spark, installed by the local extra), so
a table one notebook process saves is read by the next with ``spark.read.table``. Nothing here imports
seglib.local unless a session has to be made on a laptop.
"""
from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession

DEFAULT_LAKEHOUSE = ".lakehouse"


def is_managed_runtime() -> bool:
    """True inside Databricks (classic or serverless) or Microsoft Fabric."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    try:  # Fabric and Synapse expose notebookutils; nothing else does.
        import notebookutils  # type: ignore  # noqa: F401
        return True
    except ImportError:
        return False


def get_spark(lakehouse: str | os.PathLike | None = None, app_name: str = "seglib") -> SparkSession:
    """The active session if there is one (Databricks, Fabric, a test's); else the platform's (or
    SPARK_REMOTE's); else, on a laptop, the lakehouse's kept Spark server if one is up, or a local session
    of this process (seglib.local)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if is_managed_runtime() or os.environ.get("SPARK_REMOTE"):
        return SparkSession.builder.getOrCreate()
    from .local.server import laptop_spark
    return laptop_spark(lakehouse or DEFAULT_LAKEHOUSE, app_name)


# Databricks serverless has no cache: DataFrame.cache()/persist()/unpersist() raise
# [NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported on serverless compute.
_NO_CACHE = "NOT_SUPPORTED_WITH_SERVERLESS"


def _no_cache_here(error: Exception) -> bool:
    condition = getattr(error, "getCondition", None)
    return _NO_CACHE in str(error) or (callable(condition) and condition() == _NO_CACHE)


def cache(df: DataFrame) -> DataFrame:
    """*df* cached, where the compute has a cache; *df* itself on Databricks serverless, which has none:
    there each action computes it anew from its inputs (the same rows: seglib's steps are deterministic)."""
    try:
        return df.cache()
    except Exception as e:  # noqa: BLE001 - only "no cache on this compute" is expected
        if _no_cache_here(e):
            return df
        raise


def uncache(df: DataFrame | None) -> None:
    """Free what cache() cached: a kept local server or a shared cluster runs many jobs, and a cached
    DataFrame outlives the session that cached it."""
    if df is None:
        return
    try:
        df.unpersist()
    except Exception as e:  # noqa: BLE001
        if not _no_cache_here(e):
            raise


def describe(spark: SparkSession) -> str:
    """One line for a notebook's first output: which Spark, and whether it is a Spark Connect client."""
    kind = "Spark Connect" if type(spark).__module__.startswith("pyspark.sql.connect") else "classic"
    return f"Spark {spark.version} ({kind})"


