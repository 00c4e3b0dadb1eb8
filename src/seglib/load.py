"""Stage 1: read the Gold layer and check it against the input contract."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from . import tables as TB
from .errors import InputContractError



def _expected(table: str) -> str:
    return ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in TB.INPUT_SCHEMAS[table].fields)


def read_input(spark: SparkSession, table: str, schema: str, catalog: str | None = None) -> DataFrame:
    """One Gold table (a catalog table, or a Delta folder under source_path), checked for presence
    and columns, cast to the contract's types."""
    name = TB.table_name(table, schema, catalog)
    try:
        df = TB.read_table(spark, table, schema, catalog)
        columns = set(df.columns)  # resolves the table now, so a missing one fails here
    except AnalysisException as e:
        if TB.is_missing_table(e):
            where = (f"as Delta folders under {name.rsplit('/', 1)[0]}" if TB.table_path(table)
                     else f"in schema {TB.schema_name(schema, catalog)}")
            raise InputContractError(
                f"input table {name} does not exist. Expected the Gold tables "
                f"{', '.join(TB.GOLD_INPUTS)} {where}; "
                f"{table} needs columns: {_expected(table)}") from None
        raise
    missing = [f.name for f in TB.INPUT_SCHEMAS[table].fields if f.name not in columns]
    if missing:
        raise InputContractError(
            f"input table {name} is missing column(s) {', '.join(missing)}; expected columns: {_expected(table)}")
    return TB.conform(df, TB.INPUT_SCHEMAS[table])


def record_inputs(spark: SparkSession, counts: dict[str, int], schema: str, catalog: str | None = None) -> DataFrame:
    """The Gold tables' Delta versions and row counts as this run read them (for the run log)."""
    rows = [(t, TB.table_version(spark, t, schema, catalog), n) for t, n in counts.items()]
    df = spark.createDataFrame(rows, "table string, version long, rows long")
    TB.save_table(df, TB.SEG_INPUTS, schema, catalog)
    return df


def load_gold(spark: SparkSession, schema: str, catalog: str | None = None) -> dict[str, DataFrame]:
    """The four Gold tables, each checked; the first problem found stops the run."""
    return {t: read_input(spark, t, schema, catalog) for t in TB.GOLD_INPUTS}
