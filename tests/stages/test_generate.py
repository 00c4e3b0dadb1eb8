from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.generate import ARCHETYPES, gold_tables


def test_tables_have_exactly_the_design_schemas(spark, demo):
    for table in TB.GOLD_INPUTS:  # the airline recipe's tables (INPUT_SCHEMAS also holds retail's)
        schema = TB.INPUT_SCHEMAS[table]
        actual = spark.read.table(demo.qualified(table)).schema
        assert [(f.name, f.dataType) for f in actual] == [(f.name, f.dataType) for f in schema], table
    truth = spark.read.table(demo.qualified(TB.FIXTURE_TRUTH))
    assert truth.columns == ["customer_key", "archetype"]
    assert {r.archetype for r in truth.select("archetype").distinct().collect()} == {a.name for a in ARCHETYPES}


def test_one_row_per_member_and_dirty_transactions(spark, demo):
    for table in (TB.DIM_CUSTOMERS, TB.FACT_FLIGHTS, TB.KPI_CUSTOMER_VALUE, TB.FIXTURE_TRUTH):
        df = spark.read.table(demo.qualified(table))
        assert df.count() == 3000 == df.select("customer_key").distinct().count()
    tx = spark.read.table(demo.qualified(TB.FACT_TRANSACTIONS))
    assert tx.where("customer_key IS NULL").count() >= 3
    assert {r.status for r in tx.select("status").distinct().collect()} == {"completed", "pending", "cancelled"}
    assert tx.select("transaction_id").distinct().count() == tx.count()


def test_kpi_follows_the_lab_semantics(spark, demo):
    tx = spark.read.table(demo.qualified(TB.FACT_TRANSACTIONS))
    flights = spark.read.table(demo.qualified(TB.FACT_FLIGHTS))
    kpi = spark.read.table(demo.qualified(TB.KPI_CUSTOMER_VALUE))
    completed = (tx.where("status = 'completed'").groupBy("customer_key")
                 .agg(F.round(F.sum("transaction_amount"), 2).alias("spent"), F.count("*").alias("n")))
    check = (kpi.join(completed, "customer_key", "left").join(flights.select(
        "customer_key", F.col("days_since_last_flight").alias("d")), "customer_key"))
    assert check.where("abs(total_spent - coalesce(spent, 0)) > 0.011").count() == 0
    assert check.where("transaction_count != coalesce(n, 0)").count() == 0
    assert kpi.where("total_spent = 0").count() == check.where("spent IS NULL").count()
    status = F.when(F.col("d") <= 90, "Active").when(F.col("d") <= 180, "At Risk").otherwise("Inactive")
    assert check.where(F.col("customer_status") != status).count() == 0
    assert {r[0] for r in kpi.select("customer_status").distinct().collect()} == {"Active", "At Risk", "Inactive"}


def test_deterministic_for_seed_and_size(spark):
    a = gold_tables(spark, 500, 11)[TB.FACT_FLIGHTS]
    b = gold_tables(spark, 500, 11)[TB.FACT_FLIGHTS].repartition(3)  # partitioning must not matter
    c = gold_tables(spark, 500, 12)[TB.FACT_FLIGHTS]
    assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0
    assert a.exceptAll(c).count() > 0


def test_shapes_are_close_to_the_real_member_data(spark, demo):
    """Quantiles of the real data (DESIGN.md) within a loose band; heavy tails and ~0.7% null ages."""
    kpi = spark.read.table(demo.qualified(TB.KPI_CUSTOMER_VALUE))
    real = {"total_flights": (3, 7, 15), "total_km_flown": (4882, 10208, 21519),
            "total_loyalty_points": (2863, 6468, 14491), "days_since_last_flight": (28, 105, 259)}
    for col, quartiles in real.items():
        got = kpi.approxQuantile(col, [0.25, 0.5, 0.75], 0.001)
        for g, r in zip(got, quartiles):
            assert 0.5 * r <= g <= 1.6 * r, (col, got, quartiles)
    assert kpi.agg(F.max("total_flights")).first()[0] > 10 * kpi.approxQuantile("total_flights", [0.5], 0)[0]
    null_share = kpi.where("age IS NULL").count() / kpi.count()
    assert 0.002 <= null_share <= 0.015
    tiers = {r.loyalty_tier: r["count"] for r in kpi.groupBy("loyalty_tier").count().collect()}
    assert set(tiers) == {4, 5, 6} and tiers[4] > tiers[5] > tiers[6]
    by_tier = {r.loyalty_tier: r.p for r in kpi.groupBy("loyalty_tier").agg(
        F.avg("total_loyalty_points").alias("p")).collect()}
    assert by_tier[4] < by_tier[5] < by_tier[6]  # tiers are tied to points
