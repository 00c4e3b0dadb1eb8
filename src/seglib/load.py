"""Stage 1: read the Gold layer and check it against the input contract."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from . import tables as TB
from .errors import InputContractError

GOLD_INPUTS = [TB.DIM_CUSTOMERS, TB.FACT_FLIGHTS, TB.FACT_TRANSACTIONS, TB.KPI_CUSTOMER_VALUE]


def _expected(table: str) -> str:
    return ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in TB.INPUT_SCHEMAS[table].fields)


def read_input(spark: SparkSession, table: str, schema: str, catalog: str | None = None) -> DataFrame:
    """One Gold table, checked for presence and columns, cast to the contract's types."""
    name = TB.qualified(table, schema, catalog)
    try:
        df = spark.read.table(name)
        columns = set(df.columns)  # resolves the table now, so a missing one fails here
    except AnalysisException as e:
        if "TABLE_OR_VIEW_NOT_FOUND" in str(e) or "SCHEMA_NOT_FOUND" in str(e) or "not found" in str(e).lower():
            raise InputContractError(
                f"input table {name} does not exist. Expected the Gold tables "
                f"{', '.join(GOLD_INPUTS)} in schema {TB.schema_name(schema, catalog)}; "
                f"{table} needs columns: {_expected(table)}") from None
        raise
    missing = [f.name for f in TB.INPUT_SCHEMAS[table].fields if f.name not in columns]
    if missing:
        raise InputContractError(
            f"input table {name} is missing column(s) {', '.join(missing)}; expected columns: {_expected(table)}")
    return TB.conform(df, TB.INPUT_SCHEMAS[table])


def load_gold(spark: SparkSession, schema: str, catalog: str | None = None) -> dict[str, DataFrame]:
    """The four Gold tables, each checked; the first problem found stops the run."""
    return {t: read_input(spark, t, schema, catalog) for t in GOLD_INPUTS}
