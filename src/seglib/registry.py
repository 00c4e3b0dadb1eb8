"""The fitted model in the MLflow Model Registry: a fit registers a new version, the write step makes it
the ``champion`` once the gold tables are published, and ``mode=score`` without a model_path scores with
``models:/<name>@champion``.

Where the model is registered (the tracking store of tracking.py, so the same places):

- Databricks (``DATABRICKS_RUNTIME_VERSION`` set): Unity Catalog (registry URI ``databricks-uc``), as
  ``<catalog>.<schema>.seglib_segmentation``, beside the gold tables. Unity Catalog requires a signature,
  hence a real MLflow model below.
- Fabric: the workspace's MLflow, as ``seglib_segmentation_<schema>`` (a workspace item).
- ``MLFLOW_REGISTRY_URI`` or ``MLFLOW_TRACKING_URI`` set: that store.
- Anywhere else: the SQLite store ``<lakehouse>/mlflow.db`` that the runs go to, as
  ``seglib_segmentation_<schema>``.

What is registered: a pyfunc model (registered_model.py, "models from code": numpy and pandas only)
whose artifacts are seglib's own files, ``model.json`` and ``segments.json`` (what ``cluster.save_model``
writes and seglib scores with) and ``statement.sql`` (the plain Spark ML statement), with a signature
made from the model's features. seglib scores in Spark: it downloads the version's files and reads the
two JSON files on the driver (cluster.load_registered), which works over Spark Connect too.

Why the alias moves in the write step and not at the fit: the fit's segments are only the product once
they are published; a run that fails anywhere before (validation, publish, SEGLIB_FAULT) leaves the
champion where it was, and the next scoring run uses the model of the segments the gold tables hold.
The version reaches the write step through the handover table seg_cluster_metrics (registered_model,
model_version).
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import tables as TB
from . import tracking as T
from .errors import InputContractError, ParameterError, SeglibError

__preload__ = ("mlflow",)

DEFAULT_NAME = "seglib_segmentation"
ALIAS = "champion"
MODEL_FILE = Path(__file__).with_name("registered_model.py")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))/?$")


class RegistryError(SeglibError):
    """The model registry could not give or take a model version."""


@dataclass(frozen=True)
class Registered:
    """One version of a registered model."""
    name: str
    version: str

    @property
    def uri(self) -> str:
        """The version's own URI (an alias moves; this does not)."""
        return f"models:/{self.name}/{self.version}"


def on_databricks() -> bool:
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def model_name(where: TB.Location) -> str:
    """The registered model's name: ``<catalog>.<schema>.seglib_segmentation`` in Unity Catalog (Databricks),
    ``seglib_segmentation_<schema>`` elsewhere. One model per schema, as the gold tables: a lakehouse's
    one store holds every schema's runs, and a score must never take another schema's champion."""
    if not on_databricks():
        return f"{DEFAULT_NAME}_{where.schema}"
    if not where.catalog:
        raise ParameterError(f"catalog is empty: on Databricks the model is registered in Unity Catalog as "
                             f"<catalog>.{where.schema}.{DEFAULT_NAME}; set the catalog parameter")
    return f"{where.catalog}.{where.schema}.{DEFAULT_NAME}"


def champion_uri(name: str) -> str:
    return f"models:/{name}@{ALIAS}"


def registry_uri(lakehouse: str = "") -> str:
    """Where model versions are kept: Unity Catalog on Databricks, MLFLOW_REGISTRY_URI when set, else the
    tracking store (tracking.tracking_uri)."""
    if on_databricks():
        return "databricks-uc"
    return os.environ.get("MLFLOW_REGISTRY_URI") or T.tracking_uri(lakehouse)


def enabled(tracking="auto", log=print) -> bool:
    """Whether this run uses the registry: not with mlflow_tracking=off, nor with auto and no MLflow (said
    so); mlflow_tracking=on and no MLflow is an error."""
    mode = T.parse_tracking("on" if tracking is True else "off" if tracking is False else tracking)
    if mode == "off":
        log("MLflow Model Registry: not used (mlflow_tracking=off)")
        return False
    if not T.mlflow_available():
        if mode == "on":
            raise T.TrackingUnavailable(f"mlflow_tracking=on, but MLflow is not installed: {T.INSTALL_HINT}")
        log(f"MLflow Model Registry: not used, MLflow is not installed ({T.INSTALL_HINT})")
        return False
    return True


@contextmanager
def store(lakehouse: str = ""):
    """mlflow pointed at this run's tracking store and registry, for the block only (a local run's SQLite
    store; the platform's own elsewhere, left alone), and its MlflowClient."""
    import mlflow
    from mlflow import MlflowClient
    local = T._platform_uri() is None
    if local:  # MLflow keeps the URI process-wide (and in the environment): restored after
        mlflow.set_tracking_uri(T.tracking_uri(lakehouse))
    elif on_databricks():
        mlflow.set_registry_uri("databricks-uc")  # MLflow 2's default there is the workspace registry
    try:
        yield mlflow, MlflowClient(registry_uri=registry_uri(lakehouse))
    finally:
        if local:
            mlflow.set_tracking_uri(None)


def _signature(features: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    return ModelSignature(inputs=Schema([ColSpec("double", f) for f in features]),
                          outputs=Schema([ColSpec("integer", "cluster"), ColSpec("integer", "segment"),
                                          ColSpec("string", "segment_name")]))


def register(mlflow, result, where: TB.Location, run_id: str = "", model_path: str = "") -> Registered:
    """Log the fit's model (inside the open MLflow run) and register it as a new version of the model,
    tagged with seglib's run id, k, recipe and schema. The alias is not moved here (promote does, after
    the publish)."""
    import json
    from . import __version__
    name = model_name(where)
    if on_databricks():
        mlflow.set_registry_uri("databricks-uc")  # MLflow 2's default there is the workspace registry
    tags = {"seglib.k": str(result.k), "seglib.recipe": result.parameters.get("recipe", ""),
            "seglib.schema": where.schema, "seglib.feature_transform": result.transform,
            "seglib.silhouette": f"{result.silhouette:.4f}", "seglib.version": __version__,
            "seglib.model_path": model_path}
    if run_id:
        tags["seglib.run_id"] = run_id
    with tempfile.TemporaryDirectory(prefix="seglib-model-") as folder:
        files = {"model": Path(folder, "model.json"), "segments": Path(folder, "segments.json"),
                 "statement": Path(folder, "statement.sql")}
        files["model"].write_text(json.dumps(result.saved_model()), encoding="utf-8")
        files["segments"].write_text(json.dumps(result.saved_segments()), encoding="utf-8")
        files["statement"].write_text(result.model.statement(), encoding="utf-8")
        # MLflow 3 names a logged model; MLflow 2 (older Databricks runtimes) places it at an artifact path.
        mlflow3 = int(mlflow.__version__.split(".")[0]) >= 3
        where_to = {"name": DEFAULT_NAME} if mlflow3 else {"artifact_path": "registered_model"}
        with warnings.catch_warnings():
            # The signature is given: no input example is needed to make one.
            warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
            info = mlflow.pyfunc.log_model(python_model=str(MODEL_FILE),
                                           artifacts={k: str(p) for k, p in files.items()},
                                           signature=_signature(list(result.model.features)),
                                           pip_requirements=["mlflow-skinny", "numpy", "pandas"], **where_to)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    return Registered(name, str(version.version))


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> (name, alias, version)."""
    m = _MODEL_URI.match(uri.strip())
    if not m:
        raise ParameterError(f"model_path {uri!r} is not a registered model's URI: expected "
                             f"models:/<name>@<alias> or models:/<name>/<version>")
    return m.group("name"), m.group("alias"), m.group("version")


def _missing(e: Exception) -> bool:
    return getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE") \
        or "not found" in str(e).lower() or "does not exist" in str(e).lower()


def download(model_uri: str, lakehouse: str, dst: str) -> tuple[str, Registered]:
    """The folder holding a registered version's model.json and segments.json (copied into *dst*, a
    folder the caller removes), and which version it is; *model_uri*: models:/<name>@<alias> or
    models:/<name>/<version>."""
    name, alias, number = parse_model_uri(model_uri)
    if not T.mlflow_available():
        raise T.TrackingUnavailable(f"model_path {model_uri} is in the MLflow Model Registry, but MLflow is not "
                                    f"installed: {T.INSTALL_HINT}")
    with store(lakehouse) as (mlflow, client):
        where_ = T._safe(registry_uri(lakehouse))
        try:
            version = (client.get_model_version_by_alias(name, alias) if alias
                       else client.get_model_version(name, number))
        except Exception as e:  # noqa: BLE001 - a missing model or alias is the user's to fix, said below
            if not _missing(e):
                raise RegistryError(f"the MLflow Model Registry at {where_} could not give {model_uri}: "
                                    f"{type(e).__name__}: {T._safe(e)}") from None
            what = f"has no version with alias {alias!r}" if alias else f"has no version {number}"
            raise InputContractError(
                f"mode=score scores with {model_uri}, but the registered model {name!r} in the MLflow Model "
                f"Registry at {where_} {what} (or does not exist): run once with mode=fit and MLflow tracking "
                f"on or auto (its write step makes the new version {ALIAS}), or pass model_path=<the folder a fit "
                f"saved> (mlflow_tracking=off scores with seglib's default folder)") from None
        found = Registered(name, str(version.version))
        folder = mlflow.artifacts.download_artifacts(found.uri, dst_path=dst)
    files = Path(folder, "artifacts")
    if not (files / "model.json").is_file():
        raise InputContractError(f"{found.uri} holds no seglib model (artifacts/model.json): it was not "
                                 f"registered by a seglib fit; pass another model_path")
    return str(files), found


def fitted_version(spark, where: TB.Location) -> tuple[str, Registered | None]:
    """From the cluster step's handover (seg_cluster_metrics): its mode, and the version a fit registered."""
    row = TB.read_table(spark, TB.SEG_CLUSTER_METRICS, where).first().asDict()
    name, version = row.get("registered_model"), row.get("model_version")
    return row["mode"], (Registered(name, version) if name and version else None)


def promote(spark, where: TB.Location, tracking="auto", lakehouse: str = "", run_id: str = "",
            log=print) -> Registered | None:
    """After the write step published: move the ``champion`` alias to the version this run's fit
    registered, and return it; None when there is none to move (a scoring run, a fit that registered
    nothing) or the registry is not used. Call it only once the publish returned: a failed run must
    never move the alias.

    With mlflow_tracking=auto a registry failure warns (the gold tables are published and stay so; the
    champion stays on the previous version); with on it raises."""
    mode, fitted = fitted_version(spark, where)
    if mode != "fit":
        log(f"MLflow Model Registry: mode={mode}, no new model version; the {ALIAS} stays where it was")
        return None
    if not enabled(tracking, log):
        return None
    if fitted is None:
        log("MLflow Model Registry: this fit registered no model version (MLflow tracking was off or failed in "
            "the cluster step); the registry is left alone")
        return None
    on = T.parse_tracking("on" if tracking is True else tracking) == "on"
    try:
        with store(lakehouse) as (_, client):
            try:
                before = client.get_model_version_by_alias(fitted.name, ALIAS).version
            except Exception:  # noqa: BLE001 - no champion yet
                before = None
            client.set_registered_model_alias(fitted.name, ALIAS, fitted.version)
            if run_id:
                client.set_model_version_tag(fitted.name, fitted.version, "seglib.published_run_id", run_id)
        was = f"was version {before}" if before is not None else "the first"
        log(f"MLflow Model Registry: {fitted.name} version {fitted.version} is now @{ALIAS} ({was}) at "
            f"{T._safe(registry_uri(lakehouse))}")
        return fitted
    except Exception as e:
        message = (f"the gold tables are published, but {fitted.name} version {fitted.version} could not be made "
                   f"@{ALIAS} ({type(e).__name__}: {T._safe(e)}); the {ALIAS} stays on the previous version. Rerun "
                   f"the write step with the same run_id, or set the alias in the registry")
        if on:
            raise RegistryError(message) from None
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return None
