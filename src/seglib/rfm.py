"""Retail recipe, RFM stage: recency, frequency and monetary value per customer, their quantile scores
and six rule segments.

Input: invoice lines shaped like the retail recipe's retail_transactions (seglib/recipes/retail.yml).

**Lines.** A *cancellation* is a line whose ``invoice_id`` starts with "C" and/or whose ``quantity`` is
negative (UCI Online Retail convention: cancellations carry a negative quantity). A *purchase line* is
any other line with an ``invoice_id``. A line's day is ``to_date(invoice_ts)`` in the Spark session's
time zone.

**as_of.** The reference day. By default (``as_of`` empty) it is the day after the last transaction
day in the table, never the wall clock, so reruns on the same data agree. Lines dated after ``as_of``
are left out; lines on ``as_of`` itself count (recency 0). Lines without a customer or a timestamp are
left out too. ``rfm_report`` counts every line left out, by reason.

**Per customer** (one row per ``customer_id`` with a line kept):

- ``recency_days`` = as_of - day of the last purchase line;
- ``frequency`` = distinct ``invoice_id`` among purchase lines;
- ``monetary`` = sum(quantity * unit_price) over all kept lines, cancellations included, so they net
  (a cancelled purchase adds +x then -x); summed exactly in decimal, then rounded to cents;
- ``first_purchase``, ``last_purchase`` = days of the first and last purchase line.

A customer whose lines are all cancellations (typically of a purchase older than the data) has
``frequency`` 0 and takes recency and the two days from their cancellation lines. Such customers,
and those whose net revenue is <= 0, are kept: they are customers, they score lowest on F (frequency
0) or M, and ``rfm_report`` counts them.

**Scores** (``rfm_scores``, bins 4 or 5; higher = better): with ``below`` = the number of customers
whose value is worse (for R: more days; for F and M: less) and ``n`` the customers,

    score = min(bins, 1 + floor(bins * below / (n - 1)))      (1 when n = 1)

which is ``least(bins, 1 + floor(bins * percent_rank()))`` over the value: equal values get equal
scores, a value shared by every customer scores 1.

**Segments** (``segment_rfm``) follow from the scores and ``one purchase`` (frequency = 1). Each score
falls in a band: L = 1-2, M = 3 .. bins-2 (only 3 with bins 5; none with 4), H = bins-1 .. bins.

    segment         one purchase  R     F     M
    New Customers   yes           H     any   any
    Champions       no            H     H     H
    Loyal           no            M     H     any
    Loyal           no            H     H     L/M
    At Risk         any           L     H     any
    At Risk         any           L     L/M   H
    Churned         any           L     L     L/M
    Regular         no            M/H   L/M   any
    Regular         yes           M     any   any
    Regular         any           L     M     L/M

The rows are mutually exclusive and together cover every combination, so their order does not
matter: New Customers = one purchase and recent; Champions = high on all three; Loyal = recent-ish
(M/H) and frequent, not a Champion; At Risk = not recent but high F or high M; Churned = not recent,
low F and not high M; Regular = the rest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import product

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from . import tables as TB
from .errors import InputContractError, ParameterError
from .session import cache

CHAMPIONS = "Champions"
LOYAL = "Loyal"
REGULAR = "Regular"
NEW_CUSTOMERS = "New Customers"
AT_RISK = "At Risk"
CHURNED = "Churned"
RFM_SEGMENTS = (CHAMPIONS, LOYAL, REGULAR, NEW_CUSTOMERS, AT_RISK, CHURNED)

RFM_BINS = (4, 5)
RFM_COLUMNS = ("customer_id", "recency_days", "frequency", "monetary", "first_purchase", "last_purchase")
RFM_FEATURES = RFM_COLUMNS[1:4]  # what a recipe with the rfm builder clusters on
SCORE_COLUMNS = ("r_score", "f_score", "m_score")
_NEEDED = ("invoice_id", "customer_id", "invoice_ts", "quantity", "unit_price")
_RFM_TABLE = "customer RFM (customer_rfm's output)"
_SCORED_TABLE = "scored customer RFM (rfm_scores' output)"
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- parameters ----------------------------------------------------------------------------------------

def parse_rfm_bins(value, name: str = "rfm_bins") -> int:
    """4 or 5 (an int or its text)."""
    text = "" if value is None or isinstance(value, bool) else str(value).strip()
    if text not in {str(b) for b in RFM_BINS}:
        raise ParameterError(f"{name} must be 4 or 5 (score levels of R, F and M), got {value!r}")
    return int(text)


def parse_as_of(value, name: str = "as_of") -> date | None:
    """"" (or None) -> None, meaning the default (``default_as_of``); "YYYY-MM-DD" (or a date) -> that day."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        if not _ISO_DAY.match(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ParameterError(f"{name} must be empty (the day after the last transaction) or a day "
                             f"YYYY-MM-DD, got {value!r}") from None


def _check_as_of(as_of) -> date:
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise ParameterError(f"as_of must be a date (YYYY-MM-DD), got {as_of!r}")
    return as_of


def _require(df: DataFrame, columns, table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputContractError(f"{table}: column(s) {', '.join(missing)} missing; expected "
                                 f"{', '.join(columns)} (has {', '.join(df.columns)})")


# -- per customer --------------------------------------------------------------------------------------

def default_as_of(transactions: DataFrame) -> date:
    """The day after the last transaction day: from the data, not the clock, so reruns agree."""
    _require(transactions, ("invoice_ts",), f"input table {TB.RETAIL_TRANSACTIONS}")
    last = transactions.agg(F.max(F.to_date("invoice_ts"))).first()[0]
    if last is None:
        raise InputContractError(f"input table {TB.RETAIL_TRANSACTIONS}: column invoice_ts has no values; "
                                 f"expected invoice timestamps (the default as_of is the day after the last)")
    return last + timedelta(days=1)


def _by_customer(transactions: DataFrame, as_of: date | None, check: bool = True) -> DataFrame:
    """One row per customer_id (one for all lines without one), with the RFM columns over the kept
    lines and the line counts rfm_report sums. Lines left out still count in the line counts.
    as_of None: the default, computed inside the query (no job now). check False: the input's columns
    are not looked at now (a pipeline's query function may not analyse a DataFrame; a missing column
    then fails when the query runs, naming it)."""
    if check:
        _require(transactions, _NEEDED, f"input table {TB.RETAIL_TRANSACTIONS}")
    day = F.to_date("invoice_ts")
    if as_of is None:
        last_day = transactions.agg(F.date_add(F.max(day), 1).alias("_as_of"))
        transactions = transactions.crossJoin(F.broadcast(last_day))
        row_as_of, group_as_of = F.col("_as_of"), F.max("_as_of")
    else:
        row_as_of = group_as_of = F.lit(as_of)
    cancel = (F.coalesce(F.col("invoice_id").startswith("C"), F.lit(False))
              | F.coalesce(F.col("quantity") < 0, F.lit(False)))
    kept = F.col("customer_id").isNotNull() & day.isNotNull() & (day <= row_as_of)
    buy = kept & ~cancel & F.col("invoice_id").isNotNull()
    # Decimal, so the sum is exact and the same whatever order Spark adds the lines in.
    revenue = F.col("unit_price").cast("decimal(20,6)") * F.col("quantity").cast("decimal(10,0)")
    last = F.coalesce(F.max(F.when(buy, day)), F.max(F.when(kept, day)))
    first = F.coalesce(F.min(F.when(buy, day)), F.min(F.when(kept, day)))
    return transactions.groupBy("customer_id").agg(
        F.count_if(kept).alias("_kept"),
        F.datediff(group_as_of, last).cast("int").alias("recency_days"),
        F.count_distinct(F.when(buy, F.col("invoice_id"))).cast("long").alias("frequency"),
        F.round(F.coalesce(F.sum(F.when(kept, revenue)), F.lit(0)), 2).cast("double").alias("monetary"),
        first.alias("first_purchase"),
        last.alias("last_purchase"),
        F.count("*").alias("_rows"),
        F.count_if(day.isNull()).alias("_no_date"),
        F.count_if(day > row_as_of).alias("_after"),
        F.count_if(cancel).alias("_cancel"),
        F.count_if(F.col("unit_price") == 0).alias("_zero_price"),
        F.count_if(F.col("unit_price") < 0).alias("_negative_price"),
    )


def customer_rfm(transactions: DataFrame, as_of: date | None = None) -> DataFrame:
    """customer_id, recency_days (int), frequency (long), monetary (double), first_purchase,
    last_purchase (dates): one row per customer with a line on or before *as_of* (None = the default,
    which costs one small job now). The definitions are in the module's docstring."""
    as_of = default_as_of(transactions) if as_of is None else _check_as_of(as_of)
    return _customers(_by_customer(transactions, as_of))


def customer_rfm_lazy(transactions: DataFrame, as_of: date | None = None) -> DataFrame:
    """customer_rfm without a job or an analysis now: as_of None (the default) is computed inside the
    query. For a declarative pipeline, whose dataset definitions must stay lazy."""
    return _customers(_by_customer(transactions, None if as_of is None else _check_as_of(as_of), check=False))


def _customers(grouped: DataFrame) -> DataFrame:
    return grouped.where(F.col("customer_id").isNotNull() & (F.col("_kept") > 0)).select(*RFM_COLUMNS)


@dataclass(frozen=True)
class RfmReport:
    """What customer_rfm kept and left out. Line counts are over all input lines; a line can be in
    several (a cancellation after as_of without a customer is in three)."""
    as_of: date
    rows: int
    rows_without_customer: int           # left out
    rows_without_date: int               # null invoice_ts: left out
    rows_after_as_of: int                # left out
    cancellation_rows: int               # net against revenue, not purchases
    zero_price_rows: int
    negative_price_rows: int
    customers: int
    customers_only_cancellations: int    # frequency 0: kept
    customers_net_revenue_not_positive: int  # monetary <= 0: kept

    def lines(self) -> list[str]:
        return [
            f"RFM as of {self.as_of.isoformat()}: {self.customers:,} customers from {self.rows:,} invoice lines",
            f"  left out: {self.rows_without_customer:,} lines without customer_id, "
            f"{self.rows_without_date:,} without invoice_ts, {self.rows_after_as_of:,} after as_of",
            f"  {self.cancellation_rows:,} cancellation lines (netted against revenue), "
            f"{self.zero_price_rows:,} with unit_price 0, {self.negative_price_rows:,} with unit_price < 0",
            f"  kept: {self.customers_only_cancellations:,} customers with only cancellations (frequency 0), "
            f"{self.customers_net_revenue_not_positive:,} with net revenue <= 0",
        ]


def rfm_report(transactions: DataFrame, as_of: date | None = None) -> RfmReport:
    """The counts, in one query over the transactions (as_of None = the default)."""
    as_of = default_as_of(transactions) if as_of is None else _check_as_of(as_of)
    return _report(_by_customer(transactions, as_of), as_of)


def customer_rfm_and_report(transactions: DataFrame, as_of: date | None = None) -> tuple[DataFrame, RfmReport]:
    """customer_rfm and rfm_report from one grouping of the transactions (cached), not two."""
    as_of = default_as_of(transactions) if as_of is None else _check_as_of(as_of)
    grouped = cache(_by_customer(transactions, as_of))
    return _customers(grouped), _report(grouped, as_of)


def _report(grouped: DataFrame, as_of: date) -> RfmReport:
    known = F.col("customer_id").isNotNull()
    customer = known & (F.col("_kept") > 0)
    r = grouped.agg(
        F.sum("_rows").alias("rows"),
        F.sum(F.when(~known, F.col("_rows"))).alias("rows_without_customer"),
        F.sum("_no_date").alias("rows_without_date"),
        F.sum("_after").alias("rows_after_as_of"),
        F.sum("_cancel").alias("cancellation_rows"),
        F.sum("_zero_price").alias("zero_price_rows"),
        F.sum("_negative_price").alias("negative_price_rows"),
        F.count_if(customer).alias("customers"),
        F.count_if(customer & (F.col("frequency") == 0)).alias("customers_only_cancellations"),
        F.count_if(customer & (F.col("monetary") <= 0)).alias("customers_net_revenue_not_positive"),
    ).first().asDict()
    return RfmReport(as_of=as_of, **{k: int(v or 0) for k, v in r.items()})  # sums of no rows are null


# -- scores --------------------------------------------------------------------------------------------

def rfm_cut_points(rfm: DataFrame, bins: int) -> dict[str, list]:
    """Per score column, the bound for each score 2..bins (None: no customer reaches it):
    r_score >= s when recency_days <= bound, f_score and m_score >= s when the value >= bound.

    Exactly the percent_rank scores of the module docstring: score >= s iff
    bins * below >= (s - 1) * (n - 1) (integers, no rounding), and ``below`` grows with the value, so
    each bound is the least (for R: the most days) value that satisfies it. Runs one small job: the
    cumulative counts run in one partition per measure over its distinct values only (a few thousand
    days and frequencies; monetary up to one per customer), fine up to a few million customers."""
    bins = parse_rfm_bins(bins)
    _require(rfm, ("recency_days", "frequency", "monetary"), _RFM_TABLE)
    ranked = {"r_score": -F.col("recency_days"), "f_score": F.col("frequency"), "m_score": F.col("monetary")}
    values = (rfm.select(F.explode(F.array(*[
                  F.struct(F.lit(name).alias("score"), col.cast("double").alias("value"))
                  for name, col in ranked.items()])).alias("x"))
              .select("x.*").where(F.col("value").isNotNull())
              .groupBy("score", "value").count())
    earlier = Window.partitionBy("score").orderBy("value").rowsBetween(Window.unboundedPreceding, -1)
    values = values.select(
        "score", "value",
        F.coalesce(F.sum("count").over(earlier), F.lit(0)).alias("below"),
        F.sum("count").over(Window.partitionBy("score")).alias("n"))
    rows = {r["score"]: r for r in values.groupBy("score").agg(*[
        F.min(F.when((F.col("n") > 1) & (F.col("below") * bins >= (F.col("n") - 1) * (s - 1)),
                     F.col("value"))).alias(f"s{s}")
        for s in range(2, bins + 1)]).collect()}
    # Back to the columns' units: days (R ranked on -days) and invoices are whole numbers.
    unit = {"r_score": lambda v: int(-v), "f_score": int, "m_score": float}
    return {name: [None if name not in rows or rows[name][f"s{s}"] is None else unit[name](rows[name][f"s{s}"])
                   for s in range(2, bins + 1)]
            for name in SCORE_COLUMNS}


def _score_column(col: Column, bounds: list, at_most: bool) -> Column:
    """CASE from the top score down; values reaching no bound (and nulls) score 1."""
    expr = None
    for s in range(len(bounds) + 1, 1, -1):
        bound = bounds[s - 2]
        if bound is None:
            continue
        cond = col <= F.lit(bound) if at_most else col >= F.lit(bound)
        expr = F.when(cond, s) if expr is None else expr.when(cond, s)
    return (F.lit(1) if expr is None else expr.otherwise(1)).cast("int")


def rfm_scores(rfm: DataFrame, bins: int) -> DataFrame:
    """*rfm* with r_score, f_score, m_score (int 1..bins, higher = better; see the module docstring).

    Computes the cut points now (one job over *rfm*: cache it if it is expensive); the result is then a
    plain projection with a CASE per score, no join and no window."""
    cuts = rfm_cut_points(rfm, bins)
    return rfm.withColumns({
        "r_score": _score_column(F.col("recency_days"), cuts["r_score"], at_most=True),
        "f_score": _score_column(F.col("frequency"), cuts["f_score"], at_most=False),
        "m_score": _score_column(F.col("monetary"), cuts["m_score"], at_most=False),
    })


def rank_scores(rfm: DataFrame, bins: int) -> DataFrame:
    """rfm_scores' scores as window functions, with no job or analysis now (for a declarative pipeline): the module
    docstring's formula itself, ``least(bins, 1 + floor(bins * below / (n - 1)))``, with ``below`` from
    rank() over all customers. The ranking runs in one partition; rfm_scores' cut points scale further."""
    bins = parse_rfm_bins(bins)  # *rfm* is not analysed here: a pipeline's query function may not
    n = F.count(F.lit(1)).over(Window.partitionBy())
    worse_first = {"r_score": F.col("recency_days").desc(), "f_score": F.col("frequency").asc(),
                   "m_score": F.col("monetary").asc()}

    def score(order: Column) -> Column:
        below = F.rank().over(Window.orderBy(order)) - 1
        # Quotients of whole numbers this small are exact in a double: floor gives the integer result.
        return (F.when(n <= 1, F.lit(1))
                .otherwise(F.least(F.lit(bins), 1 + F.floor(below * bins / (n - 1)))).cast("int"))
    return rfm.withColumns({name: score(order) for name, order in worse_first.items()})


# -- segments ------------------------------------------------------------------------------------------

def score_band(score: int, bins: int) -> str:
    """L (1-2), M (3 .. bins-2) or H (bins-1 .. bins)."""
    return "L" if score <= 2 else "H" if score >= bins - 1 else "M"


@dataclass(frozen=True)
class RfmRule:
    segment: str
    one_purchase: bool | None  # None: either
    r: str                     # the bands allowed, e.g. "LM"
    f: str
    m: str

    def scores(self, dimension: str, bins: int) -> list[int]:
        return [s for s in range(1, bins + 1) if score_band(s, bins) in getattr(self, dimension)]

    def matches(self, r: int, f: int, m: int, one_purchase: bool, bins: int) -> bool:
        return ((self.one_purchase is None or self.one_purchase == one_purchase)
                and score_band(r, bins) in self.r and score_band(f, bins) in self.f
                and score_band(m, bins) in self.m)


_ANY = "LMH"
# The one rule table (module docstring): mutually exclusive rows, so order does not matter.
RFM_RULES = (
    RfmRule(NEW_CUSTOMERS, True, "H", _ANY, _ANY),
    RfmRule(CHAMPIONS, False, "H", "H", "H"),
    RfmRule(LOYAL, False, "M", "H", _ANY),
    RfmRule(LOYAL, False, "H", "H", "LM"),
    RfmRule(AT_RISK, None, "L", "H", _ANY),
    RfmRule(AT_RISK, None, "L", "LM", "H"),
    RfmRule(CHURNED, None, "L", "L", "LM"),
    RfmRule(REGULAR, False, "MH", "LM", _ANY),
    RfmRule(REGULAR, True, "M", _ANY, _ANY),
    RfmRule(REGULAR, None, "L", "M", "LM"),
)


def matching_rules(r: int, f: int, m: int, one_purchase: bool, bins: int) -> list[RfmRule]:
    return [rule for rule in RFM_RULES if rule.matches(r, f, m, one_purchase, bins)]


def rule_segment(r: int, f: int, m: int, one_purchase: bool, bins: int) -> str:
    """The segment of scores (r, f, m) in 1..bins and one_purchase (frequency == 1)."""
    bins = parse_rfm_bins(bins)
    for name, value in (("r_score", r), ("f_score", f), ("m_score", m)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bins:
            raise ParameterError(f"{name} must be a whole number 1..{bins}, got {value!r}")
    if not isinstance(one_purchase, bool):
        raise ParameterError(f"one_purchase must be True or False, got {one_purchase!r}")
    found = matching_rules(r, f, m, one_purchase, bins)
    if len(found) != 1:  # the table is broken; tests keep it from happening
        raise AssertionError(f"RFM_RULES match {(r, f, m, one_purchase)} {len(found)} times, expected once")
    return found[0].segment


def rfm_segment_column(bins: int) -> Column:
    """The rule table as a Spark CASE over r_score, f_score, m_score and frequency (one purchase =
    frequency 1). Null for scores outside 1..bins."""
    bins = parse_rfm_bins(bins)
    one = F.col("frequency") == 1
    expr = None
    for rule in RFM_RULES:
        allowed = {d: rule.scores(d, bins) for d in ("r", "f", "m")}
        if not all(allowed.values()):
            continue  # a band empty at these bins (M with 4): the rule matches nothing
        cond = (F.col("r_score").isin(allowed["r"]) & F.col("f_score").isin(allowed["f"])
                & F.col("m_score").isin(allowed["m"]))
        if rule.one_purchase is not None:
            cond = cond & (one if rule.one_purchase else ~one)
        expr = F.when(cond, rule.segment) if expr is None else expr.when(cond, rule.segment)
    return expr


def segment_rfm(scored: DataFrame, bins: int) -> DataFrame:
    """*scored* (rfm_scores' output) with rfm_segment."""
    bins = parse_rfm_bins(bins)
    _require(scored, (*SCORE_COLUMNS, "frequency"), _SCORED_TABLE)
    return scored.withColumn("rfm_segment", rfm_segment_column(bins))


def summary_measures() -> list[Column]:
    """Per group of customers: their count, mean recency, frequency and monetary value, total revenue."""
    return [F.count("*").alias("customer_count"), F.round(F.avg("recency_days"), 1).alias("avg_recency_days"),
            F.round(F.avg("frequency"), 2).alias("avg_frequency"), F.round(F.avg("monetary"), 2).alias("avg_monetary"),
            F.round(F.sum("monetary"), 2).alias("total_revenue")]


def rule_summary(segmented: DataFrame) -> DataFrame:
    """One row per rule segment present in *segmented* (customers with rfm_segment): segment (its place
    in RFM_SEGMENTS), segment_name and summary_measures()."""
    order = F.create_map(*[x for i, name in enumerate(RFM_SEGMENTS) for x in (F.lit(name), F.lit(i))])
    return (segmented.groupBy(F.col("rfm_segment").alias("segment_name")).agg(*summary_measures())
            .withColumn("segment", order[F.col("segment_name")].cast("int")))


def all_score_combinations(bins: int):
    """Every (r, f, m, one_purchase) for *bins*: what the rule table must cover."""
    bins = parse_rfm_bins(bins)
    return [(r, f, m, one) for r, f, m in product(range(1, bins + 1), repeat=3) for one in (False, True)]
