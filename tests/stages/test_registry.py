"""The model in the MLflow Model Registry, on the local SQLite registry of a lakehouse and real Spark: a fit
registers a version (tagged, no alias), the write step makes it champion only after publishing, a score with
no model_path uses the champion (and reproduces the fit), a failed publish leaves the champion where it was,
and a run with tracking off leaves the registry alone."""
import dataclasses
import warnings

import mlflow  # the test extra installs it
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import functions as F

from seglib import publish as P
from seglib import registry
from seglib import tables as TB
from seglib import tracking
from seglib.cluster import default_model_path, save_cluster_outputs, segment
from seglib.errors import InputContractError, ParameterError
from seglib.features import build_features
from seglib.load import read_input, record_inputs
from seglib.write import write_outputs

quiet = lambda *a, **k: None  # noqa: E731
NAME = f"{registry.DEFAULT_NAME}_registry_t"  # the schema of the lake fixture


@pytest.fixture(autouse=True)
def _no_outside_store(monkeypatch):
    """Local runs only: no tracking server, registry or platform from the environment."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DATABRICKS_RUNTIME_VERSION", P.FAULT_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def lake(spark, demo, fitted, tmp_path_factory):
    """One lakehouse (its mlflow.db is the registry) and one schema with what the earlier steps hand over."""
    lakehouse = tmp_path_factory.mktemp("registry-lakehouse")
    where = TB.Location("registry_t")
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
    kpi = read_input(spark, TB.KPI_CUSTOMER_VALUE, demo)
    record_inputs(spark, {TB.KPI_CUSTOMER_VALUE: 3000}, where)
    build_features(kpi)[1].save(spark, where)
    return str(lakehouse), where, kpi


def client(lakehouse):
    uri = tracking.tracking_uri(lakehouse)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def cluster_step(result, lakehouse, where, run_id, tracking_mode="on"):
    """The cluster notebook's saving cell: the model, then the MLflow run (which registers a fit), then the
    handover tables."""
    model_path = default_model_path(lakehouse, where)
    def track():
        tracking.log_clustering(result, result.parameters, enabled=tracking_mode, lakehouse=lakehouse,
                                model_path=model_path, where=where, run_id=run_id, log=quiet)
    return save_cluster_outputs(result, model_path, where, track=track).first()


def write_step(spark, lake, run_id, tracking_mode="on"):
    """The write notebook's publishing cell: write_outputs, and the champion moved once it has published."""
    lakehouse, where, kpi = lake
    assignments = TB.read_table(spark, TB.SEG_ASSIGNMENTS, where)
    return write_outputs(spark, kpi, assignments, where, run_id=run_id, log=quiet,
                         published=lambda w: registry.promote(spark, where, tracking_mode, lakehouse, w["run_id"],
                                                              log=quiet))


def champion(lakehouse):
    return str(client(lakehouse).get_model_version_by_alias(NAME, registry.ALIAS).version)


def _fit(fitted, **kwargs):
    """A copy of the shared fit (its registered version is noted on the result), or a refit."""
    features, result = fitted
    if kwargs:
        result = segment(features, "fit", k=kwargs["k"], seed=42, n_init=1, stability_runs=0, log=quiet)
    else:
        result = dataclasses.replace(result, parameters={"recipe": "airline", "mode": "fit", "k": "5"})
    return features, result


@pytest.fixture(scope="module")
def first(spark, lake, fitted):
    """A fit registered and published: version 1, champion."""
    lakehouse, where, _ = lake
    features, result = _fit(fitted)
    metrics = cluster_step(result, lakehouse, where, "run-1")
    registered_before_write = client(lakehouse).get_registered_model(NAME).aliases
    written = write_step(spark, lake, "run-1")
    return result, metrics, registered_before_write, written


def test_a_fit_registers_a_tagged_version_without_moving_the_alias(lake, first):
    lakehouse, where, _ = lake
    result, metrics, aliases_before_write, _ = first
    # the version reaches the write step through the handover table
    assert (metrics["registered_model"], metrics["model_version"]) == (NAME, "1")
    assert (result.registered_model, result.model_version) == (NAME, "1")
    version = client(lakehouse).get_model_version(NAME, "1")
    assert version.tags["seglib.run_id"] == "run-1" and version.tags["seglib.k"] == "5"
    assert version.tags["seglib.recipe"] == "airline" and version.tags["seglib.schema"] == where.schema
    run = client(lakehouse).get_run(version.run_id)  # the fit's MLflow run
    assert run.data.tags["seglib.run_id"] == "run-1" and run.data.tags["seglib.mode"] == "fit"
    assert not aliases_before_write  # registered, not yet champion: the write step had not published


def test_the_write_step_makes_the_published_fit_champion(lake, first):
    lakehouse, _, _ = lake
    written = first[3]
    assert written["published"] == registry.Registered(NAME, "1")
    assert champion(lakehouse) == "1"
    assert client(lakehouse).get_model_version(NAME, "1").tags["seglib.published_run_id"] == "run-1"


def test_score_without_model_path_uses_the_champion_and_reproduces_the_fit(spark, lake, fitted, first):
    lakehouse, where, _ = lake
    features, fit = fitted
    model_path = default_model_path(lakehouse, where, mode="score", tracking="auto", log=quiet)
    assert model_path == f"models:/{NAME}@champion"
    scored = segment(features, "score", model_path, lakehouse=lakehouse)
    assert (scored.registered_model, scored.model_version) == (NAME, "1")
    assert scored.names == fit.names and scored.model == fit.model
    diff = fit.assignments.exceptAll(scored.assignments).count() + scored.assignments.exceptAll(fit.assignments).count()
    assert diff == 0 and scored.assignments.count() == 3000
    metrics = save_cluster_outputs(scored, model_path, where).first()
    # the run log gets the version that scored, not the alias (which moves)
    assert metrics["model_path"] == f"models:/{NAME}/1" and metrics["model_version"] == "1"
    assert registry.promote(spark, where, "on", lakehouse, "run-score", log=quiet) is None  # a score promotes nothing
    assert champion(lakehouse) == "1"


def test_the_registered_pyfunc_assigns_as_seglib_does_in_spark(lake, fitted, first):
    """The pyfunc (what a serving endpoint runs) against seglib's Spark SQL assignment, on every customer."""
    lakehouse, _, _ = lake
    features, fit = fitted
    with registry.store(lakehouse):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    columns = list(fit.model.features)
    pdf = features.select("customer_key", *[F.col(c).cast("double") for c in columns]).toPandas()
    predicted = model.predict(pdf[columns])
    assert list(predicted.columns) == ["cluster", "segment", "segment_name"]
    expected = fit.assignments.toPandas().set_index("customer_key").loc[pdf.customer_key]
    pd.testing.assert_frame_equal(predicted.reset_index(drop=True),
                                  expected[["cluster", "segment", "segment_name"]].reset_index(drop=True),
                                  check_dtype=False)
    signature = model.metadata.get_input_schema().input_names()
    assert signature == columns


def test_a_failed_publish_leaves_the_champion_where_it_was(spark, lake, fitted, first, monkeypatch):
    lakehouse, where, _ = lake
    gold_before = TB.table_version(spark, TB.GOLD_SEGMENTS, where)
    _, refit = _fit(fitted, k=4)
    metrics = cluster_step(refit, lakehouse, where, "run-2")
    assert metrics["model_version"] == "2"
    monkeypatch.setenv(P.FAULT_ENV, "publish:end")  # after the tables and the run log row: the last checkpoint
    with pytest.raises(P.InjectedFault):
        write_step(spark, lake, "run-2")
    monkeypatch.delenv(P.FAULT_ENV)
    assert champion(lakehouse) == "1"
    assert client(lakehouse).get_model_version(NAME, "2").aliases == []
    # the gold tables were restored (publish.py): their segments are still the champion's
    restored = TB.read_table(spark, TB.GOLD_SEGMENTS, where)
    assert restored.select("run_id").distinct().collect()[0][0] == "run-1"
    assert TB.table_version(spark, TB.GOLD_SEGMENTS, where) > gold_before  # RESTORE is a new version
    # The retried write (same run id) publishes, and only then moves the champion.
    written = write_step(spark, lake, "run-2")
    assert written["published"] == registry.Registered(NAME, "2") and champion(lakehouse) == "2"


def test_tracking_off_leaves_the_registry_alone(spark, lake, fitted, first):
    lakehouse, where, _ = lake
    versions = len(client(lakehouse).search_model_versions(f"name='{NAME}'"))
    before = champion(lakehouse)
    _, result = _fit(fitted)
    metrics = cluster_step(result, lakehouse, where, "run-off", tracking_mode="off")
    assert metrics["registered_model"] is None and metrics["model_version"] is None
    lines = []
    written = write_outputs(spark, lake[2], TB.read_table(spark, TB.SEG_ASSIGNMENTS, where), where, run_id="run-off",
                            log=quiet, published=lambda w: registry.promote(spark, where, "off", lakehouse,
                                                                            w["run_id"], log=lines.append))
    assert written["published"] is None and lines == ["MLflow Model Registry: not used (mlflow_tracking=off)"]
    # tracking on in the write step, but the fit registered nothing: said so, and nothing moves
    assert registry.promote(spark, where, "auto", lakehouse, "run-off", log=lines.append) is None
    assert "this fit registered no model version" in lines[-1]
    assert len(client(lakehouse).search_model_versions(f"name='{NAME}'")) == versions and champion(lakehouse) == before
    said = []
    assert default_model_path(lakehouse, where, mode="score", tracking="off", log=said.append) == \
        default_model_path(lakehouse, where)  # the folder a fit saved, and it says so
    assert "not used (mlflow_tracking=off)" in said[0]


def test_score_with_no_champion_says_what_to_do(spark, fitted, tmp_path):
    features, _ = fitted
    with pytest.raises(InputContractError) as e:
        segment(features, "score", f"models:/{NAME}@champion", lakehouse=str(tmp_path))
    message = str(e.value)
    assert f"registered model '{NAME}'" in message and "no version with alias 'champion'" in message
    assert f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db" in message
    assert "mode=fit" in message and "model_path" in message


def test_registry_auto_failure_warns_and_the_run_goes_on(spark, lake, fitted, monkeypatch):
    """mlflow_tracking=auto: a registry that refuses only warns; the fit hands over no version."""
    lakehouse, where, _ = lake
    _, result = _fit(fitted)

    def refuse(*a, **k):
        raise RuntimeError("registry down")
    monkeypatch.setattr(registry, "register", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = cluster_step(result, lakehouse, where, "run-auto", tracking_mode="auto")
    assert metrics["model_version"] is None
    assert any("not registered" in str(w.message) and "registry down" in str(w.message) for w in caught)


def test_names_and_uris(monkeypatch, tmp_path):
    where = TB.Location("contoso", "main")
    assert registry.model_name(where) == "seglib_segmentation_contoso"
    assert registry.model_name(TB.Location("shop")) == "seglib_segmentation_shop"  # a schema's own champion
    assert registry.registry_uri(str(tmp_path)) == tracking.tracking_uri(str(tmp_path))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert registry.model_name(where) == "main.contoso.seglib_segmentation"
    assert registry.registry_uri() == "databricks-uc"
    with pytest.raises(ParameterError, match="catalog is empty"):
        registry.model_name(TB.Location("contoso"))
    assert registry.parse_model_uri("models:/a.b.c@champion") == ("a.b.c", "champion", None)
    assert registry.parse_model_uri("models:/m/3") == ("m", None, "3")
    with pytest.raises(ParameterError, match="models:/<name>@<alias>"):
        registry.parse_model_uri("models:/m")
