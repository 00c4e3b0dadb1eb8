"""The profile stage: per-segment averages and z-scores on the fitted demo fixture."""
import pytest
from pyspark.sql import functions as F

from seglib.profile import profile_segments


def test_profile_arithmetic_and_names(spark, fitted):
    features, result = fitted
    profile = profile_segments(features, result.assignments).toPandas()
    assert profile.customer_count.sum() == 3000 and abs(profile.share.sum() - 1) < 0.01
    # Averages equal a direct computation per cluster
    direct = (features.join(result.assignments, "customer_key").groupBy("cluster")
              .agg(F.avg("total_flights").alias("f"), F.avg("days_since_last_flight").alias("d")).toPandas()
              .set_index("cluster"))
    assert list(profile.cluster) == [next(c for c, (s, _) in result.names.items() if s == seg) for seg in profile.segment]
    for _, row in profile.iterrows():
        assert row.avg_flights == pytest.approx(direct.loc[row.cluster, "f"], abs=0.006)
        assert row.avg_days_since_last_flight == pytest.approx(direct.loc[row.cluster, "d"], abs=0.006)
    by_name = profile.set_index("segment_name")
    assert by_name.avg_points.idxmax() == "Premium Elite Members"
    assert by_name.avg_days_since_last_flight.idxmax() == "At-Risk Customers"
    assert by_name.avg_flights.idxmin() == "New Joiners"
    assert list(profile.segment) == [0, 1, 2, 3, 4]
