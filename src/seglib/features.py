"""Stage 2: the seven clustering features as doubles, the lab's RFM scores, and the null policy."""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import contracts as C
from . import recipes as R
from . import tables as TB
from .errors import InputContractError, ParameterError

FEATURES = list(C.FEATURES)  # the airline recipe's (seglib.recipes); retail's come from seglib.rfm
NULL_POLICIES = ("impute", "drop")

# The lab's RFM thresholds: (bound, score), first match wins.
RECENCY_MAX_DAYS = [(90, 5), (180, 4), (365, 3), (730, 2)]          # days <= bound, else 1
FREQUENCY_MIN_FLIGHTS = [(40, 5), (20, 4), (10, 3), (5, 2)]         # flights >= bound, else 1
MONETARY_MIN_POINTS = [(50_000, 5), (20_000, 4), (10_000, 3), (5_000, 2)]  # points >= bound, else 1


def _score(value: Column, rules: list[tuple[int, int]], at_most: bool) -> Column:
    expr = None
    for bound, score in rules:
        cond = value <= bound if at_most else value >= bound
        expr = F.when(cond, score) if expr is None else expr.when(cond, score)
    return expr.otherwise(1).cast("int")


def recency_score(days: Column) -> Column:
    return _score(days, RECENCY_MAX_DAYS, at_most=True)


def frequency_score(flights: Column) -> Column:
    return _score(flights, FREQUENCY_MIN_FLIGHTS, at_most=False)


def monetary_score(points: Column) -> Column:
    return _score(points, MONETARY_MIN_POINTS, at_most=False)


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


def build_features(kpi: DataFrame, null_policy: str = "impute") -> tuple[DataFrame, FeatureReport]:
    """customer_key, the seven features as double, recency/frequency/monetary scores.

    ``impute`` fills a null feature with its median (every customer gets segmented); ``drop`` leaves
    customers with any null feature out (they are reported, and written as unsegmented).
    """
    if null_policy not in NULL_POLICIES:
        raise ParameterError(f"null_policy must be one of {', '.join(NULL_POLICIES)}, got {null_policy!r}")
    ranged = list(C.contract(TB.KPI_CUSTOMER_VALUE).plausible)
    df = kpi.select("customer_key", *[F.col(c).cast("double").alias(c) for c in FEATURES],
                    *[F.col(c).cast("double").alias(f"_was_{c}") for c in ranged])
    df = C.plausible(df, TB.KPI_CUSTOMER_VALUE)
    # One pass for all counts and quartiles, one more for the outliers beyond them.
    stats = df.agg(
        F.count("*").alias("_rows"),
        *[F.count_if(F.col(c).isNull()).alias(f"_null_{c}") for c in FEATURES],
        *[F.count_if(F.col(f"_was_{c}").isNotNull() & F.col(c).isNull()).alias(f"_implausible_{c}")
          for c in ranged],
        *[F.percentile_approx(c, [0.25, 0.5, 0.75], 10_000).alias(f"_q_{c}") for c in FEATURES],
    ).first()
    rows_in = stats["_rows"]
    nulls = {c: stats[f"_null_{c}"] for c in FEATURES}
    if not rows_in:
        raise InputContractError(f"input table {TB.KPI_CUSTOMER_VALUE} has no rows; expected one row per customer")
    for c in FEATURES:
        if rows_in and nulls[c] == rows_in:
            raise InputContractError(
                f"input table {TB.KPI_CUSTOMER_VALUE}: column {c} is null in all {rows_in:,} rows; "
                f"it is a clustering feature and needs values")
    implausible = {c: stats[f"_implausible_{c}"] for c in ranged}
    df = df.drop(*[f"_was_{c}" for c in ranged])
    fences = {c: stats[f"_q_{c}"][2] + 3 * (stats[f"_q_{c}"][2] - stats[f"_q_{c}"][0]) for c in FEATURES}
    far = df.agg(*[F.count_if(F.col(c) > fences[c]).alias(c) for c in FEATURES]).first()
    imputed = {}
    if null_policy == "impute":
        imputed = {c: float(stats[f"_q_{c}"][1]) for c in FEATURES if nulls[c]}
        df = df.fillna(imputed) if imputed else df  # Spark refuses an empty fill
        rows_out = rows_in
    else:
        df = df.dropna(subset=FEATURES)
        rows_out = df.count() if any(nulls.values()) else rows_in
    df = df.select("*",
                   recency_score(F.col("days_since_last_flight")).alias("recency_score"),
                   frequency_score(F.col("total_flights")).alias("frequency_score"),
                   monetary_score(F.col("total_loyalty_points")).alias("monetary_score"))
    return df, FeatureReport(rows_in, rows_out, nulls, null_policy, imputed, implausible,
                             {c: far[c] for c in FEATURES})


# ---------------------------------------------------------------------------------------------
# Per recipe: what the features step reads, and how it builds seg_features
# ---------------------------------------------------------------------------------------------
def feature_inputs(spark, where: TB.Location, recipe: str = "airline") -> dict[str, DataFrame]:
    """The input tables the recipe's features come from (an optional one only when it exists)."""
    from .load import read_input
    rec = R.get(recipe)
    tables = {t: read_input(spark, t, where, missing_ok=t in rec.optional_inputs)
              for t in rec.feature_inputs}
    return {t: df for t, df in tables.items() if df is not None}


def build_retail_features(transactions: DataFrame, customers: DataFrame | None = None, as_of=None,
                          rfm_bins: int = 4, null_policy: str = "impute") -> tuple[DataFrame, FeatureReport]:
    """customer_key (the customer_id), recency_days, frequency, monetary, first/last purchase, the R, F
    and M scores, the rule segment (seglib.rfm), and the customer attributes when *customers* is given.

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
        raise InputContractError(f"input table {TB.RETAIL_TRANSACTIONS}: no line with a customer_id on or before "
                                 f"as_of {as_of.isoformat()}; expected invoice lines of identified customers")
    scored = rfm.segment_rfm(rfm.rfm_scores(customer_rfm, bins), bins)
    if customers is not None:
        attributes = customers.select("customer_id", *TB.RETAIL_ATTRIBUTE_COLUMNS)
        scored = scored.join(attributes, "customer_id", "left")
    df = scored.withColumn("customer_key", F.col("customer_id")).select(
        "customer_key", *[c for c in scored.columns if c != "customer_id"])
    report = FeatureReport(found.customers, found.customers, {c: 0 for c in R.RETAIL.features}, null_policy,
                           notes=found.lines() + [f"  scores in {bins} bins (rfm_bins)"])
    return df, report


def build_recipe_features(inputs: dict[str, DataFrame], recipe: str = "airline", null_policy: str = "impute",
                          as_of=None, rfm_bins: int = 4) -> tuple[DataFrame, FeatureReport]:
    """The features step of *recipe*, from feature_inputs(...)."""
    if R.get(recipe).name == "airline":
        return build_features(inputs[TB.KPI_CUSTOMER_VALUE], null_policy)
    return build_retail_features(inputs[TB.RETAIL_TRANSACTIONS], inputs.get(TB.RETAIL_CUSTOMERS), as_of or None,
                                 rfm_bins, null_policy)
