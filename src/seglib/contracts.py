"""Input contracts, one per recipe, in one place: which tables, columns, types, keys and value ranges the
pipeline needs, and what happens when the data breaks them (README, "What happens when the input is bad").

Hard rules stop the run in the load step with one message listing every violation found: the table,
the column, the rule, a count and a few example keys. Soft rules follow a documented policy and are
reported with counts:

- a value outside a plausible range (an age of 0 or 140) is treated as missing, so the null policy
  (impute or drop) decides what happens to it;
- a constant feature carries no information; the model keeps it (standardised it is 0 for everyone)
  and the report says so. Only when every feature is constant does the run stop;
- nulls in a feature and outliers are handled and counted by the features and cluster steps.

Types: a column whose type differs from the contract is accepted when every value casts (a string
"42" for an int); values that do not cast are a violation, never silently nulled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.utils import AnalysisException

from . import recipes as R
from . import tables as TB
from .errors import InputContractError

EXAMPLES = 5  # example keys (or values) per violation


@dataclass(frozen=True)
class Contract:
    """What one input table must satisfy: its recipe's InputTable (columns, types, rules) and the
    clustering features read from it, which must have values and are reported when constant."""
    spec: R.InputTable
    features: tuple[str, ...] = ()

    def __getattr__(self, name):
        if name == "spec":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.spec, name)  # table, schema, key, required, min_rows, non_negative, plausible

    @property
    def table(self) -> str:
        return self.spec.name

    def shown(self, column: str) -> str:
        """*column* as a message names it: the table's own column, with the recipe's name when mapped."""
        theirs = self.spec.source_column(column)
        return column if theirs == column else f"{theirs} (the recipe's {column})"


def contract(table: str, recipe: str | R.Recipe = R.DEFAULT) -> Contract:
    rec = R.get(recipe)
    spec = rec.tables[table]
    features = ()
    if table == rec.customers_table and rec.build == "columns":
        # Features that are plain columns of the table are checked here, before any step computes them.
        features = tuple(sql.strip() for sql in rec.feature_sql.values() if sql.strip() in spec.schema.names)
    return Contract(spec, features)


@dataclass
class TableCheck:
    """What checking one table found: its rows, the violations (hard) and the notes (soft)."""
    table: str
    name: str
    rows: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    constant: list[str] = field(default_factory=list)


def _quote(v) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _examples(df: DataFrame, condition: Column, shown: list[tuple[str, str]]) -> str:
    """', e.g. customer_key 3, 7' or ', e.g. customer_key 3 (value 'x')': the rows a user looks up first.
    *shown*: (column, label) pairs, the first one leading."""
    if not shown:
        return ""
    rows = df.where(condition).select(*[c for c, _ in shown]).limit(EXAMPLES).collect()
    if not rows:
        return ""
    lead = shown[0][1]
    parts = [_quote(r[0]) + "".join(f" ({label} {_quote(r[i])})" for i, (_, label) in enumerate(shown[1:], 1))
             for r in rows]
    return f", e.g. {lead} " + ", ".join(parts)


def _uncastable_columns(raw: DataFrame, schema: T.StructType) -> list[str]:
    """Columns whose type cannot be cast to the contract's at all (a struct for an int)."""
    bad = []
    for f in schema.fields:
        try:
            raw.select(TB.try_cast(f.name, f.dataType)).schema  # analysis only, no job
        except AnalysisException:
            bad.append(f.name)
    return bad


def check_table(raw: DataFrame, c: Contract, name: str) -> tuple[DataFrame, TableCheck]:
    """Check *raw* (which has every contract column) against *c*; returns it conformed to the contract's
    types, and what was found. One aggregation pass; one more small query per violation for examples."""
    found = TableCheck(c.table, name)
    types = dict(raw.dtypes)
    recast = [f.name for f in c.schema.fields if types[f.name] != f.dataType.simpleString()]
    typed_cols = [TB.try_cast(f.name, f.dataType).alias(f.name) for f in c.schema.fields]
    try:
        # The typed columns beside the raw values of the recast ones (for the cast check and examples).
        both = raw.select(*typed_cols, *[F.col(n).alias(f"_raw_{n}") for n in recast])
        both.schema  # analysis only: a type that cannot be cast at all fails here
    except AnalysisException:
        for col in _uncastable_columns(raw, c.schema):
            found.violations.append(f"{name}.{c.shown(col)}: type {types[col]} cannot be read as "
                                    f"{c.schema[col].dataType.simpleString()}")
        return raw, found
    typed = both.select(*[f.name for f in c.schema.fields])
    # Rows are identified by their key as written in the table (its raw value when the key is recast).
    key = [(f"_raw_{c.key}" if c.key in recast else c.key, c.key)] if c.key else []
    checks: dict[str, tuple[Column, str, list]] = {}  # alias -> (condition, message, example columns)
    for n in recast:
        checks[f"_cast_{n}"] = (F.col(f"_raw_{n}").isNotNull() & F.col(n).isNull(),
                                f"{name}.{c.shown(n)}: {{n}} value(s) cannot be read as "
                                f"{c.schema[n].dataType.simpleString()} (the column is {types[n]})",
                                key + [(f"_raw_{n}", "value")] if n != c.key else key)
    for n in c.required:
        checks[f"_null_{n}"] = (F.col(n).isNull(), f"{name}.{c.shown(n)}: {{n}} row(s) without a value (null)", [])
    if c.key:
        checks["_null_key"] = (F.col(key[0][0]).isNull(), f"{name}.{c.shown(c.key)}: {{n}} row(s) without a key (null)", [])
    for n in c.non_negative:
        checks[f"_neg_{n}"] = (F.col(n) < 0, f"{name}.{c.shown(n)}: {{n}} negative value(s), expected >= 0",
                               key + [(n, n)])
    aggs = [F.count(F.lit(1)).alias("_rows"), *[F.count_if(cond).alias(a) for a, (cond, _, _) in checks.items()]]
    if c.key:
        aggs += [F.count(c.key).alias("_keys"), F.count_distinct(c.key).alias("_distinct_keys")]
    for n in c.features:
        aggs += [F.count(n).alias(f"_n_{n}"), F.min(n).alias(f"_min_{n}"), F.max(n).alias(f"_max_{n}")]
    for n, (low, high) in c.plausible.items():
        aggs.append(F.count_if((F.col(n) < low) | (F.col(n) > high)).alias(f"_out_{n}"))
    stats = both.agg(*aggs).first()
    found.rows = stats["_rows"]
    if found.rows < c.min_rows:
        found.violations.append(f"{name}: {found.rows:,} rows, expected at least {c.min_rows:,}"
                                + (" (one per customer)" if c.key == "customer_key" else ""))
        return typed, found
    for alias, (cond, message, shown) in checks.items():
        if stats[alias]:
            found.violations.append(message.format(n=f"{stats[alias]:,}") + _examples(both, cond, shown))
    if c.key and stats["_keys"] > stats["_distinct_keys"]:
        dupes = (typed.where(F.col(c.key).isNotNull()).groupBy(c.key).count().where("count > 1")
                 .orderBy(c.key).limit(EXAMPLES).collect())
        found.violations.append(
            f"{name}.{c.shown(c.key)}: {stats['_keys'] - stats['_distinct_keys']:,} duplicate key row(s), expected one row "
            f"per {c.key}, e.g. {c.key} " + ", ".join(f"{_quote(r[0])} ({r['count']} rows)" for r in dupes))
    for n in c.features:
        if found.rows and not stats[f"_n_{n}"]:
            found.violations.append(f"{name}.{c.shown(n)}: null in all {found.rows:,} rows; it is a clustering feature "
                                    f"and needs values")
        elif stats[f"_min_{n}"] == stats[f"_max_{n}"]:
            found.constant.append(n)
            found.notes.append(f"{name}.{c.shown(n)}: constant (every value {stats[f'_min_{n}']}); it carries no "
                               f"information for the clustering")
    usable = [n for n in c.features if stats[f"_n_{n}"]]
    if usable and len(found.constant) == len(usable):
        found.violations.append(f"{name}: every clustering feature is constant ({', '.join(found.constant)}); "
                                f"there is nothing to segment on")
    for n, (low, high) in c.plausible.items():
        if stats[f"_out_{n}"]:
            found.notes.append(f"{name}.{c.shown(n)}: {stats[f'_out_{n}']:,} value(s) outside {low:g}-{high:g}, "
                               f"treated as missing (the null policy applies)")
    return typed, found


def plausible(df: DataFrame, table: str, recipe: str | R.Recipe = R.DEFAULT) -> DataFrame:
    """*df* with values outside the contract's plausible ranges set to null (the soft-rule policy)."""
    for col, (low, high) in contract(table, recipe).plausible.items():
        if col in df.columns:
            df = df.withColumn(col, F.when(F.col(col).between(low, high), F.col(col)))
    return df


def raise_violations(checks: list[TableCheck], recipe: str | R.Recipe = R.DEFAULT) -> None:
    problems = [v for ch in checks for v in ch.violations]
    if problems:
        raise InputContractError(f"the input breaks the {recipe} contract ({len(problems)} problem(s)); "
                                 f"nothing was written:\n  - " + "\n  - ".join(problems))
