import pytest
from pyspark.sql import functions as F

from seglib.errors import InputContractError, ParameterError
from seglib.features import FEATURES, build_features, frequency_score, monetary_score, recency_score


@pytest.mark.parametrize("days,score", [(1, 5), (90, 5), (91, 4), (180, 4), (181, 3), (365, 3), (366, 2),
                                        (730, 2), (731, 1)])
def test_recency_boundaries(spark, days, score):
    assert spark.range(1).select(recency_score(F.lit(days))).first()[0] == score


@pytest.mark.parametrize("flights,score", [(2, 1), (4, 1), (5, 2), (9, 2), (10, 3), (19, 3), (20, 4), (39, 4),
                                           (40, 5), (213, 5)])
def test_frequency_boundaries(spark, flights, score):
    assert spark.range(1).select(frequency_score(F.lit(flights))).first()[0] == score


@pytest.mark.parametrize("points,score", [(0, 1), (4999, 1), (5000, 2), (9999, 2), (10000, 3), (19999, 3),
                                          (20000, 4), (49999, 4), (50000, 5)])
def test_monetary_boundaries(spark, points, score):
    assert spark.range(1).select(monetary_score(F.lit(points))).first()[0] == score


KPI_DDL = ("customer_key int, age int, total_flights int, total_km_flown int, total_loyalty_points int, "
           "days_since_last_flight int, total_spent double, transaction_count bigint")


def _kpi(spark, rows):
    return spark.createDataFrame(rows, KPI_DDL)


def test_features_are_doubles_with_scores(spark):
    df, report = build_features(_kpi(spark, [(1, 30, 40, 50000, 60000, 10, 12.5, 3)]))
    row = df.first()
    assert all(dict(df.dtypes)[c] == "double" for c in FEATURES)
    assert (row.recency_score, row.frequency_score, row.monetary_score) == (5, 5, 5)
    assert report.rows_out == 1 and report.dropped == 0


def test_impute_uses_median_and_reports(spark):
    rows = [(1, 20, 2, 100, 10, 5, 0.0, 0), (2, None, 3, 200, 20, 5, 0.0, 0), (3, 40, 4, 300, 30, 5, 0.0, 0),
            (4, 60, 5, 400, 40, 5, 0.0, 0)]
    df, report = build_features(_kpi(spark, rows), "impute")
    assert report.null_counts["age"] == 1 and report.rows_out == 4
    assert report.imputed_with["age"] == 40.0
    assert df.where("customer_key = 2").first().age == 40.0
    assert any("age: 1 null -> imputed with median 40" in line for line in report.lines())


def test_drop_policy_removes_and_counts(spark):
    rows = [(1, 20, 2, 100, 10, 5, 0.0, 0), (2, None, 3, 200, 20, 5, 0.0, 0), (3, 40, None, 300, 30, 5, 0.0, 0)]
    df, report = build_features(_kpi(spark, rows), "drop")
    assert sorted(r.customer_key for r in df.collect()) == [1]
    assert report.dropped == 2 and report.rows_out == 1


def test_all_null_feature_is_a_contract_error(spark):
    rows = [(1, 20, 2, 100, 10, 5, None, 0), (2, 30, 3, 200, 20, 5, None, 0)]
    with pytest.raises(InputContractError, match="kpi_customer_value: column total_spent is null in all 2 rows"):
        build_features(_kpi(spark, rows))


def test_unknown_null_policy(spark):
    with pytest.raises(ParameterError, match="null_policy must be one of impute, drop"):
        build_features(_kpi(spark, [(1, 20, 2, 100, 10, 5, 0.0, 0)]), "zero")
