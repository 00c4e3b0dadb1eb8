"""The input contract, rule by rule, on small in-memory tables (seglib.contracts)."""
import pytest
from pyspark.sql import functions as F

from seglib import contracts as C
from seglib import tables as TB
from seglib.errors import InputContractError
from seglib.features import build_features
from seglib.load import load_gold

KPI = TB.KPI_CUSTOMER_VALUE
NAME = "`s`.`kpi_customer_value`"


def _row(key, age=40, flights=10, km=5000, points=8000, days=30, spent=0.0, tx=0):
    return (key, "Male", age, 4, "BJ", flights, km, points, days, spent, tx, "Active")


def _kpi(spark, rows, **overrides):
    """kpi_customer_value rows in the contract's types; *overrides*: column -> Column expression."""
    df = spark.createDataFrame(rows, TB.INPUT_SCHEMAS[KPI])
    for col, expr in overrides.items():
        df = df.withColumn(col, expr)
    return df


def _check(df):
    return C.check_table(df, C.contract(KPI), NAME)


GOOD = [_row(k, age=30 + k, flights=5 + k, km=1000 * k, points=900 * k, days=10 * k, spent=float(k), tx=k)
        for k in range(1, 9)]


def test_good_table_passes_and_is_typed(spark):
    typed, found = _check(_kpi(spark, GOOD))
    assert found.violations == [] and found.notes == [] and found.rows == 8
    assert typed.schema == TB.INPUT_SCHEMAS[KPI]


def test_castable_strings_are_accepted_and_cast(spark):
    typed, found = _check(_kpi(spark, GOOD, customer_key=F.col("customer_key").cast("string"),
                               total_flights=F.col("total_flights").cast("string")))
    assert found.violations == []
    assert dict(typed.dtypes)["customer_key"] == "int" and typed.agg(F.sum("total_flights")).first()[0] == 76


def test_uncastable_values_are_counted_with_the_rows_they_are_in(spark):
    df = _kpi(spark, GOOD, total_flights=F.when(F.col("customer_key").isin(3, 5), "many")
              .otherwise(F.col("total_flights").cast("string")))
    _, found = _check(df)
    assert found.violations == [f"{NAME}.total_flights: 2 value(s) cannot be read as int (the column is string), "
                                f"e.g. customer_key 3 (value 'many'), 5 (value 'many')"]


def test_an_uncastable_key_is_shown_as_written(spark):
    df = _kpi(spark, GOOD, customer_key=F.when(F.col("customer_key") == 2, "C-2")
              .otherwise(F.col("customer_key").cast("string")))
    _, found = _check(df)
    assert found.violations == [f"{NAME}.customer_key: 1 value(s) cannot be read as int (the column is string), "
                                f"e.g. customer_key 'C-2'"]


def test_a_type_that_cannot_be_cast_at_all(spark):
    df = _kpi(spark, GOOD, total_spent=F.struct(F.col("total_spent").alias("amount")))
    _, found = _check(df)
    assert found.violations == [f"{NAME}.total_spent: type struct<amount:double> cannot be read as double"]


def test_null_and_duplicate_keys(spark):
    rows = GOOD + [_row(None), _row(3), _row(3), _row(7)]
    _, found = _check(_kpi(spark, rows))
    assert found.violations == [
        f"{NAME}.customer_key: 1 row(s) without a key (null)",
        f"{NAME}.customer_key: 3 duplicate key row(s), expected one row per customer_key, "
        f"e.g. customer_key 3 (3 rows), 7 (2 rows)"]


def test_negative_values(spark):
    rows = GOOD + [_row(20, km=-5), _row(21, spent=-1.5, km=-1)]
    _, found = _check(_kpi(spark, rows))
    assert found.violations == [
        f"{NAME}.total_km_flown: 2 negative value(s), expected >= 0, e.g. customer_key 20 (total_km_flown -5), "
        f"21 (total_km_flown -1)",
        f"{NAME}.total_spent: 1 negative value(s), expected >= 0, e.g. customer_key 21 (total_spent -1.5)"]


def test_empty_table(spark):
    _, found = _check(_kpi(spark, []))
    assert found.violations == [f"{NAME}: 0 rows, expected at least 1 (one per customer)"]


def test_transactions_may_be_empty(spark):
    tx = spark.createDataFrame([], TB.INPUT_SCHEMAS[TB.FACT_TRANSACTIONS])
    _, found = C.check_table(tx, C.contract(TB.FACT_TRANSACTIONS), "tx")
    assert found.violations == []


def test_a_feature_without_any_value(spark):
    _, found = _check(_kpi(spark, GOOD, total_km_flown=F.lit(None).cast("int")))
    assert found.violations == [f"{NAME}.total_km_flown: null in all 8 rows; it is a clustering feature and needs "
                                f"values"]


def test_a_constant_feature_is_reported_not_fatal(spark):
    _, found = _check(_kpi(spark, GOOD, total_spent=F.lit(0.0), transaction_count=F.lit(0).cast("long")))
    assert found.violations == []
    assert found.constant == ["total_spent", "transaction_count"]
    assert f"{NAME}.total_spent: constant (every value 0.0); it carries no information for the clustering" in found.notes


def test_every_feature_constant_stops_the_run(spark):
    same = [_row(k) for k in range(1, 6)]
    _, found = _check(_kpi(spark, same))
    assert found.violations == [f"{NAME}: every clustering feature is constant (age, total_flights, total_km_flown, "
                                f"total_loyalty_points, days_since_last_flight, total_spent, transaction_count); "
                                f"there is nothing to segment on"]


def test_implausible_ages_are_reported_and_become_missing(spark):
    rows = GOOD + [_row(30, age=0), _row(31, age=140), _row(32, age=None)]
    _, found = _check(_kpi(spark, rows))
    assert found.violations == []
    assert found.notes == [f"{NAME}.age: 2 value(s) outside 2-100, treated as missing (the null policy applies)"]
    features, report = build_features(_kpi(spark, rows), "impute")
    assert report.implausible == {"age": 2} and report.null_counts["age"] == 3
    ages = {r.customer_key: r.age for r in features.where("customer_key >= 30").collect()}
    assert ages[30] == ages[31] == ages[32] == report.imputed_with["age"]
    _, dropped = build_features(_kpi(spark, rows), "drop")
    assert dropped.rows_out == len(GOOD)


def test_outliers_are_counted(spark):
    rows = [_row(k, km=1000 + k) for k in range(1, 40)] + [_row(99, km=1_000_000)]
    _, report = build_features(_kpi(spark, rows))
    assert report.outliers["total_km_flown"] == 1 and report.outliers["age"] == 0
    assert "outliers (beyond 3 IQR" in "\n".join(report.lines())


def test_load_lists_every_violation_of_every_table_in_one_error(spark, demo, where):
    for t in TB.GOLD_INPUTS:
        spark.read.table(demo.qualified(t)).write.format("delta").saveAsTable(where.qualified(t))
    kpi = spark.read.table(demo.qualified(KPI)).withColumn(
        "total_flights", F.when(F.col("customer_key") == 11, -1).otherwise(F.col("total_flights")))
    kpi.write.format("delta").mode("overwrite").saveAsTable(where.qualified(KPI))
    flights = spark.read.table(demo.qualified(TB.FACT_FLIGHTS))
    flights.unionByName(flights.where("customer_key = 5")).write.format("delta").mode("overwrite") \
        .saveAsTable(where.qualified(TB.FACT_FLIGHTS))
    with pytest.raises(InputContractError) as e:
        load_gold(spark, where)
    assert str(e.value) == (
        "the input breaks the airline contract (2 problem(s)); nothing was written:\n"
        f"  - {where.schema_name}.`fact_flights`.customer_key: 1 duplicate key row(s), expected one row per customer_key, "
        f"e.g. customer_key 5 (2 rows)\n"
        f"  - {where.schema_name}.`kpi_customer_value`.total_flights: 1 negative value(s), expected >= 0, "
        f"e.g. customer_key 11 (total_flights -1)")
