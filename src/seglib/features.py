"""Stage 2: the recipe's clustering features as doubles (SQL expressions over its customers table, or a
named builder such as seglib.rfm), its scores, and the null policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import contracts as C
from . import recipes as R
from . import tables as TB
from .errors import InputContractError, ParameterError

FEATURES = list(R.get().features)  # the default recipe's, for readers of this module
NULL_POLICIES = ("impute", "drop")


def score_column(value: Column, score: R.Score) -> Column:
    """The first rule (bound, score) *value* meets (<= bound with at_most, else >= bound), else 1."""
    expr = None
    for bound, points in score.rules:
        cond = value <= bound if score.at_most else value >= bound
        expr = F.when(cond, points) if expr is None else expr.when(cond, points)
    return expr.otherwise(1).cast("int")


# The lab's RFM scores, as the default (airline) recipe defines them.
def recency_score(days: Column) -> Column:
    return score_column(days, R.get().scores["recency_score"])


def frequency_score(flights: Column) -> Column:
    return score_column(flights, R.get().scores["frequency_score"])


def monetary_score(points: Column) -> Column:
    return score_column(points, R.get().scores["monetary_score"])


@dataclass
class FeatureReport:
    rows_in: int
    rows_out: int
    null_counts: dict[str, int]
    policy: str
    imputed_with: dict[str, float] = field(default_factory=dict)
    implausible: dict[str, int] = field(default_factory=dict)  # values outside the contract's range, nulled
    outliers: dict[str, int] = field(default_factory=dict)     # beyond 3 IQR of the quartiles
    notes: list[str] = field(default_factory=list)             # the recipe's own (retail: what RFM left out)

    @property
    def dropped(self) -> int:
        return self.rows_in - self.rows_out

    def save(self, spark, where: TB.Location) -> None:
        """Handed over to the write step's run log."""
        df = spark.createDataFrame([(self.policy, self.rows_in, self.rows_out, self.null_counts)],
                                   "null_policy string, rows_in long, rows_out long, null_counts map<string,long>")
        TB.save_table(df, TB.SEG_FEATURE_REPORT, where)

    def lines(self) -> list[str]:
        out = [f"{self.rows_in:,} customers in, {self.rows_out:,} with features (null policy: {self.policy})",
               *self.notes]
        for col, n in self.implausible.items():
            if n:
                out.append(f"  {col}: {n:,} implausible value(s) treated as missing (counted in the nulls below)")
        for col, n in self.null_counts.items():
            if n:
                how = (f"imputed with median {self.imputed_with[col]:g}" if self.policy == "impute"
                       else "rows dropped")
                out.append(f"  {col}: {n:,} null -> {how}")
        if not any(self.null_counts.values()):
            out.append("  no nulls in any feature")
        far = {c: n for c, n in self.outliers.items() if n}
        if far:
            out.append("  outliers (beyond 3 IQR of the quartiles; the log1p transform clips model inputs to "
                       "their 1st-99th percentiles): " + ", ".join(f"{c} {n:,}" for c, n in far.items()))
        return out


def build_features(customers: DataFrame, null_policy: str = "impute",
                   recipe: str | R.Recipe = R.DEFAULT,
                   inputs: dict[str, DataFrame] | None = None) -> tuple[DataFrame, FeatureReport]:
    """customer_key, the recipe's features as doubles (its SQL expressions over the customers table), its
    scores, and its profile columns (names and profiles rest on them; the model does not), computed from
    the input tables in *inputs* and joined by key.

    ``impute`` fills a null feature with its median (every customer gets segmented); ``drop`` leaves
    customers with any null feature out (they are reported, and written as unsegmented). A null profile
    column always gets the median: it never costs a customer their segment.
    """
    if null_policy not in NULL_POLICIES:
        raise ParameterError(f"null_policy must be one of {', '.join(NULL_POLICIES)}, got {null_policy!r}")
    rec = R.get(recipe)
    table = rec.customers_table
    features = list(rec.features)
    key = rec.tables[table].key or rec.key
    # Values outside the contract's plausible ranges become null before the features are computed.
    ranged = [c for c in C.contract(table, rec).plausible if c in customers.columns]
    src = C.plausible(customers.select("*", *[F.col(c).alias(f"_was_{c}") for c in ranged]), table, rec)
    df = src.select(F.col(key).alias("customer_key"),
                    *[F.expr(sql).cast("double").alias(name) for name, sql in rec.feature_sql.items()],
                    *[F.col(f"_was_{c}") for c in ranged], *[F.col(c).alias(f"_now_{c}") for c in ranged])
    given = {table: customers, **(inputs or {})}
    df = _with_profile_columns(df, rec, given)
    named = [c for c, (t, _) in rec.profile_columns.items() if t in given]
    # One pass for all counts and quartiles, one more for the outliers beyond them.
    stats = df.agg(
        F.count("*").alias("_rows"),
        *[F.count_if(F.col(c).isNull()).alias(f"_null_{c}") for c in features],
        *[F.count_if(F.col(f"_was_{c}").isNotNull() & F.col(f"_now_{c}").isNull()).alias(f"_implausible_{c}")
          for c in ranged],
        *[F.percentile_approx(c, [0.25, 0.5, 0.75], 10_000).alias(f"_q_{c}") for c in features],
        *[F.count_if(F.col(c).isNull()).alias(f"_null_{c}") for c in named],
        *[F.percentile_approx(c, 0.5, 10_000).alias(f"_median_{c}") for c in named],
    ).first()
    rows_in = stats["_rows"]
    nulls = {c: stats[f"_null_{c}"] for c in features}
    if not rows_in:
        raise InputContractError(f"input table {table} has no rows; expected one row per customer")
    for c in features:
        if rows_in and nulls[c] == rows_in:
            raise InputContractError(
                f"input table {table}: column {c} is null in all {rows_in:,} rows; "
                f"it is a clustering feature and needs values")
    implausible = {c: stats[f"_implausible_{c}"] for c in ranged}
    df = df.drop(*[f"_was_{c}" for c in ranged], *[f"_now_{c}" for c in ranged])
    fences = {c: stats[f"_q_{c}"][2] + 3 * (stats[f"_q_{c}"][2] - stats[f"_q_{c}"][0]) for c in features}
    far = df.agg(*[F.count_if(F.col(c) > fences[c]).alias(c) for c in features]).first()
    imputed = {}
    if null_policy == "impute":
        imputed = {c: float(stats[f"_q_{c}"][1]) for c in features if nulls[c]}
        df = df.fillna(imputed) if imputed else df  # Spark refuses an empty fill
        rows_out = rows_in
    else:
        df = df.dropna(subset=features)
        rows_out = df.count() if any(nulls.values()) else rows_in
    notes = [f"  {c}: not computed ({t} not given): names rest on the features alone"
             for c, (t, _) in rec.profile_columns.items() if t not in given]
    for c in named:
        if stats[f"_null_{c}"]:
            median = stats[f"_median_{c}"]
            df = df.fillna({c: float(median if median is not None else 0.0)})
            notes.append(f"  {c}: {stats[f'_null_{c}']:,} null -> median {median if median is not None else 0:g} "
                         f"(a profile column: names and profiles only)")
    df = df.select("*", *[score_column(F.col(s.column), s).alias(name) for name, s in rec.scores.items()])
    return df, FeatureReport(rows_in, rows_out, nulls, null_policy, imputed, implausible,
                             {c: far[c] for c in features}, notes)


def _with_profile_columns(df: DataFrame, rec: R.Recipe, tables: dict[str, DataFrame]) -> DataFrame:
    """*df* (customer_key, ...) with the recipe's profile columns of the *tables* given, one left join each."""
    by_table: dict[str, list[tuple[str, str]]] = {}
    for name, (table, sql) in rec.profile_columns.items():
        by_table.setdefault(table, []).append((name, sql))
    for table, columns in by_table.items():
        if table not in tables:
            continue  # a direct call without that table: reported by build_features
        key = rec.tables[table].key
        values = tables[table].select(F.col(key).alias("customer_key"),
                                      *[F.expr(sql).cast("double").alias(name) for name, sql in columns])
        df = df.join(values, "customer_key", "left")
    return df


# ---------------------------------------------------------------------------------------------
# Per recipe: what the features step reads, and how it builds seg_features
# ---------------------------------------------------------------------------------------------
def feature_inputs(spark, where: TB.Location, recipe: str | R.Recipe = R.DEFAULT) -> dict[str, DataFrame]:
    """The input tables the recipe's features come from (an optional one only when it exists)."""
    from .load import read_input
    rec = R.get(recipe)
    tables = {t: read_input(spark, t, where, rec, missing_ok=t in rec.optional_inputs)
              for t in rec.feature_inputs}
    return {t: df for t, df in tables.items() if df is not None}


def build_retail_features(transactions: DataFrame, customers: DataFrame | None = None, as_of=None,
                          rfm_bins: int = 4, null_policy: str = "impute", attributes: tuple[str, ...] = (),
                          table: str = TB.RETAIL_TRANSACTIONS) -> tuple[DataFrame, FeatureReport]:
    """customer_key (the customer_id), recency_days, frequency, monetary, first/last purchase, the R, F
    and M scores, the rule segment (seglib.rfm), and the *attributes* columns of *customers* when given.

    RFM leaves no feature null (every customer has a purchase line or a cancellation), so the null
    policy has nothing to do; it is recorded as given."""
    from . import rfm
    if null_policy not in NULL_POLICIES:
        raise ParameterError(f"null_policy must be one of {', '.join(NULL_POLICIES)}, got {null_policy!r}")
    bins = rfm.parse_rfm_bins(rfm_bins)
    as_of = rfm.parse_as_of(as_of) if isinstance(as_of, str) else as_of
    as_of = rfm.default_as_of(transactions) if as_of is None else as_of
    customer_rfm, found = rfm.customer_rfm_and_report(transactions, as_of)
    if not found.customers:
        raise InputContractError(f"input table {table}: no line with a customer_id on or before "
                                 f"as_of {as_of.isoformat()}; expected invoice lines of identified customers")
    scored = rfm.segment_rfm(rfm.rfm_scores(customer_rfm, bins), bins)
    if customers is not None:
        carried = customers.select("customer_id", *[c for c in attributes if c in customers.columns])
        scored = scored.join(carried, "customer_id", "left")
    df = scored.withColumn("customer_key", F.col("customer_id")).select(
        "customer_key", *[c for c in scored.columns if c != "customer_id"])
    report = FeatureReport(found.customers, found.customers, {c: 0 for c in rfm.RFM_FEATURES}, null_policy,
                           notes=found.lines() + [f"  scores in {bins} bins (rfm_bins)"])
    return df, report


def build_recipe_features(inputs: dict[str, DataFrame], recipe: str | R.Recipe = R.DEFAULT, null_policy: str = "impute",
                          as_of=None, rfm_bins: int = 4) -> tuple[DataFrame, FeatureReport]:
    """The features step of *recipe*, from feature_inputs(...), by the builder the recipe names."""
    rec = R.get(recipe)
    if rec.build == "columns":
        return build_features(inputs[rec.customers_table], null_policy, rec, inputs)
    # rfm: the customers table lists invoice lines; another input, when present, the customers' attributes.
    people = next((inputs[t] for t in rec.inputs if t != rec.customers_table and t in inputs), None)
    return build_retail_features(inputs[rec.customers_table], people, as_of or None, rfm_bins, null_policy,
                                 rec.attributes, rec.tables[rec.customers_table].table)
