"""Stage 1: read the Gold layer and check it against the recipe's input contract (seglib.contracts)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from . import contracts as C
from . import parallel
from . import recipes as R
from . import tables as TB
from .errors import InputContractError
from .publish import versions


def _expected(table: str) -> str:
    return ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in TB.INPUT_SCHEMAS[table].fields)


def _read_raw(spark: SparkSession, table: str, where: TB.Location,
              missing_ok: bool = False) -> DataFrame | None:
    """One Gold table as stored (a catalog table, or a Delta folder under source_path), with every
    contract column present (optional columns the table lacks are added as nulls). *missing_ok*: None
    when the table does not exist (an optional input)."""
    name = where.name(table)
    try:
        df = TB.read_table(spark, table, where)
        columns = set(df.columns)  # resolves the table now, so a missing one fails here
    except Exception as e:  # noqa: BLE001 - whatever the storage says, the user gets the table's name
        if isinstance(e, AnalysisException) and TB.is_missing_table(e):
            if missing_ok:
                return None
            place = (f"as Delta folders under {name.rsplit('/', 1)[0]}" if where.path(table)
                     else f"in schema {where.schema_name}")
            raise InputContractError(
                f"input table {name} does not exist. Expected the Gold tables "
                f"{', '.join(_inputs_of(table))} {place}; "
                f"{table} needs columns: {_expected(table)}") from None
        raise InputContractError(f"input table {name} cannot be read: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}") from None
    optional = TB.RETAIL_OPTIONAL.get(table, ())
    fields = TB.INPUT_SCHEMAS[table].fields
    missing = [f.name for f in fields if f.name not in columns and f.name not in optional]
    df = df.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in fields if f.name not in columns
                          and f.name in optional])
    if missing:
        raise InputContractError(
            f"input table {name} is missing column(s) {', '.join(missing)}; expected columns: {_expected(table)}")
    return df


def _inputs_of(table: str) -> tuple[str, ...]:
    return TB.RETAIL_INPUTS if table in TB.RETAIL_INPUTS else TB.GOLD_INPUTS


def read_input(spark: SparkSession, table: str, where: TB.Location,
               missing_ok: bool = False) -> DataFrame | None:
    """One Gold table, present with its columns, typed as the contract says. The load step has checked
    every value casts; later steps read through here without repeating that pass. *missing_ok*: None
    for an optional input that does not exist."""
    df = _read_raw(spark, table, where, missing_ok)
    if df is None:
        return None
    return df.select([TB.try_cast(f.name, f.dataType).alias(f.name) for f in TB.INPUT_SCHEMAS[table].fields])


@dataclass
class LoadReport:
    checks: list[C.TableCheck]
    absent: list[str] = field(default_factory=list)  # optional inputs that do not exist

    @property
    def rows(self) -> dict[str, int]:
        return {c.table: c.rows for c in self.checks}

    def lines(self) -> list[str]:
        out = [f"{c.name}: {c.rows:,} rows" for c in self.checks]
        out += [f"{t}: absent (optional; the outputs go without its columns)" for t in self.absent]
        notes = [n for c in self.checks for n in c.notes]
        out += ["soft issues (handled by policy, see README):", *[f"  - {n}" for n in notes]] if notes else \
            ["input contract: every rule holds"]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def load_gold(spark: SparkSession, where: TB.Location,
              recipe: str = "airline") -> tuple[dict[str, DataFrame], LoadReport]:
    """The Gold tables, each checked against the contract; every violation found is reported in one
    InputContractError (a missing table or column first, then values)."""
    rec = R.get(recipe)
    raw = {t: _read_raw(spark, t, where, missing_ok=t in rec.optional_inputs) for t in rec.inputs}
    absent = [t for t, df in raw.items() if df is None]
    raw = {t: df for t, df in raw.items() if df is not None}

    def check(table: str) -> tuple[DataFrame, C.TableCheck]:
        name = where.name(table)
        try:
            return C.check_table(raw[table], C.contract(table, rec.name), name)
        except InputContractError:
            raise
        except Exception as e:  # noqa: BLE001 - a Delta folder whose files cannot be read, say
            raise InputContractError(f"input table {name} cannot be read: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0]}") from None

    checked = parallel.each(check, list(raw))  # one aggregation pass per table, side by side
    tables = {t: df for t, (df, _) in zip(raw, checked)}
    checks = [found for _, found in checked]
    C.raise_violations(checks, rec.name)
    return tables, LoadReport(checks, absent)


def record_inputs(spark: SparkSession, counts: dict[str, int], where: TB.Location) -> DataFrame:
    """The Gold tables' Delta versions and row counts as this run read them (for the run log). The run's
    first write: it creates the output schema when outputs are catalog tables and inputs come from a path."""
    TB.ensure_schema(spark, [TB.SEG_INPUTS], where)
    found = versions(spark, list(counts), where)
    rows = [(t, found[t], n) for t, n in counts.items()]
    df = spark.createDataFrame(rows, "table string, version long, rows long")
    TB.save_table(df, TB.SEG_INPUTS, where)
    return df


def preview(tables: dict[str, DataFrame], recipe: str = "airline", rows: int = 10):
    """The first rows of the table the recipe's customers come from, as pandas (for the notebook)."""
    return tables[R.get(recipe).customers_table].limit(rows).toPandas()


def overview(tables: dict[str, DataFrame], recipe: str = "airline"):
    """A small shape of the input (pandas): airline customers per status; retail invoice lines,
    invoices and customers per month (the seasonality)."""
    if R.get(recipe).name == "airline":
        return tables[TB.KPI_CUSTOMER_VALUE].groupBy("customer_status").count().orderBy("customer_status").toPandas()
    lines = tables[TB.RETAIL_TRANSACTIONS]
    return (lines.groupBy(F.date_format("invoice_ts", "yyyy-MM").alias("month"))
            .agg(F.count("*").alias("lines"), F.count_distinct("invoice_id").alias("invoices"),
                 F.count_distinct("customer_id").alias("customers"))
            .orderBy("month").toPandas())
