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
# Where the service principal's secrets are: names, not values, yet never shown in a report.
SECRET_RELATED = {"secret_scope", "tenant_id_key", "client_id_key", "client_secret_key"}


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
    """One row of the parameter table, the one place a parameter is described: the notebooks' parameters
    cells, the bundle variables' descriptions, `.env.example` and the README's table are made from it
    (`seglib params`), and `seglib validate` checks the jobs against it."""
    parse: Callable[[Any], Any]
    default: Any  # the notebooks' default; its type is the type the parameters cell declares
    tasks: tuple[str, ...]  # the job tasks (task keys) whose notebooks read it
    help: str  # one line: the parameters cells, the bundle variables, .env.example
    more: str = ""  # the README adds it to the line

    @property
    def kind(self) -> str:
        return type(self.default).__name__


ALL = ("generate", "load", "features", "cluster", "profile", "write", "insights")  # every notebook
STAGES = ALL[1:]  # the segmentation job's notebooks

PARAMS: dict[str, Param] = {
    "catalog": Param(_identifier("catalog", optional=True), "", ALL,
                     "Unity Catalog catalog; empty means the session's default (Fabric, local)"),
    "schema": Param(_identifier("schema"), "contoso", ALL, "schema of the Gold tables and of the outputs"),
    "lakehouse": Param(_text, ".lakehouse", ALL, "local runs only: the folder of the Delta warehouse and catalog",
                       "never a job parameter"),
    "recipe": Param(_recipe, "airline", ALL,
                    "airline (the Contoso Gold layer), retail (invoice lines, RFM) or a recipe file (.yml)",
                    'see "The retail recipe" and "Your own tables: recipe files", e.g. `recipes/my_orders.yml`'),
    "customers": Param(_int("customers", 1), 62988, ("generate",),
                       "demo customers to generate; the public airline file has 62,988 members"),
    "null_policy": Param(_choice("null_policy", _null_policies), "impute", ("features",),
                         "impute (a null feature gets the column median) or drop",
                         "with `drop`, customers with a null feature are written as segment -1, "
                         '"Unsegmented (incomplete data)"'),
    "as_of": Param(_as_of, "", ("features",),
                   "retail: the day recency is measured to, YYYY-MM-DD; empty means the day after the last transaction",
                   "never the wall clock, so a rerun gives the same scores"),
    "rfm_bins": Param(_rfm_bins, 4, ("features",), "retail: score bins for R, F and M, 4 or 5",
                      "4 as in the accelerator"),
    "mode": Param(_choice("mode", _modes), "fit", ("cluster",),
                  "fit (refit and save the model) or score (apply the saved model)",
                  "`score` keeps the fit's segment ids and names"),
    "k": Param(_k, "5", ("cluster",), "number of segments (a whole number, at least 2), or auto"),
    "k_range": Param(_k_range, "3-8", ("cluster",), "the k values that k auto tries",
                     "it picks the fewest segments whose silhouette is within 0.01 of the best"),
    "seed": Param(_int("seed", 0), 42, ("generate", "cluster"),
                  "random seed: the first KMeans seed, and the demo generator's"),
    "n_init": Param(_int("n_init", 1), 3, ("cluster",), "KMeans restarts; the lowest-cost fit wins",
                    "restarts use seeds `seed`, `seed+1`, ..."),
    "stability_runs": Param(_int("stability_runs", 0), 2, ("cluster",),
                            "refits on half-samples that measure stability; 0 skips it"),
    "fit_sample": Param(_fit_sample, 50000, ("cluster",),
                        "customers the model is fitted on (a seeded sample, 1000-2000000); then all are assigned"),
    "feature_transform": Param(_choice("feature_transform", _transforms), "log1p", ("cluster",),
                               "log1p (counts and amounts enter as log(1 + x / median)) or none (the lab's scaling)"),
    "model_path": Param(_text, "", ("cluster",),
                        "where the fitted model goes, or `models:/<name>@<alias>` to score with; empty means seglib's default",
                        "that is `<lakehouse>/models/<schema>/segmentation` locally, the volume "
                        "`/Volumes/<catalog>/<schema>/seglib_models/segmentation` on Databricks (created if "
                        "missing), `Files/seglib_models/<schema>/segmentation` in Fabric; with `mode=score` and "
                        "MLflow, the registered model's champion (`models:/seglib_segmentation_<schema>@champion`, see "
                        '"The model registry"); `models:/<name>/<version>` scores with one version'),
    "mlflow_tracking": Param(_choice("mlflow_tracking", _trackings), "auto", ("cluster", "write"),
                             "MLflow run and registered model of the fit: auto (when MLflow is installed), on (required) or off",
                             "it records the parameters, silhouette, stability, segment shares, model files and "
                             "figures, and registers the model (`seglib_segmentation_<schema>`; in Unity Catalog "
                             "`<catalog>.<schema>.seglib_segmentation`), which the write step makes `champion` once "
                             "it has published. Locally the store is `<lakehouse>/mlflow.db` (`mlflow ui "
                             "--backend-store-uri sqlite:///.lakehouse/mlflow.db`); Databricks and Fabric use "
                             "their own"),
    "run_id": Param(_pattern("run_id", r"[A-Za-z0-9_.:-]+"), "", ("cluster", "write", "insights"),
                    "this run's id, on both gold tables and in the run log; empty means one is generated",
                    "the job passes its run id; `seglib run` its run folder's name"),
    "source_path": Param(_path("source_path"), "", STAGES,
                         "folder of the Gold input Delta tables, e.g. abfss://...; empty means catalog tables",
                         'see "Cross-workspace mode"'),
    "target_path": Param(_path("target_path"), "", STAGES,
                         "folder seglib writes its Delta tables to; empty means catalog tables"),
    # A Databricks secret scope, or on Fabric the Key Vault URL; the keys name secrets in it.
    "secret_scope": Param(_pattern("secret_scope", r"[A-Za-z0-9_.:/-]+"), "", STAGES,
                          "secret scope (on Fabric the Key Vault URL) holding the service principal for abfss paths"),
    "tenant_id_key": Param(_pattern("tenant_id_key", _KEY), "", STAGES,
                           "name of the secret holding the service principal's tenant id"),
    "client_id_key": Param(_pattern("client_id_key", _KEY), "", STAGES,
                           "name of the secret holding the service principal's client id"),
    "client_secret_key": Param(_pattern("client_secret_key", _KEY), "", STAGES,
                               "name of the secret holding the service principal's client secret"),
    # The insights' CLV and ROI assumptions (seglib.insights states the formula).
    "gross_margin": Param(_number("gross_margin", 0, 1), 0.3, ("insights",),
                          "share of revenue kept as gross profit, in (0, 1)"),
    "retention_rate": Param(_number("retention_rate", 0, 1), 0.6, ("insights",),
                            "yearly probability a customer stays, in (0, 1); expected lifetime 1/(1 - r) years"),
    "observation_years": Param(_number("observation_years", 0), 2.0, ("insights",),
                               "years the gold revenue and purchase counts cover"),
    "currency": Param(_pattern("currency", r"[^\s\d'\"`<>&;]{1,5}"), "", ("insights",),
                      "currency of the revenue in the report, a code or symbol (EUR, €); empty shows plain numbers",
                      "amounts show as `EUR 1,234` or `€1,234`; seglib converts nothing"),
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
