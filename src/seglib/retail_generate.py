"""Demo data for the retail recipe: customers and two years of invoice lines from latent behaviours.

Like ``generate`` (the airline demo), every random draw is a hash of (seed, salt, id) inside Spark, so
the rows depend only on the seed and the sizes (not on partitioning), and nothing is collected: a
million customers are ``spark.range`` plus explodes (customer -> invoices -> lines -> cancellations);
26M lines, written in about 5 minutes on 2 loaded cores.

Each customer follows one of a few behaviours (how often they buy, when they stopped, how much and how
dear, how often on discount). RFM scores and clusters recover them without the generator naming any
output segment. Shapes are loosely calibrated by hand on the UCI Online Retail file: many customers buy
once (there a third in one year, here a quarter in two), a couple of percent of lines are cancelled, a
strong Nov-Dec peak; baskets are smaller than that wholesaler's (median 15 lines of 6 units) because
this is a consumer shop: about 4 lines of 2 units.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from itertools import accumulate

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables as TB
from .generate import _Draws
from .tables import conform

# A fixed two-year window (never the wall clock): reruns write identical rows.
WINDOW_START = "2023-01-01"                 # must be the first day of a month
WINDOW_END = "2024-12-31"                   # last day, inclusive
WINDOW_END_TS = "2024-12-31 23:59:59"       # no cancellation after this
WINDOW_DAYS = (dt.date.fromisoformat(WINDOW_END) - dt.date.fromisoformat(WINDOW_START)).days + 1
CUSTOMER_ID_BASE = 100_000                  # ids 100001...: clear of the UCI file's 12346..18287
DEFAULT_TRANSACTIONS_PER_CUSTOMER = 6.0     # invoices per customer over the window, on average
MAX_INVOICES = 9_999                        # invoice key = customer_id * 10^4 + n
MAX_LINES = 60                              # line key = invoice key * 100 + line
CANCEL_SHARE = 0.025                        # UCI: 2.2% of the lines with a customer


@dataclass(frozen=True)
class Behaviour:
    name: str
    weight: float
    invoices: tuple[float, float]        # lognormal (median, sigma) of invoices at the default rate; (1, 0): one
    stopped_days: tuple[float, float] | None  # days before the window end they stopped buying; None: still buying
    tenure_days: tuple[float, float]     # signup date, in days before the window end
    lines: tuple[float, float]           # lines per invoice
    quantity: float                      # median units per line
    price_skew: float                    # < 1 favours the dearer products of a category, > 1 the cheaper
    discount_share: float                # share of lines bought on discount (more in November)
    store_share: float                   # share of invoices paid in a store (the rest online or in the app)
    age_mean: float


# Latent behaviours, not output segments: RFM rules and KMeans should find structure like this without
# the generator naming it. Recency is not drawn for those still buying: it follows from how often they
# buy (a cut-off before the window end would empty its last weeks). Behaviours overlap on purpose.
BEHAVIOURS: list[Behaviour] = [
    Behaviour("frequent_high_value", 0.08, (28, 0.35), None, (1400, 0.35), (5.0, 0.5), 3, 0.6, 0.10, 0.40, 46),
    Behaviour("regular", 0.22, (10, 0.35), None, (1000, 0.45), (3.5, 0.5), 2, 1.0, 0.20, 0.30, 41),
    Behaviour("bargain_hunter", 0.10, (8, 0.35), None, (800, 0.50), (3.0, 0.5), 3, 1.8, 0.70, 0.15, 34),
    Behaviour("recent_joiner", 0.12, (2, 0.45), None, (75, 0.40), (3.0, 0.5), 2, 1.0, 0.25, 0.20, 29),
    Behaviour("one_time", 0.20, (1, 0.0), None, (600, 0.70), (2.5, 0.5), 2, 1.0, 0.25, 0.25, 37),
    Behaviour("fading", 0.15, (6, 0.35), (210, 0.25), (1100, 0.40), (3.0, 0.5), 2, 1.0, 0.20, 0.30, 44),
    Behaviour("lapsed", 0.13, (3, 0.35), (480, 0.20), (1200, 0.40), (3.0, 0.5), 2, 1.0, 0.20, 0.35, 48),
]

# (category, product id prefix, weight, list prices of its products, cheapest first)
CATALOGUE = [
    ("Home Decor", "HD", 18, (3.95, 6.50, 9.95, 14.95, 24.95, 39.00)),
    ("Kitchen & Dining", "KD", 16, (2.50, 4.95, 8.50, 12.95, 19.95, 34.50)),
    ("Candles & Lighting", "CL", 12, (1.95, 3.95, 6.95, 11.50, 17.95, 29.95)),
    ("Stationery", "ST", 12, (0.85, 1.65, 2.95, 4.25, 6.95, 12.50)),
    ("Toys & Games", "TG", 10, (2.95, 5.95, 9.95, 14.95, 22.50, 44.95)),
    ("Bags & Accessories", "BA", 10, (1.95, 4.50, 8.95, 15.95, 24.95, 49.95)),
    ("Garden & Outdoor", "GO", 8, (3.50, 6.95, 12.95, 19.95, 34.95, 59.00)),
    ("Seasonal & Gifts", "SG", 14, (0.95, 2.50, 4.95, 7.95, 12.50, 19.95)),
]
PRODUCTS_PER_CATEGORY = 6
# Category weights by season: gifts sell in Nov-Dec, garden in spring and summer.
_SEASONAL_CATEGORY = {"Seasonal & Gifts": ((11, 12), 3.0), "Garden & Outdoor": ((4, 5, 6, 7, 8), 2.5)}

# Invoices per calendar month, relative: a Nov-Dec peak (the UCI file's November has 2.5x its spring
# months), a summer bump and a quiet January-February.
MONTH_WEIGHTS = {1: 0.80, 2: 0.80, 3: 0.95, 4: 1.00, 5: 1.00, 6: 1.15, 7: 1.20, 8: 1.15, 9: 1.00, 10: 1.05,
                 11: 1.70, 12: 1.60}
HOUR_WEIGHTS = {h: w for h, w in zip(range(7, 22), [1, 3, 6, 8, 9, 10, 10, 9, 8, 7, 7, 7, 6, 5, 4])}
DISCOUNTS = [(0.10, 30), (0.15, 20), (0.20, 20), (0.25, 12), (0.30, 12), (0.50, 6)]
CITIES = [  # (city, country, weight): UK-heavy like the UCI shop, with its main export markets
    ("London", "United Kingdom", 22), ("Manchester", "United Kingdom", 9), ("Birmingham", "United Kingdom", 8),
    ("Leeds", "United Kingdom", 6), ("Glasgow", "United Kingdom", 5), ("Bristol", "United Kingdom", 5),
    ("Dublin", "Ireland", 6), ("Paris", "France", 5), ("Lyon", "France", 2), ("Berlin", "Germany", 5),
    ("Hamburg", "Germany", 3), ("Madrid", "Spain", 3), ("Amsterdam", "Netherlands", 3),
    ("Brussels", "Belgium", 2), ("Zurich", "Switzerland", 2), ("Lisbon", "Portugal", 2), ("Sydney", "Australia", 2),
]
GENDERS = [("Female", 54), ("Male", 44), ("Other", 2)]


def _months() -> list[tuple[int, int, float]]:
    """(first day as an offset from WINDOW_START, days, weight) of each calendar month of the window."""
    start, end = dt.date.fromisoformat(WINDOW_START), dt.date.fromisoformat(WINDOW_END)
    out, first = [], start
    while first <= end:
        nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
        days = (min(nxt, end + dt.timedelta(days=1)) - first).days
        out.append(((first - start).days, days, MONTH_WEIGHTS[first.month]))
        first = nxt
    return out


_MONTHS = _months()
_OFFSETS = [o for o, _, _ in _MONTHS]
_WEIGHTS = [w for _, _, w in _MONTHS]
_CUMULATIVE = list(accumulate((d * w for _, d, w in _MONTHS), initial=0.0))  # seasonal mass before each month
# The mass before each day 0..WINDOW_DAYS: one literal array, so the forward map is a single lookup.
_DAY_MASS = list(accumulate((w for _, d, w in _MONTHS for _ in range(d)), initial=0.0))


def _lit_array(values) -> Column:
    return F.array(*[F.lit(float(v)) for v in values])


def _at(values, index: Column) -> Column:
    return F.element_at(_lit_array(values), index + 1)


def seasonal_day(first: Column, last: Column, u: Column) -> Column:
    """A day offset in [first, last], drawn from the monthly weights restricted to that span: the inverse
    CDF of a piecewise-uniform density, so one uniform gives one day. The month is found by counting
    month starts at or below the mass (a 24-element filter): expressions stay small however Spark
    inlines them (a chain of comparisons per month blew the optimizer's memory)."""
    lo, hi = _at(_DAY_MASS, first), _at(_DAY_MASS, last + 1)
    mass = lo + u * (hi - lo)
    month = F.size(F.filter(_lit_array(_CUMULATIVE[1:-1]), lambda c: c <= mass))
    day = _at(_OFFSETS, month) + F.floor((mass - _at(_CUMULATIVE, month)) / _at(_WEIGHTS, month))
    return F.least(last, F.greatest(first, day)).cast("int")


def _per_behaviour(field: str, index: int | None = None) -> Column:
    """The behaviour's value of *field* for each row (column ``beh`` holds the behaviour index)."""
    values = [getattr(b, field) for b in BEHAVIOURS]
    if index is not None:  # a tuple field; None (never stopped) reads as 1 and is masked by the caller
        values = [1.0 if v is None else v[index] for v in values]
    return _at(values, F.col("beh"))


def _invoice_scale(transactions_per_customer: float) -> float:
    """Factor on the multi-invoice behaviours' medians so the mean is about *transactions_per_customer*
    (lognormal mean = median * exp(sigma^2 / 2); one-time buyers always have one invoice)."""
    single = sum(b.weight for b in BEHAVIOURS if b.invoices[1] == 0)
    multi = sum(b.weight * b.invoices[0] * math.exp(b.invoices[1] ** 2 / 2)
                for b in BEHAVIOURS if b.invoices[1] > 0)
    return max(0.0, (transactions_per_customer - single) / multi)


def customers_frame(spark: SparkSession, customers: int, seed: int,
                    transactions_per_customer: float = DEFAULT_TRANSACTIONS_PER_CUSTOMER,
                    partitions: int | None = None) -> DataFrame:
    """One row per customer: demographics, behaviour, invoice count and active span (day offsets).
    *partitions* changes only how the work is split, never the rows."""
    if customers < 1:
        raise ValueError(f"customers must be >= 1, got {customers}")
    if not transactions_per_customer >= 1:
        raise ValueError(f"transactions_per_customer must be >= 1 (everyone buys once), "
                         f"got {transactions_per_customer}")
    d = _Draws(seed)
    # Partitions by expected lines (~2M each), so the explodes below stay in memory-sized tasks.
    partitions = partitions or max(2, int(customers * transactions_per_customer * 4 // 2_000_000))
    df = spark.range(0, customers, numPartitions=partitions)
    df = df.withColumn("beh", d.choice("c.beh", list(range(len(BEHAVIOURS))), [b.weight for b in BEHAVIOURS]))
    df = df.withColumn("behaviour", F.element_at(F.array(*[F.lit(b.name) for b in BEHAVIOURS]), F.col("beh") + 1))
    df = df.withColumn("customer_id", F.col("id") + CUSTOMER_ID_BASE + 1)
    last = WINDOW_DAYS - 1
    # Stopped = days before the window end of the last possible purchase (0 for those still buying).
    stopped = F.round(d.lognormal("c.stopped", _per_behaviour("stopped_days", 0), _per_behaviour("stopped_days", 1)))
    has_stopped = F.element_at(F.array(*[F.lit(b.stopped_days is not None) for b in BEHAVIOURS]), F.col("beh") + 1)
    df = df.withColumn("stopped", F.when(has_stopped, F.least(F.lit(last - 30), stopped)).otherwise(0).cast("int"))
    tenure = F.round(d.lognormal("c.tenure", _per_behaviour("tenure_days", 0), _per_behaviour("tenure_days", 1)))
    # At least 30 days between signup and stopping, so every span has room for its invoices.
    df = df.withColumn("tenure", F.greatest(tenure, F.col("stopped") + 30).cast("int"))
    end = F.to_date(F.lit(WINDOW_END))
    df = df.withColumn("signup_date", F.date_sub(end, F.col("tenure")))
    df = df.withColumn("first_day", F.greatest(F.lit(0), F.lit(last) - F.col("tenure")))
    df = df.withColumn("last_day", F.lit(last) - F.col("stopped"))
    scale = _invoice_scale(transactions_per_customer)
    n = F.round(d.lognormal("c.invoices", _per_behaviour("invoices", 0) * scale, _per_behaviour("invoices", 1)))
    n = F.when(_per_behaviour("invoices", 1) == 0, 1).otherwise(F.least(F.lit(MAX_INVOICES), F.greatest(F.lit(1), n)))
    df = df.withColumn("n_invoices", n.cast("int"))
    age = F.least(F.lit(85), F.greatest(F.lit(18), F.round(_per_behaviour("age_mean") + 12 * d.normal("c.age"))))
    df = df.withColumn("age", F.when(d.uniform("c.age.null") < 0.01, F.lit(None)).otherwise(age).cast("int"))
    df = df.withColumn("gender", d.choice("c.gender", [g for g, _ in GENDERS], [w for _, w in GENDERS]))
    place = d.choice("c.place", list(range(len(CITIES))), [w for _, _, w in CITIES])
    df = df.withColumn("city", F.element_at(F.array(*[F.lit(c) for c, _, _ in CITIES]), place + 1))
    return df.withColumn("country", F.element_at(F.array(*[F.lit(c) for _, c, _ in CITIES]), place + 1))


def invoices_frame(customers_df: DataFrame, seed: int) -> DataFrame:
    """One row per invoice: its key, day, time, channel and line count."""
    df = customers_df.select(
        "customer_id", "beh", "country", "first_day", "last_day",
        F.explode(F.sequence(F.lit(1), F.col("n_invoices"))).alias("n"))
    df = df.withColumn("ikey", F.col("customer_id") * 10_000 + F.col("n"))
    d = _Draws(seed, key="ikey")
    df = df.withColumn("day", seasonal_day(F.col("first_day"), F.col("last_day"), d.uniform("i.day")))
    df = df.withColumn("date", F.date_add(F.to_date(F.lit(WINDOW_START)), F.col("day")))
    hour = d.choice("i.hour", list(HOUR_WEIGHTS), list(HOUR_WEIGHTS.values()))
    date = F.col("date")
    df = df.withColumn("invoice_ts", F.make_timestamp(
        F.year(date), F.month(date), F.dayofmonth(date), hour,
        F.floor(d.uniform("i.min") * 60).cast("int"), F.floor(d.uniform("i.sec") * 60).cast("int")))
    df = df.withColumn("month", F.month(date))
    online = d.choice("i.online", ["online", "app"], [60, 40])
    in_store = d.uniform("i.store") < _per_behaviour("store_share")
    df = df.withColumn("channel", F.when(in_store, "store").otherwise(online))
    lines = F.round(d.lognormal("i.lines", _per_behaviour("lines", 0), _per_behaviour("lines", 1)))
    df = df.withColumn("n_lines", F.least(F.lit(MAX_LINES), F.greatest(F.lit(1), lines)).cast("int"))
    # A cancellation of this invoice's lines comes days later, as one "C" invoice; none would fall after
    # the window end (capping them there would pile them up on its last second).
    delay = F.make_dt_interval(F.floor(d.lognormal("i.cancel.days", 4.0, 0.8)).cast("int"),
                               (1 + F.floor(d.uniform("i.cancel.h") * 23)).cast("int"),
                               F.floor(d.uniform("i.cancel.m") * 60).cast("int"))
    df = df.withColumn("cancel_ts", F.col("invoice_ts") + delay)
    return df.withColumn("cancellable", F.col("cancel_ts") <= F.to_timestamp(F.lit(WINDOW_END_TS)))


def _category_choice(u: Column, month: Column) -> Column:
    """A category index from *u*, with each seasonal category boosted in its months."""
    def choice(boost: str | None) -> Column:
        weights = [w * (_SEASONAL_CATEGORY[c][1] if c == boost else 1.0) for c, _, w, _ in CATALOGUE]
        total, acc, expr = sum(weights), 0.0, None
        for i, w in enumerate(weights):
            acc += w / total
            expr = F.when(u < acc, F.lit(i)) if expr is None else expr.when(u < acc, F.lit(i))
        return expr.otherwise(F.lit(len(weights) - 1))
    out = None
    for category, (months, _) in _SEASONAL_CATEGORY.items():
        cond = month.isin(*months)
        out = F.when(cond, choice(category)) if out is None else out.when(cond, choice(category))
    return out.otherwise(choice(None))


def lines_frame(invoices_df: DataFrame, seed: int) -> DataFrame:
    """Invoice lines, each cancelled line followed by its mirror in the invoice's "C" twin."""
    df = invoices_df.select("*", F.explode(F.sequence(F.lit(1), F.col("n_lines"))).alias("line"))
    df = df.withColumn("lkey", F.col("ikey") * 100 + F.col("line"))
    d = _Draws(seed, key="lkey")
    cat = _category_choice(d.uniform("l.cat"), F.col("month"))
    # u ** skew: a skew below 1 pushes the pick towards the dearer end of the category's price list.
    prod = F.least(F.lit(PRODUCTS_PER_CATEGORY - 1), F.floor(
        F.pow(d.uniform("l.prod"), _per_behaviour("price_skew")) * PRODUCTS_PER_CATEGORY)).cast("int")
    df = df.withColumn("cat", cat).withColumn("pidx", F.col("cat") * PRODUCTS_PER_CATEGORY + prod)
    ids = [f"{prefix}-{i + 1:03d}" for _, prefix, _, prices in CATALOGUE for i in range(len(prices))]
    prices = [p for *_, ps in CATALOGUE for p in ps]
    qty = F.least(F.lit(48), F.greatest(F.lit(1), F.round(d.lognormal("l.qty", _per_behaviour("quantity"), 0.6))))
    november = F.when(F.col("month") == 11, 0.15).otherwise(0.0)  # Black Friday
    discount = F.when(d.uniform("l.disc.has") < _per_behaviour("discount_share") + november,
                      d.choice("l.disc", [v for v, _ in DISCOUNTS], [w for _, w in DISCOUNTS])).otherwise(0.0)
    df = df.select(
        "customer_id", "ikey", "invoice_ts", "cancel_ts", "country", "channel",
        F.element_at(F.array(*[F.lit(i) for i in ids]), F.col("pidx") + 1).alias("product_id"),
        F.element_at(F.array(*[F.lit(c) for c, *_ in CATALOGUE]), F.col("cat") + 1).alias("category"),
        qty.cast("int").alias("quantity"),
        _at(prices, F.col("pidx")).alias("list_price"),
        discount.alias("discount"),
        F.explode(F.sequence(F.lit(0), ((d.uniform("l.cancel") < CANCEL_SHARE) & F.col("cancellable")).cast("int")))
        .alias("cancel"),
    )
    is_cancel = F.col("cancel") == 1
    invoice = F.col("ikey").cast("string")
    return df.select(
        F.when(is_cancel, F.concat(F.lit("C"), invoice)).otherwise(invoice).alias("invoice_id"),
        "customer_id",
        F.when(is_cancel, F.col("cancel_ts")).otherwise(F.col("invoice_ts")).alias("invoice_ts"),
        "product_id", "category",
        F.when(is_cancel, -F.col("quantity")).otherwise(F.col("quantity")).alias("quantity"),
        F.round(F.col("list_price") * (1 - F.col("discount")), 2).alias("unit_price"),
        "discount", "country", "channel",
    )


def retail_tables(spark: SparkSession, customers: int = 1000, seed: int = 42,
                  transactions_per_customer: float = DEFAULT_TRANSACTIONS_PER_CUSTOMER,
                  partitions: int | None = None) -> dict[str, DataFrame]:
    """retail_transactions and retail_customers as DataFrames (nothing is computed yet)."""
    cust = customers_frame(spark, customers, seed, transactions_per_customer, partitions)
    lines = lines_frame(invoices_frame(cust, seed + 7919), seed + 104729)
    return {
        TB.RETAIL_TRANSACTIONS: conform(lines, TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS]),
        TB.RETAIL_CUSTOMERS: conform(cust, TB.RETAIL_SCHEMAS[TB.RETAIL_CUSTOMERS]),
    }


def retail_behaviour(spark: SparkSession, customers: int = 1000, seed: int = 42,
                     transactions_per_customer: float = DEFAULT_TRANSACTIONS_PER_CUSTOMER) -> DataFrame:
    """Tests only: the latent behaviour each customer was drawn from (customer_id, behaviour); not written."""
    return customers_frame(spark, customers, seed, transactions_per_customer).select("customer_id", "behaviour")


def generate_retail_data(spark: SparkSession, where: TB.Location, customers: int = 1000, seed: int = 42, log=print,
                         transactions_per_customer: float = DEFAULT_TRANSACTIONS_PER_CUSTOMER) -> dict[str, int]:
    """Write retail_transactions and retail_customers to *where*; returns row counts per table.

    *transactions_per_customer* is the mean number of invoices (shopping trips) per customer over the
    two-year window, approximately; each invoice has several lines, so the table has about 4x as many rows."""
    return TB.write_tables(spark, retail_tables(spark, customers, seed, transactions_per_customer), where, log=log)
