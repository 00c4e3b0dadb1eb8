"""Notebook parameters, whoever sets them: Databricks job parameters (widgets), Fabric's parameter
cell, papermill's injected cell, or the defaults in the notebook's own `parameters` cell.

The notebook's parameters cell declares which parameters it takes and their defaults; this module
knows each parameter's type and rule, so a bad value stops the run with the parameter's name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ParameterError

LOCAL_ONLY = {"lakehouse"}  # meaningful only for local runs; never a job parameter


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _identifier(name: str, optional: bool = False) -> Callable[[Any], str]:
    def parse(value) -> str:
        from .tables import check_identifier
        text = _text(value)
        return text if (optional and not text) else check_identifier(text, name)
    return parse


def _int(name: str, minimum: int) -> Callable[[Any], int]:
    def parse(value) -> int:
        try:
            number = int(_text(value))
        except ValueError:
            raise ParameterError(f"{name} must be a whole number >= {minimum}, got {value!r}") from None
        if number < minimum:
            raise ParameterError(f"{name} must be a whole number >= {minimum}, got {value!r}")
        return number
    return parse


def _number(name: str, low: float, high: float | None = None) -> Callable[[Any], float]:
    """A number strictly above *low* (and strictly below *high* when given): shares such as a margin."""
    what = f"a number strictly between {low:g} and {high:g}" if high is not None else f"a number > {low:g}"

    def parse(value) -> float:
        try:
            number = float(_text(value))
        except ValueError:
            raise ParameterError(f"{name} must be {what}, got {value!r}") from None
        if not low < number < (float("inf") if high is None else high):  # also rejects nan and inf
            raise ParameterError(f"{name} must be {what}, got {value!r}")
        return number
    return parse


def _choice(name: str, options_of: Callable[[], tuple[str, ...]]) -> Callable[[Any], str]:
    def parse(value) -> str:
        text, options = _text(value), options_of()
        if text not in options:
            raise ParameterError(f"{name} must be one of {', '.join(options)}, got {value!r}")
        return text
    return parse


_UNSAFE = re.compile(r"[\s'\"`]")
_ABFSS = re.compile(r"^abfss://[^@/]+@[^/]+(/.*)?$")


def _path(name: str) -> Callable[[Any], str]:
    """A folder: abfss://<container>@<host>/..., /Volumes/..., another absolute or a relative path."""
    def parse(value) -> str:
        text = _text(value)
        if _UNSAFE.search(text) or (":" in text and not _ABFSS.match(text)):
            raise ParameterError(f"{name} must be an abfss://<container>@<host>/... URL, a /Volumes/ or other "
                                 f"absolute path or a relative path, without quotes or spaces, got {value!r}")
        return text
    return parse


def _pattern(name: str, pattern: str) -> Callable[[Any], str]:
    """Empty, or a name matching *pattern* (secret scopes and keys: names, never secret values)."""
    def parse(value) -> str:
        text = _text(value)
        if text and not re.fullmatch(pattern, text):
            raise ParameterError(f"{name} must be empty or match {pattern}, got {value!r}")
        return text
    return parse


_KEY = r"[A-Za-z0-9_.-]+"


def _null_policies():
    from .features import NULL_POLICIES
    return NULL_POLICIES


def _transforms():
    from .cluster import TRANSFORMS
    return TRANSFORMS


def _modes():
    from .cluster import MODES
    return MODES


def _recipe(value) -> str:
    """A built-in recipe's name, or a recipe file's path; the file is read and checked now."""
    from .recipes import get
    text = _text(value)
    get(text)
    return text


def _as_of(value):
    from .rfm import parse_as_of
    parsed = parse_as_of(_text(value))
    return "" if parsed is None else parsed.isoformat()


def _rfm_bins(value):
    from .rfm import parse_rfm_bins
    return parse_rfm_bins(value)


def _trackings():
    from .tracking import TRACKING
    return TRACKING


def _k(value):
    from .cluster import parse_k
    return parse_k(_text(value))


def _fit_sample(value):
    from .cluster import parse_fit_sample
    return parse_fit_sample(value)


def _k_range(value):
    from .cluster import parse_k_range
    return "%d-%d" % parse_k_range(_text(value))


@dataclass(frozen=True)
class Param:
    parse: Callable[[Any], Any]
    help: str


PARAMS: dict[str, Param] = {
    "catalog": Param(_identifier("catalog", optional=True), "Unity Catalog catalog; empty = the session's default"),
    "schema": Param(_identifier("schema"), "schema holding the Gold tables and the outputs"),
    "lakehouse": Param(_text, "local runs only: folder of the Delta warehouse and catalog"),
    "recipe": Param(_recipe, "airline (the Contoso Gold layer), retail (transactions, RFM) or a recipe file (.yml)"),
    "as_of": Param(_as_of, "retail: the date recency is measured to, YYYY-MM-DD; empty = the day after the last transaction"),
    "rfm_bins": Param(_rfm_bins, "retail: score bins for R, F and M, 4 or 5"),
    "null_policy": Param(_choice("null_policy", _null_policies), "impute or drop"),
    "mode": Param(_choice("mode", _modes), "fit (refit the model) or score (apply the saved model)"),
    "k": Param(_k, "number of segments, or auto"),
    "k_range": Param(_k_range, "the k values k=auto tries, e.g. 3-8"),
    "n_init": Param(_int("n_init", 1), "KMeans restarts; the lowest-cost fit wins"),
    "stability_runs": Param(_int("stability_runs", 0), "refits on half-samples to measure stability; 0 = skip"),
    "fit_sample": Param(_fit_sample, "customers the model is fitted on (a seeded sample), 1000-2000000"),
    "mlflow_tracking": Param(_choice("mlflow_tracking", _trackings), "MLflow run of the fit: auto (when installed), on (required) or off"),
    "run_id": Param(_pattern("run_id", r"[A-Za-z0-9_.:-]+"), "this run's id; empty = generated"),
    "seed": Param(_int("seed", 0), "random seed"),
    "feature_transform": Param(_choice("feature_transform", _transforms), "log1p or none"),
    "model_path": Param(_text, "where the fitted model goes; empty = seglib's default"),
    # 06_insights: the CLV and ROI assumptions (seglib.insights states the formula)
    "gross_margin": Param(_number("gross_margin", 0, 1), "share of revenue kept as gross profit, in (0, 1)"),
    "retention_rate": Param(_number("retention_rate", 0, 1),
                            "yearly probability a customer stays, in (0, 1); expected lifetime 1/(1 - r) years"),
    "observation_years": Param(_number("observation_years", 0), "years the gold revenue and purchase counts cover"),
    "customers": Param(_int("customers", 1), "demo members to generate"),
    "source_path": Param(_path("source_path"), "folder of the Gold input Delta tables; empty = catalog tables"),
    "target_path": Param(_path("target_path"), "folder seglib writes its Delta tables to; empty = catalog tables"),
    # A Databricks secret scope, or on Fabric the Key Vault URL; the keys name secrets in it.
    "secret_scope": Param(_pattern("secret_scope", r"[A-Za-z0-9_.:/-]+"), "secret scope (or Key Vault URL)"),
    "tenant_id_key": Param(_pattern("tenant_id_key", _KEY), "secret holding the service principal's tenant id"),
    "client_id_key": Param(_pattern("client_id_key", _KEY), "secret holding the service principal's client id"),
    "client_secret_key": Param(_pattern("client_secret_key", _KEY), "secret holding the client secret"),
}


def notebook_params(namespace: dict) -> dict[str, Any]:
    """Resolve, type and validate the parameters the notebook's parameters cell declared.

    On Databricks each one becomes a text widget whose default is the cell's value (so an interactive
    user sees and can edit it) and whose value is the job parameter when the job sets one. Elsewhere
    the cell's value stands (papermill and Fabric pipelines inject theirs after it). The typed values
    are written back into *namespace*, so the notebook keeps using plain names.
    """
    dbutils = namespace.get("dbutils")
    values = {}
    for name, spec in PARAMS.items():
        if name not in namespace:
            continue
        raw = namespace[name]
        if dbutils is not None and name not in LOCAL_ONLY:
            dbutils.widgets.text(name, _text(raw))
            raw = dbutils.widgets.get(name)
        values[name] = spec.parse(raw)
    namespace.update(values)
    return values
