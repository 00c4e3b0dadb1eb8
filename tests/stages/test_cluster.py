"""The cluster stage on the small demo fixture, through real Spark and Delta tables: the model statement,
the fit on a sample, its names and profiles, saving the model and the handover tables, determinism."""
import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.cluster import fit_segments, fit_transform, model_column, save_cluster_outputs, segment
from seglib.errors import InputContractError, ParameterError
from seglib.features import FEATURES, build_features
from seglib.naming import assign_names, cluster_profiles, sample_zscores
from test_features import _kpi


def test_model_statement_transforms_standardises_and_assigns_the_nearest_centre(spark):
    cols = ["customer_key", *FEATURES]
    rows = [(1, 30.0, 2.0, 10.0, 10.0, 0.0, 0.0, 5.0), (2, 40.0, 8.0, 30.0, 30.0, 5.0, 1.0, 9.0),
            (3, 50.0, 4.0, 20.0, 20.0, 10.0, 2.0, 7.0)]
    raw = np.array([r[1:] for r in rows])
    spec = fit_transform(raw, "log1p")
    assert spec.medians["total_spent"] == 1.5  # median of the positive values only
    assert spec.medians["days_since_last_flight"] == 7.5 and "age" not in spec.medians
    assert spec.bounds["age"] == (30.0, 50.0)  # clipped to values that occur at p1 and p99
    z = spec.standardise(raw)
    assert np.allclose(z.mean(axis=0), 0) and np.allclose(z.std(axis=0, ddof=1), 1)
    spec.centres = [list(z[0]), list(z[2])]
    sql = spec.statement()
    assert "LN(1 + GREATEST(`total_spent`, 0) / 1.5)" in sql and "LEAST(GREATEST(CAST(`age` AS DOUBLE), 30.0), 50.0)" in sql
    df = spark.createDataFrame(rows, ", ".join(f"{c} {'int' if c == 'customer_key' else 'double'}" for c in cols))
    out = spec.pipeline().transform(df).orderBy("customer_key").toPandas()
    assert np.allclose(out[[model_column(c) for c in FEATURES]].to_numpy(), z)  # Spark computes what numpy fitted on
    nearest = ((z[:, None, :] - np.array(spec.centres)[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert out.cluster.tolist() == nearest.tolist() and nearest[0] == 0 and nearest[2] == 1
    constant = fit_transform(np.column_stack([raw[:, :6], np.ones(3)]), "none")
    assert constant.stds[FEATURES[6]] == 0 and np.all(constant.standardise(raw)[:, 6] == 0)  # as Spark's scaler
    constant.centres = [[0.0] * 7]
    assert "LN(" not in constant.statement() and "0.0D AS `x_transaction_count`" in constant.statement()
    with pytest.raises(ParameterError, match="feature_transform must be one of log1p, none"):
        fit_transform(raw, "sqrt")


def test_too_few_customers_for_k(spark):
    df, _ = build_features(_kpi(spark, [(1, 30, 2, 100, 10, 5, 1.0, 1), (2, 31, 3, 200, 20, 9, 2.0, 2)]))
    with pytest.raises(InputContractError, match="kpi_customer_value has 2 customer.s. with features, fewer than "
                                                 "the 5 segments k=5 asks for"):
        fit_segments(df, k=5, log=lambda *a: None)


def test_fit_writes_nothing_and_the_save_step_keeps_the_model_and_the_tables(spark, fitted, where, tmp_path):
    features, fitted_result = fitted
    model = tmp_path / "model"
    result = segment(features, "fit", str(model), k=5, seed=42, stability_runs=0, log=lambda *a: None)
    assert not model.exists()  # segment() computes; save_cluster_outputs writes
    assert result.names == fitted_result.names and 0.3 < result.silhouette <= 1
    metrics = save_cluster_outputs(result, str(model), where)
    assignments = spark.read.table(where.qualified(TB.SEG_ASSIGNMENTS))
    assert assignments.count() == features.count() == 3000
    # All 3000 are in the fit sample: the profile kept from the fit is that of the written assignments.
    assert result.fitted_on == 3000
    joined = features.toPandas().merge(assignments.toPandas(), on="customer_key")
    expected = joined.groupby(["segment", "segment_name"])[FEATURES].mean()
    expected.insert(0, "share", joined.groupby(["segment", "segment_name"]).size() / 3000)
    expected.insert(0, "customers", joined.groupby(["segment", "segment_name"]).size())
    means = result.segment_means().set_index(["segment", "segment_name"])
    assert means.customers.sum() == 3000 and len(means) == 5
    pd.testing.assert_frame_equal(means, expected, check_dtype=False, check_index_type=False, atol=0.051)  # means to 0.1
    # The saved model is plain Spark ML and assigns as the fit did; scoring with it keeps the names and
    # profiles every customer in its own pass.
    reloaded = PipelineModel.load(str(model / "pipeline"))
    again = reloaded.transform(features).select("customer_key", F.col("cluster").alias("again"))
    assert again.join(assignments, "customer_key").where("again != cluster").count() == 0
    scored = segment(features, "score", str(model))
    assert scored.names == result.names
    pd.testing.assert_frame_equal(scored.segment_means(), result.segment_means(), atol=1e-9)
    row = spark.read.table(where.qualified(TB.SEG_CLUSTER_METRICS)).first()
    assert row.k == 5 and abs(row.silhouette - result.silhouette) < 1e-12 and row.model_path == str(model)
    assert metrics.first().asDict() == row.asDict()  # what the notebook shows is what was written


def test_names_and_profile_from_the_fit_sample_agree_with_every_customer(fitted):
    """A fit names and profiles its clusters on the sample it was fitted on; fitted on a third of the
    fixture, the names are those the profiles of all customers give, the shares within a few points."""
    features, _ = fitted
    result = fit_segments(features, k=5, seed=42, stability_runs=0, fit_sample=1000, log=lambda *a: None)
    assert 0 < result.fitted_on < 1500
    assert sum(s["customers"] for s in result.cluster_stats.values()) == result.fitted_on
    zscores, everyone = cluster_profiles(features, result.assignments)  # all 3000
    assert assign_names(zscores) == result.names
    shares = result.segment_shares()
    for c, stats in everyone.items():
        assert shares[result.names[c][0]] == pytest.approx(stats["customers"] / 3000, abs=0.03)


def test_sample_zscores_are_the_spark_profiles_z_scores(fitted):
    """The driver's arithmetic and the Spark aggregation give the same z-scores on the same rows."""
    features, result = fitted
    rows = features.join(result.assignments, "customer_key").toPandas()
    zscores, _ = cluster_profiles(features, result.assignments)
    from_rows = sample_zscores(rows[FEATURES].to_numpy(), rows["cluster"].to_numpy())
    assert set(from_rows) == set(zscores)
    for c in zscores:
        for f in FEATURES:
            assert from_rows[c][f] == pytest.approx(zscores[c][f], abs=1e-9)


def test_same_seed_same_assignments(fitted):
    features, result = fitted
    again = fit_segments(features, k=5, seed=42, stability_runs=0, log=lambda *a: None)
    joined = again.assignments.withColumnRenamed("cluster", "c2").join(result.assignments, "customer_key")
    assert joined.where("c2 != cluster").count() == 0


def test_row_order_does_not_change_the_model(fitted):
    """KMeans' seeded start depends on row order: the driver sample is sorted by key before the fit."""
    features, result = fitted
    shuffled = features.repartition(3, "age").orderBy(F.desc("total_spent"))
    again = fit_segments(shuffled, k=5, seed=42, stability_runs=0, log=lambda *a: None)
    assert again.model.centres == result.model.centres and again.names == result.names
