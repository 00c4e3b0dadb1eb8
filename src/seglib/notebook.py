"""A notebook's set-up in one call: its parameters, its Spark and where its tables live."""
from __future__ import annotations

from typing import Any, NamedTuple

from pyspark.sql import SparkSession

from . import onelake
from .params import notebook_params
from .session import describe, get_spark
from .tables import Location


class Setup(NamedTuple):
    params: dict[str, Any]  # the typed, checked parameters (also written back into the notebook's globals)
    spark: SparkSession
    where: Location


def setup(namespace: dict, log=print) -> Setup:
    """Read the parameters the notebook's parameters cell declared (job parameters through widgets on
    Databricks), get the platform's Spark (a local one elsewhere), and make the run's Location (OAuth for
    abfss:// paths from the secret store). Prints which Spark and where the tables live."""
    params = notebook_params(namespace)
    spark = get_spark(params.get("lakehouse"))
    where, storage = onelake.setup_storage(spark, params, namespace)
    log(f"{describe(spark)}; {storage}")
    return Setup(params, spark, where)
