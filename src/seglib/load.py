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


def _expected(spec: R.InputTable) -> str:
    return ", ".join(f"{spec.source_column(f.name)} {f.dataType.simpleString()}" for f in spec.schema.fields)


def _mapping_note(rec: R.Recipe, spec: R.InputTable) -> str:
    return f" (mapped by recipe file {rec.source})" if spec.columns or spec.table != spec.name else ""


def _read_raw(spark: SparkSession, table: str, where: TB.Location, recipe: str | R.Recipe = R.DEFAULT,
              missing_ok: bool = False) -> DataFrame | None:
    """One input table of *recipe* as stored (a catalog table, or a Delta folder under source_path), under
    the recipe's column names (a recipe's column mapping applied), with every contract column present
    (optional columns the table lacks are added as nulls). *missing_ok*: None when the table does not
    exist (an optional input)."""
    rec = R.get(recipe)
    spec = rec.tables[table]
    name = where.name(spec.table)
    try:
        df = TB.read_table(spark, spec.table, where)
        columns = set(df.columns)  # resolves the table now, so a missing one fails here
    except Exception as e:  # noqa: BLE001 - whatever the storage says, the user gets the table's name
        if isinstance(e, AnalysisException) and TB.is_missing_table(e):
            if missing_ok:
                return None
            place = (f"as Delta folders under {name.rsplit('/', 1)[0]}" if where.path(spec.table)
                     else f"in schema {where.schema_name}")
            tables = ", ".join(s.table for s in rec.tables.values())
            raise InputContractError(
                f"input table {name} does not exist. Expected the {rec.name} recipe's tables {tables} {place}; "
                f"{spec.table} needs columns: {_expected(spec)}{_mapping_note(rec, spec)}") from None
        raise InputContractError(f"input table {name} cannot be read: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}") from None
    fields = spec.schema.fields
    missing = [f.name for f in fields if spec.source_column(f.name) not in columns
               and f.name not in spec.optional_columns]
    if missing:
        shown = ", ".join(spec.source_column(c) + (f" (the recipe's {c})" if spec.source_column(c) != c else "")
                          for c in missing)
        raise InputContractError(
            f"input table {name} is missing column(s) {shown}; expected columns: {_expected(spec)}"
            f"{_mapping_note(rec, spec)}")
    if spec.columns:
        # The table under the recipe's names; its own columns that a mapped one would shadow are left out.
        renamed = {theirs: ours for ours, theirs in spec.columns.items() if theirs in columns}
        df = df.select(*[F.col(TB.quote(c)).alias(renamed.get(c, c)) for c in df.columns
                         if c in renamed or c not in renamed.values()])
        columns = set(df.columns)
    return df.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in fields if f.name not in columns])


def read_input(spark: SparkSession, table: str, where: TB.Location, recipe: str | R.Recipe = R.DEFAULT,
               missing_ok: bool = False) -> DataFrame | None:
    """One input table of *recipe*, present with its columns, typed as the contract says. The load step
    has checked every value casts; later steps read through here without repeating that pass.
    *missing_ok*: None for an optional input that does not exist."""
    df = _read_raw(spark, table, where, recipe, missing_ok)
    if df is None:
        return None
    return df.select([TB.try_cast(f.name, f.dataType).alias(f.name) for f in R.get(recipe).schema(table).fields])


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
              recipe: str | R.Recipe = R.DEFAULT) -> tuple[dict[str, DataFrame], LoadReport]:
    """The Gold tables, each checked against the contract; every violation found is reported in one
    InputContractError (a missing table or column first, then values)."""
    rec = R.get(recipe)
    raw = {t: _read_raw(spark, t, where, rec, missing_ok=t in rec.optional_inputs) for t in rec.inputs}
    absent = [t for t, df in raw.items() if df is None]
    raw = {t: df for t, df in raw.items() if df is not None}

    check_features(rec, raw)

    def check(table: str) -> tuple[DataFrame, C.TableCheck]:
        name = where.name(rec.tables[table].table)
        try:
            return C.check_table(raw[table], C.contract(table, rec), name)
        except InputContractError:
            raise
        except Exception as e:  # noqa: BLE001 - a Delta folder whose files cannot be read, say
            raise InputContractError(f"input table {name} cannot be read: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0]}") from None

    checked = parallel.each(check, list(raw))  # one aggregation pass per table, side by side
    tables = {t: df for t, (df, _) in zip(raw, checked)}
    checks = [found for _, found in checked]
    C.raise_violations(checks, rec)
    return tables, LoadReport(checks, absent)


def record_inputs(spark: SparkSession, counts: dict[str, int], where: TB.Location,
                  recipe: str | R.Recipe = R.DEFAULT) -> DataFrame:
    """The input tables' Delta versions and row counts as this run read them (for the run log), each under
    the name it was read by (a recipe's mapping may point elsewhere). The run's first write: it creates the
    output schema when outputs are catalog tables and inputs come from a path."""
    TB.ensure_schema(spark, [TB.SEG_INPUTS], where)
    rec = R.get(recipe)
    read = {t: rec.tables[t].table if t in rec.tables else t for t in counts}
    found = versions(spark, list(read.values()), where)
    rows = [(read[t], found[read[t]], n) for t, n in counts.items()]
    df = spark.createDataFrame(rows, "table string, version long, rows long")
    TB.save_table(df, TB.SEG_INPUTS, where)
    return df


def check_features(recipe: str | R.Recipe, raw: dict[str, DataFrame]) -> None:
    """Each feature's SQL expression analyses against the customers table (no job runs): a typo stops the
    run here, naming the recipe file and the feature."""
    rec = R.get(recipe)
    if rec.build != "columns" or rec.customers_table not in raw:
        return
    for name, sql in rec.feature_sql.items():
        try:
            raw[rec.customers_table].select(F.expr(sql).alias(name)).schema
        except Exception as e:  # noqa: BLE001 - parse and analysis errors alike
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputContractError(
                f"recipe file {rec.source}: key features.columns.{name}: {sql!r} is not a SQL expression over "
                f"{rec.customers_table}'s columns ({', '.join(raw[rec.customers_table].columns)}): {first}") from None


def preview(tables: dict[str, DataFrame], recipe: str | R.Recipe = R.DEFAULT, rows: int = 10):
    """The first rows of the table the recipe's customers come from, as pandas (for the notebook)."""
    return tables[R.get(recipe).customers_table].limit(rows).toPandas()


def overview(tables: dict[str, DataFrame], recipe: str | R.Recipe = R.DEFAULT):
    """A small shape of the input (pandas), as the recipe's ``overview`` says: customers per value of a
    column (``count_by``), or lines and distinct values per month (``by_month``, ``distinct``)."""
    rec = R.get(recipe)
    df, how = tables[rec.customers_table], rec.overview
    if how.get("by_month"):
        return (df.groupBy(F.date_format(how["by_month"], "yyyy-MM").alias("month"))
                .agg(F.count("*").alias("lines"),
                     *[F.count_distinct(c).alias(label) for label, c in (how.get("distinct") or {}).items()])
                .orderBy("month").toPandas())
    by = how.get("count_by") or rec.tables[rec.customers_table].key or rec.key
    return df.groupBy(by).count().orderBy(by).toPandas()
