"""Demo data: a Contoso airline Gold layer drawn from five behavioural archetypes.

Every random draw is a hash of (seed, salt, member id), so the output depends only on the seed and
the member count (not on partitioning), and everything is computed inside Spark: 10M members never
touch the driver. Shapes are calibrated to the public airline member data (quantiles in DESIGN.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables as TB
from .tables import conform

WINDOW_END = "2014-03-31"  # the real data's observation window ends here (LOAD_TIME)
LOAD_TIMESTAMP = "2014-03-31 23:59:59"  # fixed, so reruns write identical rows


@dataclass(frozen=True)
class Archetype:
    name: str
    weight: float
    flights: tuple[float, float]        # lognormal (median, sigma); at least 2, as in the real data
    km_per_flight: tuple[float, float]
    points_per_km: tuple[float, float]
    recency_days: tuple[float, float]   # days since last flight, clipped to 1..731
    age_mean: float
    tenure_days: tuple[float, float]    # membership length at the window end
    buy_share: float                    # share of members with ancillary purchases
    buys_per_flight: float
    spend_per_buy: tuple[float, float]
    age_sd: float = 7.0


# Calibrated by hand against ../shared/datasets (see the issue note): overall quantiles match the real
# member data, and the archetypes overlap enough to be realistic while staying recoverable by KMeans.
# Ancillary purchases are near-universal over two years; only completed ones count as spend.
ARCHETYPES: list[Archetype] = [
    Archetype("Premium Elite Members", 0.07, (55, 0.30), (1700, 0.20), (1.10, 0.15), (7, 0.70), 48,
              (2600, 0.35), 0.995, 0.60, (140, 0.30)),
    Archetype("Loyal Frequent Flyers", 0.20, (21, 0.25), (1450, 0.20), (0.72, 0.15), (25, 0.55), 44,
              (1900, 0.40), 0.99, 0.50, (85, 0.30)),
    Archetype("Occasional Travelers", 0.30, (8.5, 0.22), (1400, 0.20), (0.60, 0.15), (150, 0.22), 40,
              (1500, 0.45), 0.98, 0.50, (60, 0.30)),
    Archetype("At-Risk Customers", 0.25, (4.5, 0.30), (1400, 0.20), (0.60, 0.15), (480, 0.16), 42,
              (1700, 0.40), 0.97, 0.45, (60, 0.30)),
    Archetype("New Joiners", 0.18, (2.3, 0.12), (1250, 0.20), (0.55, 0.15), (11, 0.55), 30,
              (210, 0.50), 0.98, 0.90, (45, 0.30)),
]

# A sixth behaviour, absent from the default mixture: few but very long, discounted-fare trips.
LONG_HAUL = Archetype("Long-Haul Travelers", 0.0, (5, 0.30), (5200, 0.20), (0.95, 0.20), (70, 0.45), 52,
                      (1800, 0.40), 0.98, 0.60, (120, 0.30))


@dataclass(frozen=True)
class Mixture:
    """Which archetypes a fixture draws members from, in what proportions, and who buys ancillaries."""
    weights: dict[str, float]             # archetype name -> weight
    buyer_share: float | None = None      # None: each archetype's own buy_share; else this share of members


_BY_NAME = {a.name: a for a in ARCHETYPES + [LONG_HAUL]}
MIXTURES: dict[str, Mixture] = {
    "default": Mixture({a.name: a.weight for a in ARCHETYPES}),
    # Like the lab's data: more lapsed members, and only a handful with a transaction (its JSON is tiny).
    "lab": Mixture({"Premium Elite Members": 0.05, "Loyal Frequent Flyers": 0.15, "Occasional Travelers": 0.35,
                    "At-Risk Customers": 0.30, "New Joiners": 0.15}, buyer_share=0.002),
    # Fixtures with another number of archetypes (k=auto should find 4 and 6).
    "four": Mixture({"Premium Elite Members": 0.10, "Loyal Frequent Flyers": 0.25, "At-Risk Customers": 0.40,
                     "New Joiners": 0.25}),
    "six": Mixture({**{a.name: a.weight for a in ARCHETYPES}, LONG_HAUL.name: 0.12}),
}


def mixture_archetypes(mixture: str | Mixture) -> tuple[list[Archetype], Mixture]:
    """The archetypes of *mixture* (a name in MIXTURES or a Mixture), weights applied, in a fixed order."""
    if isinstance(mixture, str):
        if mixture not in MIXTURES:
            raise ValueError(f"mixture must be one of {', '.join(MIXTURES)}, got {mixture!r}")
        mixture = MIXTURES[mixture]
    unknown = set(mixture.weights) - set(_BY_NAME)
    if unknown:
        raise ValueError(f"unknown archetype(s) {', '.join(sorted(unknown))}; known: {', '.join(_BY_NAME)}")
    chosen = [replace(_BY_NAME[n], weight=w) for n, w in mixture.weights.items() if w > 0]
    if mixture.buyer_share is not None:
        chosen = [replace(a, buy_share=mixture.buyer_share) for a in chosen]
    return chosen, mixture


PROVINCES = [  # (city, province, country): the real data is mostly Chinese work addresses
    ("Guangzhou", "Guangdong", "CN"), ("Shenzhen", "Guangdong", "CN"), ("Beijing", "Beijing", "CN"),
    ("Shanghai", "Shanghai", "CN"), ("Dalian", "Liaoning", "CN"), ("Shenyang", "Liaoning", "CN"),
    ("Wuhan", "Hubei", "CN"), ("Changsha", "Hunan", "CN"), ("Urumqi", "Xinjiang", "CN"),
    ("Chengdu", "Sichuan", "CN"), ("Haikou", "Hainan", "CN"), ("Zhengzhou", "Henan", "CN"),
    ("Hong Kong", "Hong Kong", "HK"), ("Tokyo", "Tokyo", "JP"), ("Seoul", "Seoul", "KR"),
    ("Los Angeles", "California", "US"),
]
PROVINCE_WEIGHTS = [18, 9, 9, 7, 6, 5, 6, 6, 6, 5, 4, 5, 3, 2, 2, 1]
REGIONS = ["North China", "East China", "South China", "Central China", "Southwest", "Northeast"]
PAYMENT_METHODS = [("credit_card", 40), ("debit_card", 20), ("alipay", 20), ("wechat_pay", 15), ("points", 5)]
STATUSES = [("completed", 85), ("pending", 10), ("cancelled", 5)]


class _Draws:
    """Seeded per-row random numbers: uniform and standard normal, one independent stream per salt."""

    def __init__(self, seed: int, key: str = "id"):
        self.seed, self.key = seed, key

    def uniform(self, salt: str) -> Column:
        h = F.xxhash64(F.lit(self.seed), F.lit(salt), F.col(self.key))
        return (F.pmod(h, F.lit(1 << 52)).cast("double") + 0.5) / float(1 << 52)

    def normal(self, salt: str) -> Column:  # Box-Muller
        return F.sqrt(-2.0 * F.log(self.uniform(salt + ".a"))) * F.cos(2 * math.pi * self.uniform(salt + ".b"))

    def lognormal(self, salt: str, median: Column | float, sigma: Column | float) -> Column:
        return F.exp(F.log(F.lit(median) if not isinstance(median, Column) else median) + self.normal(salt) * sigma)

    def choice(self, salt: str, options: list, weights: list[float]) -> Column:
        u, total, acc = self.uniform(salt), float(sum(weights)), 0.0
        expr = None
        for option, w in zip(options, weights):
            acc += w / total
            expr = (F.when(u < acc, F.lit(option)) if expr is None else expr.when(u < acc, F.lit(option)))
        return expr.otherwise(F.lit(options[-1]))


def _per_archetype_of(archetypes: list[Archetype], field: str, index: int | None = None) -> Column:
    """The archetype's value of *field* for each row (column ``arch`` holds the archetype index)."""
    values = [getattr(a, field) if index is None else getattr(a, field)[index] for a in archetypes]
    return F.element_at(F.array(*[F.lit(float(v)) for v in values]), F.col("arch") + 1)


def members(spark: SparkSession, customers: int, seed: int, mixture: str | Mixture = "default") -> DataFrame:
    """One row per member with every generated attribute (not yet split into the Gold tables)."""
    if customers < 1:
        raise ValueError(f"customers must be >= 1, got {customers}")
    archetypes, _ = mixture_archetypes(mixture)
    d = _Draws(seed)

    def _per_archetype(field: str, index: int | None = None) -> Column:
        return _per_archetype_of(archetypes, field, index)

    partitions = max(2, customers // 1_000_000)
    df = spark.range(0, customers, numPartitions=partitions)
    df = df.withColumn("arch", d.choice("arch", list(range(len(archetypes))), [a.weight for a in archetypes]))
    df = df.withColumn("archetype", F.element_at(F.array(*[F.lit(a.name) for a in archetypes]), F.col("arch") + 1))
    # Mass-market archetypes share a small, partly random overlap in behaviour; heavy right tails come
    # from the lognormals.
    flights = F.greatest(F.lit(2), F.round(d.lognormal("flights", _per_archetype("flights", 0), _per_archetype("flights", 1))))
    df = df.withColumn("total_flights", flights.cast("int"))
    df = df.withColumn("total_km_flown", F.round(F.col("total_flights") * d.lognormal(
        "kmpf", _per_archetype("km_per_flight", 0), _per_archetype("km_per_flight", 1))).cast("int"))
    df = df.withColumn("base_points", F.round(F.col("total_km_flown") * d.lognormal(
        "ppk", _per_archetype("points_per_km", 0), _per_archetype("points_per_km", 1))).cast("int"))
    df = df.withColumn("non_flight_points", F.when(d.uniform("nfp.has") < 0.3, F.round(
        d.lognormal("nfp", 400.0, 1.0))).otherwise(0).cast("int"))
    df = df.withColumn("total_loyalty_points", (F.col("base_points") + F.col("non_flight_points")).cast("int"))
    recency = F.round(d.lognormal("recency", _per_archetype("recency_days", 0), _per_archetype("recency_days", 1)))
    df = df.withColumn("days_since_last_flight", F.least(F.lit(731), F.greatest(F.lit(1), recency)).cast("int"))
    tenure = F.round(d.lognormal("tenure", _per_archetype("tenure_days", 0), _per_archetype("tenure_days", 1)))
    df = df.withColumn("tenure_days", F.greatest(tenure, F.col("days_since_last_flight") + 30).cast("int"))
    end = F.to_date(F.lit(WINDOW_END))
    df = df.withColumn("join_date", F.date_sub(end, F.col("tenure_days")))
    df = df.withColumn("first_flight", F.date_add(F.col("join_date"), F.floor(d.uniform("ff") * 30).cast("int")))
    df = df.withColumn("last_flight_date", F.date_sub(end, F.col("days_since_last_flight")))
    active_days = F.least(F.lit(730), F.col("tenure_days")) - F.col("days_since_last_flight")
    df = df.withColumn("avg_flight_interval_days",
                       F.round(F.greatest(F.lit(0.0), active_days) / (F.col("total_flights") - 1), 2))
    df = df.withColumn("max_flight_interval_days", F.least(
        F.greatest(F.lit(0), active_days),
        F.round(F.col("avg_flight_interval_days") * (1.5 + 2 * d.uniform("maxint")))).cast("int"))
    fare = F.col("total_km_flown") * (0.45 + 0.4 * d.uniform("fare"))
    year2_share = F.least(F.lit(1.0), F.greatest(F.lit(0.0), 1.1 - F.col("days_since_last_flight") / 365.0
                                                  + 0.2 * d.normal("y2")))
    df = df.withColumn("year_2_flights", F.round(fare * year2_share, 0))
    df = df.withColumn("year_1_flights", F.round(fare * (1 - year2_share), 0))
    df = df.withColumn("exchange_count", F.when(d.uniform("exch.has") < 0.15, F.round(
        d.lognormal("exch", 1.5, 0.7))).otherwise(0).cast("int"))
    df = df.withColumn("avg_discount_rate", F.round(F.least(F.lit(1.5), F.greatest(
        F.lit(0.1), 0.72 + 0.12 * d.normal("disc") + F.when(F.col("archetype") == ARCHETYPES[0].name, 0.12).otherwise(0.0))), 4))
    tier_signal = F.col("total_loyalty_points") * d.lognormal("tier", 1.0, 0.3)
    df = df.withColumn("loyalty_tier", F.when(tier_signal >= 90_000, 6).when(tier_signal >= 35_000, 5).otherwise(4))
    age = F.round(_per_archetype("age_mean") + _per_archetype("age_sd") * d.normal("age"))
    age = F.when(d.uniform("age.extreme") < 0.0008, F.round(6 + 104 * d.uniform("age.x"))).otherwise(
        F.least(F.lit(92), F.greatest(F.lit(18), age)))
    df = df.withColumn("age", F.when(d.uniform("age.null") < 0.007, F.lit(None)).otherwise(age).cast("int"))
    df = df.withColumn("gender", F.when(d.uniform("gender.null") < 0.0005, F.lit(None)).otherwise(
        d.choice("gender", ["Male", "Female"], [76, 24])))
    place = d.choice("place", list(range(len(PROVINCES))), PROVINCE_WEIGHTS)
    for i, name in enumerate(["city", "province", "country"]):
        df = df.withColumn(name, F.element_at(F.array(*[F.lit(p[i]) for p in PROVINCES]), place + 1))
    buys = F.when(d.uniform("buy.has") < _per_archetype("buy_share"), F.greatest(F.lit(1), F.round(
        F.col("total_flights") * _per_archetype("buys_per_flight") * d.lognormal("buys", 1.0, 0.20)))).otherwise(0)
    return df.withColumn("n_purchases", buys.cast("int")).withColumn("customer_key", (F.col("id") + 1).cast("int"))


def transactions(members_df: DataFrame, seed: int, dirty_rows: int, mixture: str | Mixture = "default") -> DataFrame:
    """Ancillary purchases of members with n_purchases > 0, plus *dirty_rows* rows without a customer."""
    archetypes, _ = mixture_archetypes(mixture)
    rows = members_df.where("n_purchases > 0").select(
        "customer_key", "arch", "tenure_days", "days_since_last_flight",
        F.explode(F.sequence(F.lit(1), F.col("n_purchases"))).alias("n"))
    rows = rows.withColumn("id", F.col("customer_key").cast("long") * 100_000 + F.col("n"))
    d = _Draws(seed + 7919)
    span = F.least(F.lit(730), F.col("tenure_days")) - F.col("days_since_last_flight")
    days_ago = F.col("days_since_last_flight") + F.floor(d.uniform("txdate") * F.greatest(F.lit(1), span))
    rows = rows.select(
        F.format_string("TX%09d-%05d", F.col("customer_key"), F.col("n")).alias("transaction_id"),
        "customer_key",
        F.date_sub(F.to_date(F.lit(WINDOW_END)), days_ago.cast("int")).alias("transaction_date"),
        F.round(d.lognormal("amount", _per_archetype_of(archetypes, "spend_per_buy", 0),
                            _per_archetype_of(archetypes, "spend_per_buy", 1)), 2)
        .alias("transaction_amount"),
        d.choice("status", [s for s, _ in STATUSES], [w for _, w in STATUSES]).alias("status"),
        d.choice("region", REGIONS, [1] * len(REGIONS)).alias("region"),
        d.choice("pay", [p for p, _ in PAYMENT_METHODS], [w for _, w in PAYMENT_METHODS]).alias("payment_method"),
    )
    # The lab's transactions file has a few rows whose customer is unknown; keep some so loaders see them.
    dirty = members_df.sparkSession.range(0, dirty_rows, numPartitions=1)
    dd = _Draws(seed + 104729)
    dirty = dirty.select(
        F.format_string("TXU%08d", F.col("id")).alias("transaction_id"),
        F.lit(None).cast("int").alias("customer_key"),
        F.date_sub(F.to_date(F.lit(WINDOW_END)), F.floor(dd.uniform("date") * 730).cast("int")).alias("transaction_date"),
        F.round(dd.lognormal("amount", 60.0, 0.6), 2).alias("transaction_amount"),
        dd.choice("status", [s for s, _ in STATUSES], [w for _, w in STATUSES]).alias("status"),
        dd.choice("region", REGIONS, [1] * len(REGIONS)).alias("region"),
        dd.choice("pay", [p for p, _ in PAYMENT_METHODS], [w for _, w in PAYMENT_METHODS]).alias("payment_method"),
    )
    return rows.unionByName(dirty).withColumn("load_timestamp", F.to_timestamp(F.lit(LOAD_TIMESTAMP)))


def kpi_customer_value(dim: DataFrame, flights: DataFrame, tx: DataFrame) -> DataFrame:
    """The lab's KPI table: completed purchases only, 0 when none; status from days since last flight."""
    spend = (tx.where((F.col("status") == "completed") & F.col("customer_key").isNotNull())
             .groupBy("customer_key")
             .agg(F.sum("transaction_amount").alias("total_spent"), F.count("*").alias("transaction_count")))
    kpi = (dim.select("customer_key", "gender", "age", "loyalty_tier", "province")
           .join(flights.select("customer_key", "total_flights", "total_km_flown", "total_loyalty_points",
                                "days_since_last_flight"), "customer_key")
           .join(spend, "customer_key", "left")
           .withColumn("total_spent", F.round(F.coalesce("total_spent", F.lit(0.0)), 2))
           .withColumn("transaction_count", F.coalesce("transaction_count", F.lit(0)).cast("long"))
           .withColumn("customer_status", F.when(F.col("days_since_last_flight") <= 90, "Active")
                       .when(F.col("days_since_last_flight") <= 180, "At Risk").otherwise("Inactive")))
    return conform(kpi, TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE])


def gold_tables(spark: SparkSession, customers: int, seed: int, mixture: str | Mixture = "default") -> dict[str, DataFrame]:
    """The four Gold tables and fixture_truth, as DataFrames (nothing is computed yet)."""
    m = members(spark, customers, seed, mixture).withColumn("load_timestamp", F.to_timestamp(F.lit(LOAD_TIMESTAMP)))
    m = (m.withColumn("loyalty_join_date", F.date_format("join_date", "M/d/yyyy"))
          .withColumn("first_flight_date", F.date_format("first_flight", "M/d/yyyy")))
    dim = conform(m, TB.INPUT_SCHEMAS[TB.DIM_CUSTOMERS])
    flights = conform(m, TB.INPUT_SCHEMAS[TB.FACT_FLIGHTS])
    tx = conform(transactions(m, seed, dirty_rows=max(3, customers // 2000), mixture=mixture),
                 TB.INPUT_SCHEMAS[TB.FACT_TRANSACTIONS])
    truth = m.select("customer_key", "archetype")
    return {
        TB.DIM_CUSTOMERS: dim,
        TB.FACT_FLIGHTS: flights,
        TB.FACT_TRANSACTIONS: tx,
        TB.KPI_CUSTOMER_VALUE: kpi_customer_value(dim, flights, tx),
        TB.FIXTURE_TRUTH: truth,
    }


def generate_demo_data(spark: SparkSession, where: TB.Location, customers: int = 62_988, seed: int = 42,
                       log=print, mixture: str | Mixture = "default") -> dict[str, int]:
    """Write the demo Gold layer (and fixture_truth) to *where*; returns row counts per table."""
    return TB.write_tables(spark, gold_tables(spark, customers, seed, mixture), where, log=log)


def demo_customers(recipe: str = "airline") -> int:
    """How many customers the recipe's demo data has by default (its ``demo.customers``)."""
    from . import recipes as R
    return R.get(recipe).demo_customers


def generate_recipe_data(spark: SparkSession, where: TB.Location, recipe: str = "airline",
                         customers: int | None = None, seed: int = 42, log=print) -> dict[str, int]:
    """The demo input of *recipe*, written by the generator its ``demo.generate`` names."""
    from . import recipes as R
    rec = R.get(recipe)
    return rec.demo_generator()(spark, where, customers or rec.demo_customers, seed, log=log)
