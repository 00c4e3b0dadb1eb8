"""Cluster, profile and write on the small demo fixture, through real Delta tables."""
import time

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from conftest import refuse_cache
from seglib import publish as P
from seglib import tables as TB
from seglib.cluster import (fit_segments, fit_transform, model_column, parse_fit_sample, parse_k,
                            parse_k_range, save_cluster_outputs, segment, silhouette)
from seglib.errors import InputContractError, ParameterError, ValidationError
from seglib.features import FEATURES, build_features
from seglib.load import read_input, record_inputs
from seglib.naming import assign_names, cluster_profiles, sample_zscores
from seglib.profile import profile_segments
from test_features import _kpi

from seglib.write import UNSEGMENTED_NAME, build_outputs, validate_outputs, write_outputs


@pytest.fixture(scope="module")
def fitted(spark, demo):
    features, _ = build_features(read_input(spark, TB.KPI_CUSTOMER_VALUE, demo))
    features = features.cache()
    return features, fit_segments(features, k=5, seed=42, stability_runs=0, log=lambda *a: None)


@pytest.mark.parametrize("k", [0, 1, "five", "2.5", None])
def test_bad_k(k):
    with pytest.raises(ParameterError, match="k must be a whole number >= 2 or auto"):
        parse_k(k)


def test_k_and_k_range_parsing():
    assert parse_k(" 6 ") == 6 and parse_k("AUTO") == "auto"
    assert parse_k_range("3-8") == (3, 8) and parse_k_range(" 2 - 4 ") == (2, 4)
    for bad in ["8-3", "1-4", "3", "a-b", "3-99"]:
        with pytest.raises(ParameterError, match="k_range must look like 3-8"):
            parse_k_range(bad)


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


def test_fit_sample_bounds():
    assert parse_fit_sample("50000") == 50_000
    for bad in ["0", "999", "lots", "3000000"]:
        with pytest.raises(ParameterError, match="fit_sample must be a whole number from 1000"):
            parse_fit_sample(bad)


@pytest.mark.parametrize("rows, k, seed", [(500, 3, 1), (12_000, 5, 42), (30_000, 8, 7)])
def test_silhouette_is_scikit_learns_on_the_same_sample(rows, k, seed):
    """The closed form gives silhouette_score's value (squared Euclidean, the same seeded 10,000 rows
    above that size); a point alone in its cluster scores 0 in both."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score
    x, labels = make_blobs(n_samples=rows, centers=k, n_features=7, cluster_std=2.5, random_state=seed)
    x, labels = np.r_[x, [[40.0] * 7]], np.r_[labels, [k]]  # a singleton cluster
    expected = silhouette_score(x, labels, metric="sqeuclidean", sample_size=10_000 if len(x) > 10_000 else None,
                                random_state=seed)
    assert silhouette(x, labels, seed) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(silhouette(x, np.zeros(len(x), int), seed))  # one cluster: undefined


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


def _profile_and_kpi(spark, demo, fitted):
    features, result = fitted
    kpi = read_input(spark, TB.KPI_CUSTOMER_VALUE, demo)
    return kpi, result.assignments


def _cached_dataframes(spark) -> list[str]:
    """The session's cached DataFrames (Delta caches each table's log state as well: left out)."""
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return sorted(i.name() for i in infos if not i.name().startswith("Delta Table State"))


def test_outputs_are_validated_and_written(spark, demo, fitted, where, tmp_path):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    # What the earlier steps hand over for the run log
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
    build_features(kpi)[1].save(spark, where)
    save_cluster_outputs(fitted[1], str(tmp_path / "model"), where)
    cached = _cached_dataframes(spark)
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    # Nothing it cached stays behind on the session: a kept server runs many jobs (unpersist frees the
    # blocks asynchronously, hence the wait)
    deadline = time.monotonic() + 30
    while _cached_dataframes(spark) != cached and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cached_dataframes(spark) == cached
    assert {k: written[k] for k in ("customers", "unsegmented", "summary_total", "run_id")} == {
        "customers": 3000, "unsegmented": 0, "summary_total": 3000, "run_id": "r1"}
    seg = spark.read.table(where.qualified(TB.GOLD_SEGMENTS))
    assert seg.columns == kpi.columns + ["segment", "segment_name", "run_id"]
    summary = spark.read.table(where.qualified(TB.GOLD_SUMMARY))
    assert summary.columns == TB.GOLD_SUMMARY_COLUMNS
    # avg columns rounded as the lab does: flights 1 dp, points 0 dp, revenue 2 dp
    expected = (seg.groupBy("segment").agg(F.round(F.avg("total_flights"), 1).alias("f"),
                                           F.round(F.avg("total_loyalty_points"), 0).alias("p"),
                                           F.round(F.avg("total_spent"), 2).alias("r")))
    bad = summary.join(expected, "segment").where("avg_flights != f OR avg_points != p OR avg_revenue != r")
    assert bad.count() == 0


def test_without_a_cache_as_on_serverless_the_same_outputs_are_validated_and_published(
        spark, demo, fitted, tmp_path, monkeypatch):
    """Databricks serverless refuses DataFrame.cache/unpersist; the write step then recomputes its outputs
    for each action and publishes the same tables as with a cache, and still refuses bad ones."""
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    schemas = []
    for refuse in (False, True):
        where = TB.Location(f"nocache_{int(refuse)}")
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
        record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
        build_features(kpi)[1].save(spark, where)
        save_cluster_outputs(fitted[1], str(tmp_path / where.schema), where)
        if refuse:
            monkeypatch.setattr(type(kpi), "cache", refuse_cache)
            monkeypatch.setattr(type(kpi), "unpersist", refuse_cache)
            with pytest.raises(ValidationError, match="3 duplicate customer_key rows"):
                write_outputs(spark, kpi, assignments.unionByName(assignments.limit(3)), where, log=lambda *a: None)
            assert not spark.catalog.tableExists(where.qualified(TB.GOLD_SEGMENTS))
        written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
        assert written["customers"] == 3000
        schemas.append(where)
    monkeypatch.undo()
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION):
        cached, recomputed = (spark.read.table(s.qualified(table)) for s in schemas)
        assert recomputed.count() == cached.count() > 0
        assert recomputed.exceptAll(cached).count() == 0 and cached.exceptAll(recomputed).count() == 0


def test_validation_refuses_duplicates_and_writes_nothing(spark, demo, fitted, where):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    doubled = assignments.unionByName(assignments.limit(3))
    with pytest.raises(ValidationError, match="3 duplicate customer_key rows"):
        write_outputs(spark, kpi, doubled, where, log=lambda *a: None)
    assert not spark.catalog.tableExists(where.qualified(TB.GOLD_SEGMENTS))


def test_customers_left_out_by_drop_policy_are_labelled_unsegmented(spark, demo, fitted):
    kpi, assignments = _profile_and_kpi(spark, demo, fitted)
    segments, summary = build_outputs(kpi, assignments.where("customer_key > 10"), "r")
    checks = validate_outputs(kpi, segments, summary)
    assert checks["unsegmented"] == 10
    assert segments.where(F.col("segment_name") == UNSEGMENTED_NAME).count() == 10



def _previous_run(spark, kpi, assignments, where):
    """Run r0 before r1: without the first 50 customers, and every tenth customer one segment along, so
    r1's migration has new, moved and stayed customers."""
    names = dict(assignments.select("segment", "segment_name").distinct().collect())
    ring = sorted(names)
    along = F.create_map(*[x for i, s in enumerate(ring) for x in (F.lit(s), F.lit(ring[(i + 1) % len(ring)]))])
    name_of = F.create_map(*[x for s in ring for x in (F.lit(s), F.lit(names[s]))])
    moved = F.col("customer_key") % 10 == 0
    r0 = (assignments.withColumn("segment", F.when(moved, along[F.col("segment")]).otherwise(F.col("segment")))
          .withColumn("segment_name", name_of[F.col("segment")]))
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION, TB.GOLD_RUNS):  # a fresh start
        spark.sql(f"DROP TABLE IF EXISTS {where.schema}.{table}")
    write_outputs(spark, kpi.where("customer_key > 50"), r0, where, run_id="r0", log=lambda *a: None)


def _rows(df) -> pd.DataFrame:
    return df.orderBy(*df.columns).toPandas()


@pytest.fixture(scope="module")
def one_attempt(spark, demo, fitted, tmp_path_factory):
    """A schema with what the steps before the write hand over (the run log reads it), and the gold tables
    runs r0 and then r1 leave, each in one successful attempt: what a retried r1 must leave too."""
    kpi, assignments = read_input(spark, TB.KPI_CUSTOMER_VALUE, demo), fitted[1].assignments
    where = TB.Location("retried")
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
    build_features(kpi)[1].save(spark, where)
    save_cluster_outputs(fitted[1], str(tmp_path_factory.mktemp("model") / "model"), where)
    _previous_run(spark, kpi, assignments, where)
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    gold = {t: _rows(spark.read.table(where.qualified(t))) for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION)}
    compared = _rows(TB.read_version(spark, TB.GOLD_SEGMENTS, written["previous_version"], where))
    return where, kpi, assignments, gold, compared


RETRIED = {
    # the first attempt published everything, then failed in a later cell (lab queries, a display)
    "failed after publishing": {},
    # the first attempt appended its run log row, then failed: its gold tables were restored, its row stayed
    "failed after the run log row": {"fault": "publish:end"},
    # the first attempt's driver died after replacing gold_customer_segments_ml, before it could restore it
    "died while publishing": {"fault": f"publish:{TB.GOLD_SEGMENTS}", "no_restore": True},
}


@pytest.mark.parametrize("first_attempt", list(RETRIED))
def test_a_retried_write_publishes_what_one_attempt_does(spark, one_attempt, monkeypatch, first_attempt):
    """The job retries 05_write with the same run id. Whatever the first attempt left, the retry compares
    with the run before (not with its own rows: everyone would have "stayed"), leaves one run log row for
    the run id, and the gold tables end as one successful attempt leaves them."""
    where, kpi, assignments, once, compared_once = one_attempt
    _previous_run(spark, kpi, assignments, where)
    how = RETRIED[first_attempt]
    if how:
        monkeypatch.setenv(P.FAULT_ENV, how["fault"])
        if how.get("no_restore"):
            monkeypatch.setattr(P, "_restore", lambda *a: None)
        with pytest.raises(P.InjectedFault):
            write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
        monkeypatch.undo()
    else:
        write_outputs(spark, kpi, assignments, where, run_id="r1", log=lambda *a: None)
    printed = []
    written = write_outputs(spark, kpi, assignments, where, run_id="r1", log=printed.append)  # the retry

    gold = {t: _rows(spark.read.table(where.qualified(t))) for t in once}
    for t in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY):
        pd.testing.assert_frame_equal(gold[t], once[t], obj=t)
    # The migration: the one-run migration's rows (not all "stayed"), from a version holding r0's rows (the
    # restored one when the first attempt was rolled back) to the version now holding r1's.
    versions = ["from_version", "to_version"]
    pd.testing.assert_frame_equal(gold[TB.GOLD_MIGRATION].drop(columns=versions),
                                  once[TB.GOLD_MIGRATION].drop(columns=versions), obj=TB.GOLD_MIGRATION)
    changes = once[TB.GOLD_MIGRATION].groupby("change").customers.sum()
    assert changes["new"] == 50 and changes["moved"] > 200 and changes.sum() == 3000
    now = TB.table_version(spark, TB.GOLD_SEGMENTS, where)
    assert set(map(tuple, gold[TB.GOLD_MIGRATION][versions].values)) == {(written["previous_version"], now)}
    assert written["output_versions"][TB.GOLD_SEGMENTS] == now
    compared = _rows(TB.read_version(spark, TB.GOLD_SEGMENTS, written["previous_version"], where))
    pd.testing.assert_frame_equal(compared, compared_once, obj="the version compared with")
    # The run log: one row per run id, r1's naming the versions it published.
    runs = spark.read.table(where.qualified(TB.GOLD_RUNS)).orderBy("run_time").collect()
    assert [r.run_id for r in runs] == ["r0", "r1"]
    assert runs[1].output_versions == written["output_versions"] and runs[1].customers == 3000
    assert P.published_run_id(spark, list(once), where) == "r1"
    if first_attempt != "failed after the run log row":  # the restored tables hold r0's rows: nothing to say
        assert any("already holds this run's rows" in p for p in printed), printed
    if first_attempt != "died while publishing":  # that attempt died before its run log row
        assert any(f"replaced this run's row in {TB.GOLD_RUNS}" in p for p in printed), printed
