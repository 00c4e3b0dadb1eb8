"""Segments that mean something: recovery of planted archetypes, seed independence, k=auto, stability,
scoring with the saved model, migration and the run log, on real Spark and Delta tables."""
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from seglib import tables as TB
from seglib.cluster import fit_segments, save_cluster_outputs, save_model, score_segments, segment
from seglib.errors import InputContractError
from seglib.features import build_features
from seglib.generate import gold_tables
from seglib.load import read_input, record_inputs
from seglib.migration import DEPARTED, NEW, migration_matrix
from seglib.naming import SIGNATURES
from seglib.write import write_outputs

quiet = dict(log=lambda *a, **k: None)


def _features(spark, customers, seed, mixture="default"):
    tables = gold_tables(spark, customers, seed, mixture)
    features, _ = build_features(tables[TB.KPI_CUSTOMER_VALUE], inputs=tables)
    return features.cache(), tables[TB.FIXTURE_TRUTH]


def _labels(result, truth):
    return result.assignments.join(truth, "customer_key").toPandas()


@pytest.mark.parametrize("mixture", ["default", "lab"])
@pytest.mark.parametrize("seed", [1, 2])
def test_planted_archetypes_are_recovered_and_named(spark, mixture, seed):
    """'lab': the lab's mix of members, and only ~0.2% of them with any transaction."""
    features, truth = _features(spark, 4000, seed, mixture)
    if mixture == "lab":
        assert features.where("total_spent > 0").count() < 0.01 * 4000
    result = fit_segments(features, k=5, seed=42, n_init=3, stability_runs=0, **quiet)  # the job's n_init
    both = _labels(result, truth)
    assert len(both) == 4000
    assert adjusted_rand_score(both.archetype, both.segment) >= 0.9
    assert (both.archetype == both.segment_name).mean() >= 0.95


@pytest.fixture(scope="module")
def default_features(spark, demo):
    features, _ = build_features(read_input(spark, TB.KPI_CUSTOMER_VALUE, demo))
    return features.cache()


@pytest.fixture(scope="module")
def fitted(default_features):
    return fit_segments(default_features, k=5, seed=42, stability_runs=2, **quiet)


def test_other_kmeans_seeds_give_the_same_segments(default_features, fitted):
    other = fit_segments(default_features, k=5, seed=7, stability_runs=0, **quiet)
    a = fitted.assignments.toPandas().set_index("customer_key").sort_index()
    b = other.assignments.toPandas().set_index("customer_key").sort_index()
    assert adjusted_rand_score(a.segment, b.segment) >= 0.95
    assert (a.segment_name == b.segment_name).mean() >= 0.97  # names (and ids) follow the profile, not the seed
    again = fit_segments(default_features, k=5, seed=42, stability_runs=0, **quiet)
    c = again.assignments.toPandas().set_index("customer_key").sort_index()
    assert (a.segment == c.segment).all() and (a.segment_name == c.segment_name).all()  # rerun: identical


def test_ids_follow_the_business_order(fitted):
    ids = {name: seg for seg, name in fitted.names.values()}
    assert ids == {name: i for i, (name, _) in enumerate(SIGNATURES)}


def test_stability_is_measured_on_refits(fitted):
    st = fitted.stability
    assert len(st.ari) == 2 and st.mean_ari >= 0.9
    assert set(st.jaccard) == set(range(5)) and all(0.75 <= j <= 1 for j in st.jaccard.values())
    assert st.unstable == [] and fitted.unstable_segments() == []
    assert set(fitted.segment_stability()) == {name for name, _ in SIGNATURES}


@pytest.mark.parametrize("mixture, planted, k_range", [("four", 4, (3, 6)), ("six", 6, (4, 8))])
def test_k_auto_finds_the_planted_number_of_archetypes(spark, mixture, planted, k_range):
    features, truth = _features(spark, 3000, 1, mixture)
    result = fit_segments(features, k="auto", seed=42, k_range=k_range, n_init=3, stability_runs=0, **quiet)
    assert [r["k"] for r in result.sweep] == list(range(k_range[0], k_range[1] + 1))
    assert all(0 < r["silhouette"] <= 1 and r["inertia"] > 0 for r in result.sweep)
    assert result.k == planted and result.k_param == "auto"
    both = _labels(result, truth)
    assert adjusted_rand_score(both.archetype, both.segment) >= 0.85
    assert len(set(both.segment_name)) == planted  # extra clusters get descriptive, unique names


def test_scoring_reproduces_the_fit_and_names_new_members(spark, default_features, fitted, tmp_path):
    path = str(tmp_path / "model")
    save_model(fitted, path)
    scored = score_segments(default_features, path)
    joined = (fitted.assignments.alias("f").join(scored.assignments.alias("s"), "customer_key")
              .where("f.segment != s.segment OR f.segment_name != s.segment_name OR f.cluster != s.cluster"))
    assert scored.assignments.count() == 3000 and joined.count() == 0
    assert scored.mode == "score" and scored.names == fitted.names
    # New members (another generator seed): every one gets a segment and its archetype's name.
    new, truth = _features(spark, 600, 99)
    labelled = _labels(score_segments(new, path), truth)
    assert len(labelled) == 600 and labelled.segment_name.notna().all()
    assert (labelled.archetype == labelled.segment_name).mean() >= 0.9


def test_scoring_without_a_saved_model_says_what_to_do(spark, default_features, tmp_path):
    with pytest.raises(InputContractError, match="mode=score needs the model a fit run saved at .*Run once with mode=fit"):
        segment(default_features, "score", str(tmp_path / "nothing"))


def _publish(spark, kpi, features, assignments_result, where, run_id, model_path):
    """What notebooks 01-05 hand over and write, for one run."""
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: kpi.count()}, where)
    _, report = build_features(kpi)
    report.save(spark, where)
    save_cluster_outputs(assignments_result, model_path, where)  # a fit's model is saved here
    return write_outputs(spark, kpi, assignments_result.assignments, where, run_id=run_id, log=lambda *a: None)


def test_migration_shows_exactly_the_customers_who_moved(spark, where, tmp_path):
    """Version 2 of the Gold layer: 40 New Joiners behave like Premium Elite, 25 members left, 30 joined."""
    kpi1 = gold_tables(spark, 1200, 5)[TB.KPI_CUSTOMER_VALUE].cache()
    f1, _ = build_features(kpi1)
    fit = segment(f1, "fit", str(tmp_path / "model"), k=5, seed=42, n_init=2, stability_runs=0, **quiet)
    w1 = _publish(spark, kpi1, f1, fit, where, "run-1", str(tmp_path / "model"))
    labels = fit.assignments.toPandas().set_index("customer_key")
    joiners = labels.index[labels.segment_name == "New Joiners"][:40].tolist()
    elite = int(labels.index[labels.segment_name == "Premium Elite Members"][0])
    departed = labels.index[labels.segment_name == "At-Risk Customers"][:25].tolist()
    behaviour = ["total_flights", "total_km_flown", "total_loyalty_points", "days_since_last_flight",
                 "total_spent", "transaction_count", "age"]
    model = kpi1.where(F.col("customer_key") == elite).select(*[F.col(c).alias(f"e_{c}") for c in behaviour])
    moved = (kpi1.where(F.col("customer_key").isin(joiners)).crossJoin(model)
             .select(*[F.col(f"e_{c}").alias(c) if c in behaviour else F.col(c) for c in kpi1.columns]))
    newcomers = (gold_tables(spark, 30, 77)[TB.KPI_CUSTOMER_VALUE]
                 .withColumn("customer_key", F.col("customer_key") + 100_000))
    kpi2 = (kpi1.where(~F.col("customer_key").isin(joiners + departed)).unionByName(moved)
            .unionByName(newcomers)).cache()
    f2, _ = build_features(kpi2)
    scored = segment(f2, "score", str(tmp_path / "model"))
    w2 = _publish(spark, kpi2, f2, scored, where, "run-2", str(tmp_path / "model"))

    migration = spark.read.table(where.qualified(TB.GOLD_MIGRATION))
    rows = {(r.from_segment_name, r.to_segment_name): (r.change, r.customers) for r in migration.collect()}
    assert {r.run_id for r in migration.collect()} == {"run-2"}
    assert {(r.from_version, r.to_version) for r in migration.collect()} == {(w2["previous_version"], w2["output_versions"][TB.GOLD_SEGMENTS])}
    assert rows[("New Joiners", "Premium Elite Members")] == ("moved", 40)
    assert rows[("At-Risk Customers", None)] == ("departed", 25)
    assert sum(n for ch, n in rows.values() if ch == "new") == 30
    assert [k for k, (ch, _) in rows.items() if ch == "moved"] == [("New Joiners", "Premium Elite Members")]
    before = labels.segment_name.value_counts()
    for name, count in before.items():
        expected = count - (40 if name == "New Joiners" else 25 if name == "At-Risk Customers" else 0)
        assert rows[(name, name)] == ("stayed", expected)
    matrix = migration_matrix(migration)
    assert matrix.loc["New Joiners", "Premium Elite Members"] == 40
    assert matrix.loc["At-Risk Customers", DEPARTED] == 25 and matrix.loc[NEW].sum() == 30
    assert matrix.values.sum() == 1200 + 30

    # The run log: one row per run, and the run id on both gold tables.
    runs = spark.read.table(where.qualified(TB.GOLD_RUNS)).orderBy("run_time").collect()
    assert [r.run_id for r in runs] == ["run-1", "run-2"] and [r.mode for r in runs] == ["fit", "score"]
    assert runs[1].output_versions[TB.GOLD_SEGMENTS] == w2["output_versions"][TB.GOLD_SEGMENTS]
    assert runs[0].input_rows == {TB.KPI_CUSTOMER_VALUE: 1200} and runs[1].customers == 1200 - 25 + 30
    assert runs[0].parameters["k"] == "5" and runs[0].parameters["null_policy"] == "impute"
    assert runs[0].silhouette == pytest.approx(fit.silhouette)
    for table in (TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY):
        assert {r.run_id for r in spark.read.table(where.qualified(table)).select("run_id").distinct().collect()} == {"run-2"}
    assert w1["previous_version"] is None
