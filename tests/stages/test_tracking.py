"""MLflow tracking of the cluster stage: a real clustering logged to the local SQLite store in a lakehouse
and read back through MlflowClient; off, auto and on (required) with and without MLflow."""
import json
import os
import sys
import warnings

import mlflow  # the test extra installs it
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import functions as F

from seglib import tracking
from seglib.cluster import SegmentModel, fit_segments, save_model
from seglib.errors import ParameterError
from seglib.features import FEATURES

quiet = dict(log=lambda *a, **k: None)
JOB_PARAMS = {"schema": "contoso", "k": "auto", "k_range": "3-4", "seed": 42, "n_init": 1, "stability_runs": 1,
              "client_secret_key": "sp-secret-name", "client_secret": "hunter2"}


@pytest.fixture(autouse=True)
def _no_outside_store(monkeypatch):
    """Local runs only: no tracking server or platform from the environment."""
    for name in ("MLFLOW_TRACKING_URI", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def features(spark):
    """400 customers in three seeded blobs, straight into the features table's columns (the Gold
    tables and build_features are not what is under test here, and cost more Spark jobs)."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(1, 100, size=(3, len(FEATURES)))
    rows = np.abs(centres[np.arange(400) % 3] * rng.normal(1, 0.1, size=(400, len(FEATURES))))
    pdf = pd.DataFrame(rows, columns=FEATURES).assign(customer_key=np.arange(1, 401))
    return spark.createDataFrame(pdf[["customer_key", *FEATURES]]).cache()


@pytest.fixture(scope="module")
def fitted(features):
    # k=auto so there is a sweep (and its figure); one restart and one refit keep it quick
    return fit_segments(features, k="auto", k_range="3-4", seed=42, n_init=1, stability_runs=1, **quiet)


@pytest.fixture(scope="module")
def logged(fitted, tmp_path_factory):
    import plotly.express as px
    lakehouse = tmp_path_factory.mktemp("tracked-lakehouse")
    model_path = str(lakehouse / "models" / "segmentation")
    save_model(fitted, model_path)
    figure = px.line(fitted.sweep, x="k", y="silhouette", markers=True)
    lines = []
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("error", RuntimeWarning)  # auto mode turns a failure into a warning: here, fail
        for name in ("MLFLOW_TRACKING_URI", "DATABRICKS_RUNTIME_VERSION"):
            mp.delenv(name, raising=False)
        run_id = tracking.log_clustering(fitted, JOB_PARAMS, {"k sweep": figure, "not drawn": None}, enabled="auto",
                                         lakehouse=str(lakehouse), model_path=model_path, log=lines.append)
    return lakehouse, run_id, lines, model_path


def test_local_store_is_sqlite_in_the_lakehouse(tmp_path, monkeypatch):
    assert tracking.tracking_uri(str(tmp_path)) == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"
    assert tracking.artifact_location(str(tmp_path)) == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(str(tmp_path)) == "http://127.0.0.1:5000"  # the user's choice wins
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert tracking.tracking_uri(str(tmp_path)) == "databricks"  # the platform's own, left alone


def test_run_records_params_metrics_and_segments(fitted, logged):
    lakehouse, run_id, lines, _ = logged
    assert run_id and lines == [f"MLflow: run {run_id} in experiment 1 at sqlite:///{lakehouse.resolve().as_posix()}"
                                f"/mlflow.db"]
    client = MlflowClient(tracking.tracking_uri(str(lakehouse)))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "seglib-segmentation"
    assert run.info.artifact_uri.startswith((lakehouse.resolve() / "mlartifacts").as_uri())
    assert run.data.tags["seglib.mode"] == "fit"
    assert run.data.tags["mlflow.runName"] == f"cluster fit k={fitted.k}"

    params = run.data.params
    # every parameter, as text; the name of a secret is kept (client_secret_key), a secret's value is not
    assert params == {**{k: str(v) for k, v in JOB_PARAMS.items()}, "client_secret": "***"}
    assert params["seed"] == "42" and params["client_secret_key"] == "sp-secret-name"

    m = run.data.metrics
    assert m["k"] == fitted.k and m["customers"] == fitted.customers == 400 and m["fitted_on"] == fitted.fitted_on
    assert m["silhouette"] == pytest.approx(fitted.silhouette, abs=1e-12)
    assert m["stability_ari"] == pytest.approx(fitted.stability.mean_ari, abs=1e-12)
    # All 400 are in the fit sample: the shares are those of the assignments.
    sizes = fitted.assignments.toPandas().segment.value_counts().to_dict()
    assert {k: v for k, v in m.items() if k.startswith("segment_share.")} == \
        {f"segment_share.{s}": pytest.approx(n / 400, abs=1e-12) for s, n in sizes.items()}
    assert sum(sizes.values()) == 400 and len(sizes) == fitted.k
    stability = {f"segment_stability.{fitted.names[c][0]}": pytest.approx(j)
                 for c, j in fitted.stability.jaccard.items()}
    assert {k: v for k, v in m.items() if k.startswith("segment_stability.")} == stability
    assert m["unstable_segments"] == len(fitted.unstable_segments())

    history = client.get_metric_history(run_id, "k_sweep.silhouette")
    assert [(h.step, h.value) for h in history] == [(r["k"], pytest.approx(r["silhouette"])) for r in fitted.sweep]
    assert [r["k"] for r in fitted.sweep] == [3, 4]


def test_run_holds_the_model_and_the_figure(spark, features, fitted, logged, tmp_path):
    lakehouse, run_id, _, model_path = logged
    client = MlflowClient(tracking.tracking_uri(str(lakehouse)))
    top = {a.path for a in client.list_artifacts(run_id)}
    assert top == {"figures", "model", "segments.json", "k_sweep.json"}
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/k_sweep.html"]  # None skipped
    html = (tmp_path / "k_sweep.html")
    client.download_artifacts(run_id, "figures/k_sweep.html", str(tmp_path))
    assert "plotly" in html.read_text()
    saved = {a.path for a in client.list_artifacts(run_id, "model/saved")}
    assert {"model/saved/pipeline", "model/saved/model", "model/saved/segments"} <= saved

    folder = client.download_artifacts(run_id, "model", str(tmp_path))
    spec = json.loads(open(os.path.join(folder, "model.json")).read())
    assert spec["seed"] == fitted.seed and spec["fitted_on"] == fitted.fitted_on
    spec.pop("seed"), spec.pop("fitted_on")
    model = SegmentModel(**{**spec, "bounds": {c: tuple(b) for c, b in spec["bounds"].items()}})
    assert model == fitted.model
    names = json.loads(open(os.path.join(folder, "segments.json")).read())
    assert {r["cluster"]: (r["segment"], r["segment_name"]) for r in names} == fitted.names
    # The SQL alone, as plain Spark ML, puts every customer in the cluster the fit did.
    statement = open(os.path.join(folder, "statement.sql")).read()
    scored = PipelineModel(stages=[SQLTransformer(statement=statement)]).transform(features) \
        .join(fitted.assignments.withColumnRenamed("cluster", "fit"), "customer_key") \
        .agg(F.count("*").alias("rows"), F.sum((F.col("cluster") != F.col("fit")).cast("int")).alias("moved")).first()
    assert (scored["rows"], scored["moved"]) == (400, 0)
    # The saved folder, file for file as save_model wrote it.
    assert _files(os.path.join(folder, "saved")) == _files(model_path) and len(_files(model_path)) >= 6


def _files(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(root) for f in names}


def test_tracking_uri_is_restored_after_the_run(logged):
    assert not mlflow.is_tracking_uri_set() and "MLFLOW_TRACKING_URI" not in os.environ


def test_a_tracking_uri_set_by_the_user_is_used_and_left_alone(fitted, tmp_path, monkeypatch):
    theirs = f"sqlite:///{(tmp_path / 'theirs.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)
    monkeypatch.chdir(tmp_path)  # MLflow puts that store's files in ./mlruns
    run_id = tracking.log_clustering(fitted, {}, enabled="on", lakehouse=str(tmp_path / "lakehouse"),
                                     experiment="elsewhere", **quiet)
    assert os.environ["MLFLOW_TRACKING_URI"] == theirs and not (tmp_path / "lakehouse").exists()
    run = MlflowClient(theirs).get_run(run_id)
    assert run.data.metrics["k"] == fitted.k and MlflowClient(theirs).get_experiment(run.info.experiment_id).name \
        == "elsewhere"


def test_off_records_nothing(fitted, tmp_path):
    for off in ("off", False, " OFF "):
        assert tracking.log_clustering(fitted, JOB_PARAMS, enabled=off, lakehouse=str(tmp_path), **quiet) is None
    assert list(tmp_path.iterdir()) == []  # no store was even created


def test_parse_tracking():
    assert [tracking.parse_tracking(v) for v in ("auto", " On", "OFF")] == ["auto", "on", "off"]
    for bad in ("yes", "", None, "true"):
        with pytest.raises(ParameterError, match=r"mlflow must be one of auto, on, off, got"):
            tracking.parse_tracking(bad)
    with pytest.raises(ParameterError, match="mlflow must be one of"):
        tracking.log_clustering(None, {}, enabled="sometimes", **quiet)


def test_without_mlflow_required_raises_and_auto_skips(fitted, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails, as when it is not installed
    assert not tracking.mlflow_available()
    for on in ("on", True):
        with pytest.raises(tracking.TrackingUnavailable, match=r"mlflow=on, but MLflow is not installed: "
                                                               r"pip install 'seglib\[mlflow\]'"):
            tracking.log_clustering(fitted, JOB_PARAMS, enabled=on, lakehouse=str(tmp_path), **quiet)
    lines = []
    assert tracking.log_clustering(fitted, JOB_PARAMS, lakehouse=str(tmp_path), log=lines.append) is None
    assert lines == ["MLflow tracking skipped: MLflow is not installed (pip install 'seglib[mlflow]')"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_store_warns_in_auto_and_raises_when_required(fitted, tmp_path):
    lakehouse = tmp_path / "a-file"  # the store cannot be created inside a file
    lakehouse.write_text("")
    with pytest.warns(RuntimeWarning, match="MLflow tracking failed, the run goes on without it: "):
        assert tracking.log_clustering(fitted, JOB_PARAMS, lakehouse=str(lakehouse), **quiet) is None
    with pytest.raises(Exception) as raised:
        tracking.log_clustering(fitted, JOB_PARAMS, enabled="on", lakehouse=str(lakehouse), **quiet)
    assert not isinstance(raised.value, tracking.TrackingUnavailable)
    assert not mlflow.is_tracking_uri_set()  # restored on failure too


def test_credentials_in_a_url_are_not_printed():
    assert tracking._safe("cannot reach https://alice:s3cret@example.org/mlflow") == \
        "cannot reach https://***@example.org/mlflow"


def test_autologging_does_not_turn_every_kmeans_fit_into_a_run(features, tmp_path, monkeypatch):
    """As on Fabric, where mlflow.autolog() is on in every notebook: one segmentation makes many
    scikit-learn fits, and none of them may become a run (seglib logs one run itself)."""
    import mlflow
    monkeypatch.chdir(tmp_path)  # where MLflow would put artifacts of a run
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/autolog.db")
    try:
        mlflow.sklearn.autolog()
        from sklearn.cluster import KMeans
        KMeans(n_clusters=2, n_init=1, random_state=0).fit(np.arange(20.0).reshape(10, 2))
        autologged = len(mlflow.search_runs(search_all_experiments=True))
        assert autologged == 1  # autologging is really on: a fit outside seglib is recorded
        fit_segments(features, k=3, seed=42, n_init=2, stability_runs=1, **quiet)
        assert len(mlflow.search_runs(search_all_experiments=True)) == autologged
    finally:
        mlflow.autolog(disable=True)
        mlflow.set_tracking_uri(None)
