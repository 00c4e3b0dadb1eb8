"""MLflow tracking of the cluster stage, an optional extra (``pip install 'seglib[mlflow]'``).

One run per clustering: the job's parameters, the quality metrics (silhouette, stability, segment shares,
the k sweep), the fitted model and the notebook's figures.

Where runs go:

- Databricks (``DATABRICKS_RUNTIME_VERSION`` set): MLflow is built in and its tracking URI
  ("databricks") is left alone. A relative experiment name is not valid there (experiments are
  workspace paths), so the run goes to the notebook's own experiment unless *experiment* is a path
  such as ``/Shared/seglib``.
- Fabric (``notebookutils`` importable, as ``session.is_managed_runtime`` checks): MLflow is built
  in and points at the workspace (an ``sds://`` URI set by Fabric's plugin); it is left alone and
  the experiment becomes a workspace item of that name.
- ``MLFLOW_TRACKING_URI`` set (by the user, or by ``mlflow.set_tracking_uri``): that store is used.
- Anywhere else: a SQLite store ``<lakehouse>/mlflow.db`` with artifacts under
  ``<lakehouse>/mlartifacts`` (SQLite is MLflow 3's default store; the plain ``./mlruns`` file
  store is in maintenance mode). ``mlflow ui --backend-store-uri sqlite:///<lakehouse>/mlflow.db``
  shows the runs. The URI is set only for the run and restored after, so nothing else in the
  process is redirected.

The model is logged as files, not with ``mlflow.spark.log_model``: the fitted model is one SQL
statement inside a Spark ML PipelineModel (see cluster.py). ``mlflow.spark.log_model`` would need a
live session, Spark ML writing to a path the client can copy from (not so over Spark Connect, where
the server writes to its own disk) and the pyfunc flavour's dependencies; the files below need none
of that and hold the whole model: ``model/model.json`` (what ``cluster.save_model`` writes, which
seglib scores with), ``model/segments.json`` (the names), ``model/statement.sql`` (plain Spark ML:
``PipelineModel([SQLTransformer(statement=...)])``), and the saved model folder itself under
``model/saved/`` when *model_path* is a folder on this machine (a local lakehouse, or a Unity
Catalog volume as Databricks mounts it).

Given the run's tables (*where*), a fit's run also registers the model as a new version in the MLflow
Model Registry, an MLflow pyfunc model with a signature that Unity Catalog accepts (registry.py); the
write step makes it the champion once it has published.
"""
from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ParameterError, SeglibError
from .session import DEFAULT_LAKEHOUSE, is_managed_runtime

if TYPE_CHECKING:
    from .cluster import ClusterResult

# Imported ahead by the local runner while the notebook before runs (seglib.local.runner); here it is imported
# only when a run is logged, as the import takes about 3 s. The SQLite store's module is another 0.7 s,
# paid by the first run a process logs locally.
__preload__ = ("mlflow", "mlflow.store.tracking.sqlalchemy_store")

TRACKING = ("auto", "on", "off")
INSTALL_HINT = "pip install 'seglib[mlflow]'"
DEFAULT_EXPERIMENT = "seglib-segmentation"
_SECRET_NAME = re.compile(r"(password|passwd|token|secret|credential)s?$", re.IGNORECASE)  # holds a secret's value
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")  # user:password@ in a URL


class TrackingUnavailable(SeglibError, ImportError):
    """mlflow=on, but MLflow is not installed."""


def mlflow_available() -> bool:
    """True when mlflow can be imported (looked up, not imported: the import takes seconds)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def parse_tracking(value) -> str:
    """The ``mlflow`` job parameter: auto (track when MLflow is installed), on (required) or off."""
    text = "" if value is None else str(value).strip().lower()
    if text not in TRACKING:
        raise ParameterError(f"mlflow must be one of {', '.join(TRACKING)}, got {value!r}")
    return text


def _mode(enabled) -> str:
    if isinstance(enabled, bool):
        return "on" if enabled else "off"
    return parse_tracking(enabled)


def _platform_uri() -> str | None:
    """The tracking URI that is not seglib's to choose, or None for a local run."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "databricks"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_managed_runtime():  # Fabric: its MLflow plugin sets the workspace's URI when mlflow is imported
        import mlflow
        return mlflow.get_tracking_uri()
    return None


def tracking_uri(lakehouse: str = "") -> str:
    """Where runs are recorded: the platform's store on Databricks and Fabric, MLFLOW_TRACKING_URI when
    set, else a SQLite store in the lakehouse folder."""
    platform = _platform_uri()
    if platform is not None:
        return platform
    return f"sqlite:///{(Path(lakehouse or DEFAULT_LAKEHOUSE).resolve() / 'mlflow.db').as_posix()}"


def artifact_location(lakehouse: str = "") -> str:
    """Where a local run's files go (a new experiment's artifact root)."""
    return (Path(lakehouse or DEFAULT_LAKEHOUSE).resolve() / "mlartifacts").as_uri()


def _safe(text: str) -> str:
    """No credentials from a URL in anything seglib prints."""
    return _USERINFO.sub("***@", str(text))


def _params(result: ClusterResult, params: dict) -> dict[str, str]:
    """The parameters as given (the cluster stage's, then the job's), as strings; a parameter whose name
    says it holds a secret's value is masked (names of secrets, like client_secret_key, are kept)."""
    merged = {**result.parameters, **(params or {})}
    return {str(k): ("***" if _SECRET_NAME.search(str(k)) else str(v)) for k, v in sorted(merged.items())}


def _metrics(result: ClusterResult, shares: dict[int, float]) -> dict[str, float]:
    metrics = {"k": result.k, "silhouette": result.silhouette, "customers": result.customers,
               "unstable_segments": len(result.stability.unstable)}
    if result.fitted_on:
        metrics["fitted_on"] = result.fitted_on
    if result.stability.mean_ari is not None:
        metrics["stability_ari"] = result.stability.mean_ari
    metrics.update({f"segment_share.{s}": share for s, share in sorted(shares.items())})
    metrics.update({f"segment_stability.{result.names[c][0]}": j for c, j in sorted(result.stability.jaccard.items())})
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _segments(result: ClusterResult, shares: dict[int, float]) -> list[dict[str, Any]]:
    return [{"segment": s, "segment_name": n, "cluster": c, "share": shares.get(s, 0.0),
             "stability_jaccard": result.stability.jaccard.get(c)}
            for c, (s, n) in sorted(result.names.items(), key=lambda item: item[1][0])]


def _figure_file(name: str) -> str:
    stem = re.sub(r"[^\w.-]+", "_", name).strip("_") or "figure"
    return f"figures/{stem}" if stem.endswith((".html", ".png", ".svg", ".jpg")) else f"figures/{stem}.html"


def _experiment_id(mlflow, experiment: str, lakehouse: str, local: bool) -> str | None:
    if os.environ.get("DATABRICKS_RUNTIME_VERSION") and not experiment.startswith("/"):
        return None  # Databricks: the notebook's experiment (names there are workspace paths)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {experiment!r} is deleted; restore it or pass another name")
        return found.experiment_id
    # Local: the run's files go beside the database in the lakehouse, not into ./mlruns of the cwd.
    return mlflow.create_experiment(experiment, artifact_location=artifact_location(lakehouse) if local else None)


def _log_run(mlflow, result: ClusterResult, params: dict, figures: dict | None, experiment: str, lakehouse: str,
             run_name: str, model_path: str, local: bool, log, where=None, run_id: str = "",
             required: bool = False) -> tuple[str, str]:
    from . import __version__
    experiment_id = _experiment_id(mlflow, experiment, lakehouse, local)
    # Shares of the fit sample after a fit (what the model and its names come from), of every customer when
    # scoring (ClusterResult.cluster_stats); gold_segment_summary has every segment's count.
    shares = result.segment_shares()
    name = run_name or f"cluster {result.mode} k={result.k}"
    # Nested when a run is already open (a user's own, or a platform's), so it is neither ended nor reused.
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"seglib.version": __version__, "seglib.mode": result.mode,
                         "seglib.feature_transform": result.transform, **({"seglib.run_id": run_id} if run_id else {})})
        mlflow.log_params(_params(result, params))
        mlflow.log_metrics(_metrics(result, shares))
        for row in result.sweep:  # one point per k: the MLflow UI charts it over "step"
            mlflow.log_metrics({f"k_sweep.{m}": float(row[m]) for m in ("silhouette", "inertia") if m in row},
                               step=int(row["k"]))
        mlflow.log_dict(_segments(result, shares), "segments.json")
        if result.sweep:
            mlflow.log_dict({"k_sweep": result.sweep}, "k_sweep.json")
        mlflow.log_dict(result.saved_model(), "model/model.json")
        mlflow.log_dict(result.saved_segments(), "model/segments.json")
        mlflow.log_text(result.model.statement(), "model/statement.sql")
        if model_path and os.path.isdir(model_path):
            mlflow.log_artifacts(model_path, "model/saved")
        elif model_path and not model_path.startswith("models:/"):  # a registered version is in the registry
            log(f"MLflow: the saved model at {model_path} is not a folder on this machine; "
                f"logged its JSON and SQL instead")
        for key, figure in (figures or {}).items():
            if figure is not None:
                mlflow.log_figure(figure, _figure_file(key))
        if where is not None and result.mode == "fit":
            _register(mlflow, result, where, run_id, model_path, lakehouse, required, log)
        return run.info.run_id, run.info.experiment_id


def _register(mlflow, result: ClusterResult, where, run_id: str, model_path: str, lakehouse: str, required: bool,
              log) -> None:
    """A new version of the registered model (registry.py), noted on *result* for the handover; a failure
    only warns unless tracking is required, and the run's record stays."""
    from . import registry
    try:
        registered = registry.register(mlflow, result, where, run_id, model_path)
    except Exception as e:
        if required:
            raise
        warnings.warn(f"MLflow Model Registry: the model was not registered, the run goes on without it (the "
                      f"champion stays where it was): {type(e).__name__}: {_safe(e)}", RuntimeWarning, stacklevel=3)
        return
    result.registered_model, result.model_version = registered.name, registered.version
    log(f"MLflow Model Registry: registered {registered.name} version {registered.version} at "
        f"{_safe(registry.registry_uri(lakehouse))}; the write step makes it @{registry.ALIAS} once it has published")


def log_clustering(result: ClusterResult, params: dict, figures: dict | None = None, *,
                   enabled: bool | str = "auto", lakehouse: str = "", experiment: str = DEFAULT_EXPERIMENT,
                   run_name: str = "", model_path: str = "", where=None, run_id: str = "",
                   log=print) -> str | None:
    """Record the clustering as one MLflow run and return its id; None when tracking is off or skipped.

    *enabled*: "auto" tracks when mlflow is installed, and a failure to track only warns (the segments
    are the product, the run record is not); True/"on" requires it (a missing mlflow or a failure
    raises); False/"off" skips. *figures*: plotly figures by name, logged as figures/<name>.html.
    *model_path*: the folder ``cluster.save_model`` wrote, logged as files when it is local. *where*: the
    run's tables; given, a fit's model is also registered as a new version in the MLflow Model Registry
    (registry.py: not made champion here), tagged with seglib's *run_id*, and the version is noted on
    *result* (registered_model, model_version) for save_cluster_outputs to hand over."""
    mode = _mode(enabled)
    if mode == "off":
        return None
    if not mlflow_available():
        if mode == "on":
            raise TrackingUnavailable(f"mlflow=on, but MLflow is not installed: {INSTALL_HINT}")
        log(f"MLflow tracking skipped: MLflow is not installed ({INSTALL_HINT})")
        return None
    restore = False
    try:
        import mlflow
        local = _platform_uri() is None
        uri = tracking_uri(lakehouse)
        if local:  # only for this run: MLflow keeps the URI process-wide (and in the environment)
            mlflow.set_tracking_uri(uri)
            restore = True
        tracked, experiment_id = _log_run(mlflow, result, params, figures, experiment, lakehouse, run_name,
                                          model_path, local, log, where, run_id, mode == "on")
        log(f"MLflow: run {tracked} in experiment {experiment_id} at {_safe(uri)}")
        return tracked
    except Exception as e:
        if mode == "on":
            raise
        warnings.warn(f"MLflow tracking failed, the run goes on without it: {type(e).__name__}: {_safe(e)}",
                      RuntimeWarning, stacklevel=2)
        return None
    finally:
        if restore:
            mlflow.set_tracking_uri(None)  # MLflow's own default again (it also clears MLFLOW_TRACKING_URI)
