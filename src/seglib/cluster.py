"""Stage 3: the lab's pipeline (transform -> StandardScaler(withMean, withStd) -> KMeans), made
trustworthy: restarts, a k sweep, stability, names from profiles, and a saved model for scoring.

How the work is split, and why (numbers from ``seglib bench`` on a 2-core machine, see the README):

- The model is fitted on a seeded sample of at most ``fit_sample`` customers (default 50,000),
  collected to the driver (7 numbers per customer, 2.8 MB), with scikit-learn's KMeans. A Spark ML
  KMeans fit costs about 1.5 s of job scheduling however small its input (measured over Spark
  Connect: 1.6 s for 1,000 rows, 2.3 s for 20,000, 3.1 s for 63,000), and a run makes
  n_init x (1 + stability_runs) + the k sweep of them: 30 s of a 63k-member run went there.
  scikit-learn does all of them on the sample in well under a second. The centres barely move
  with more rows: fitted on 50,000 customers, a centre's standard error is a few hundredths of a
  standard deviation for any segment above 1% of the customers.
- Spark then assigns every customer, with the fitted model written as one SQL statement (medians,
  clip bounds, means, standard deviations and centres as literals) inside a Spark ML PipelineModel.
  It runs where the data is, at any size, on classic Spark and Spark Connect alike, and a saved
  model scores new data exactly as it was fitted.

Model inputs (README, "Feature transform"): with the default ``log1p`` transform, counts, amounts and
days since the last flight enter as log1p(x / median x), clipped to their 1st-99th percentiles. Logs
tame the heavy right tails; the clip stops a handful of extreme members (or a feature that is non-zero
for under 1% of customers, like spend when only a few members have transactions) from claiming a
segment of their own. ``none`` is the lab's plain scaling.

KMeans runs from ``n_init`` seeds (seed, seed+1, ...); the fit with the lowest within-cluster cost
wins (a single k-means++ start sometimes lands in a poorer local optimum).
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import parallel
from . import quality as Q
from . import tables as TB
from .errors import InputContractError, ParameterError
from .naming import assign_names, sample_zscores
from .recipes import DEFAULT, Recipe, get
from .session import is_managed_runtime

# Imported ahead by the local runner while the notebook before runs (seglib.local.runner): 0.7 s otherwise,
# in the cluster stage's first fit.
__preload__ = ("sklearn.cluster", "sklearn.metrics")

FEATURES = list(get().features)  # the default recipe's; a model carries its own (SegmentModel.features)
LOG_FEATURES = list(get().log_features)
TRANSFORMS = ("log1p", "none")
MODES = ("fit", "score")
CLIP_QUANTILES = (0.01, 0.99)
DEFAULT_K_RANGE = (3, 8)
FIT_SAMPLE = 50_000        # customers the model is fitted on by default (a seeded sample)
MAX_FIT_SAMPLE = 2_000_000  # 7 doubles each (airline): at most ~110 MB on the driver
SILHOUETTE_SAMPLE = 10_000  # rows the silhouette is scored on (seeded): kept from when it was quadratic in rows, so scores compare


def parse_k(k) -> int | str:
    """A whole number >= 2, or ``auto``."""
    text = str(k).strip().lower()
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise ParameterError(f"k must be a whole number >= 2 or auto, got {k!r}") from None
    if value < 2:
        raise ParameterError(f"k must be a whole number >= 2 or auto, got {k!r}")
    return value


def parse_k_range(text) -> tuple[int, int]:
    """``3-8`` (or ``(3, 8)``) -> (3, 8): the k values k=auto tries."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        text = "%s-%s" % tuple(text)
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if not m or not 2 <= int(m.group(1)) < int(m.group(2)) <= 30:
        raise ParameterError(f"k_range must look like 3-8 (two whole numbers, 2 <= low < high <= 30), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_fit_sample(value) -> int:
    """Customers the model is fitted on: a whole number from 1,000 to MAX_FIT_SAMPLE."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if not 1_000 <= n <= MAX_FIT_SAMPLE:
        raise ParameterError(f"fit_sample must be a whole number from 1000 to {MAX_FIT_SAMPLE}, got {value!r}")
    return n


def model_column(feature: str) -> str:
    return f"x_{feature}"


def _lit(value) -> str:
    """A double as a SQL literal that reads back to the same value."""
    return repr(float(value))


@dataclass
class SegmentModel:
    """A fitted model: how each feature is transformed and standardised, and the KMeans centres in that
    standardised space. ``statement()`` is the whole model as one SQL SELECT."""
    transform: str
    medians: dict[str, float]                 # log1p: the divisor of each log feature
    bounds: dict[str, tuple[float, float]]    # log1p: 1st and 99th percentile of each transformed feature
    means: dict[str, float]
    stds: dict[str, float]
    centres: list[list[float]]                # k rows, one value per feature, standardised
    # The recipe's clustering features, in model order, and those entering on a log scale. Models
    # saved before recipes existed lack them: they are the airline recipe's.
    features: list[str] = field(default_factory=lambda: list(get().features))
    log_features: list[str] = field(default_factory=lambda: list(get().log_features))

    def feature_expressions(self) -> dict[str, str]:
        """SQL for each model input (before standardising)."""
        exprs = {c: f"CAST(`{c}` AS DOUBLE)" for c in self.features}
        if self.transform == "log1p":
            for c in self.log_features:
                exprs[c] = f"LN(1 + GREATEST(`{c}`, 0) / {_lit(self.medians[c])})"
            exprs = {c: f"LEAST(GREATEST({e}, {_lit(self.bounds[c][0])}), {_lit(self.bounds[c][1])})"
                     for c, e in exprs.items()}
        return exprs

    def statement(self) -> str:
        """SELECT *, the standardised inputs ``x_<feature>`` and ``cluster`` (nearest centre; ties go to the
        lower cluster) FROM __THIS__. A feature with no spread standardises to 0, as in Spark's StandardScaler."""
        z = {c: (f"(({e}) - {_lit(self.means[c])}) / {_lit(self.stds[c])}" if self.stds[c] > 0 else "0.0D")
             for c, e in self.feature_expressions().items()}
        inner = "SELECT *, " + ", ".join(f"{e} AS `{model_column(c)}`" for c, e in z.items()) + " FROM __THIS__"
        distances = [" + ".join(f"POW(`{model_column(c)}` - {_lit(centre[i])}, 2)" for i, c in enumerate(self.features))
                     for centre in self.centres]
        nearest = f"ARRAY_POSITION(ARRAY({', '.join(distances)}), ARRAY_MIN(ARRAY({', '.join(distances)}))) - 1"
        return f"SELECT *, CAST({nearest} AS INT) AS cluster FROM ({inner})"

    def pipeline(self) -> PipelineModel:
        return PipelineModel(stages=[SQLTransformer(statement=self.statement())])

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """The model inputs of a (rows x features) array, as the SQL computes them."""
        x = raw.astype("float64").copy()
        if self.transform == "log1p":
            for i, c in enumerate(self.features):
                if c in self.log_features:
                    x[:, i] = np.log1p(np.maximum(x[:, i], 0) / self.medians[c])
                x[:, i] = np.clip(x[:, i], *self.bounds[c])
        for i, c in enumerate(self.features):
            x[:, i] = (x[:, i] - self.means[c]) / self.stds[c] if self.stds[c] > 0 else 0.0
        return x


def fit_transform(raw: np.ndarray, transform: str, recipe: str | Recipe = DEFAULT) -> SegmentModel:
    """Medians, clip bounds, means and standard deviations from the sample (no centres yet); *raw* has
    one column per recipe feature."""
    if transform not in TRANSFORMS:
        raise ParameterError(f"feature_transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    recipe = get(recipe)
    features, log_features = list(recipe.features), list(recipe.log_features)
    x = raw.astype("float64")
    medians, bounds = {}, {}
    if transform == "log1p":
        for i, c in enumerate(features):
            if c in log_features:
                positive = x[:, i][x[:, i] > 0]
                medians[c] = float(np.median(positive)) if positive.size else 1.0
        for i, c in enumerate(features):
            v = np.log1p(np.maximum(x[:, i], 0) / medians[c]) if c in log_features else x[:, i]
            lo, hi = np.quantile(v, CLIP_QUANTILES, method="inverted_cdf")  # values that occur, as percentile_approx
            bounds[c] = (float(lo), float(hi))
    spec = SegmentModel(transform, medians, bounds, {c: 0.0 for c in features}, {c: 1.0 for c in features}, [],
                        features, log_features)
    t = spec.standardise(x)
    spec.means = {c: float(t[:, i].mean()) for i, c in enumerate(features)}
    spec.stds = {c: float(t[:, i].std(ddof=1)) if len(t) > 1 else 0.0 for i, c in enumerate(features)}
    return spec


def best_of(x: np.ndarray, k: int, seeds: list[int]):
    """KMeans (k-means++) from each seed; returns [(cost, seed, model)] sorted best first (ties: lower seed)."""
    from sklearn.cluster import KMeans
    fits = [(float(m.inertia_), s, m) for s in seeds
            for m in [KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=s).fit(x)]]
    return sorted(fits, key=lambda f: (round(f[0], 6), f[1]))


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Mean silhouette with squared Euclidean distance (the definition of Spark's ClusteringEvaluator,
    which the lab's 0.3 bar refers to), on at most SILHOUETTE_SAMPLE seeded rows: the value and the rows
    of scikit-learn's ``silhouette_score(x, labels, metric="sqeuclidean", sample_size=SILHOUETTE_SAMPLE,
    random_state=seed)``, without its rows x rows distance matrix.

    With squared distances, a point's mean distance to a cluster's points is its squared distance to
    the cluster's mean plus the cluster's mean squared spread around that mean (Spark's evaluator uses
    the same identity), so each point needs k distances, not one per row: at 1M members scikit-learn's
    chunked matrix took 0.43-0.64 s of the fit, this a few milliseconds. A point alone in its cluster
    scores 0, as in scikit-learn."""
    labels = np.asarray(labels)
    if not 2 <= len(set(labels.tolist())) < len(x):
        return float("nan")
    if len(x) > SILHOUETTE_SAMPLE:
        rows = np.random.RandomState(seed).permutation(len(x))[:SILHOUETTE_SAMPLE]  # silhouette_score's draw
        x, labels = x[rows], labels[rows]
    clusters, codes = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return float("nan")
    counts = np.bincount(codes)
    means = np.stack([x[codes == c].mean(axis=0) for c in range(len(clusters))])
    spread = np.array([((x[codes == c] - means[c]) ** 2).sum(axis=1).mean() for c in range(len(clusters))])
    to_cluster = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2) + spread[None, :]  # rows x k
    own = np.arange(len(x)), codes
    with np.errstate(divide="ignore", invalid="ignore"):
        within = to_cluster[own] * counts[codes] / (counts[codes] - 1)  # the point itself excluded
        to_cluster[own] = np.inf
        nearest = to_cluster.min(axis=1)
        scores = (nearest - within) / np.maximum(within, nearest)
    return float(np.nan_to_num(scores).mean())


def sweep_k(x: np.ndarray, k_range: tuple[int, int], seed: int, n_init: int, log=print) -> list[dict]:
    """Silhouette and inertia for each k in the range, best of n_init seeds."""
    rows = []
    for k in range(k_range[0], k_range[1] + 1):
        if k > len(x):
            break
        cost, _, model = best_of(x, k, list(range(seed, seed + n_init)))[0]
        score = silhouette(x, model.labels_, seed)
        rows.append({"k": k, "silhouette": round(score, 4), "inertia": round(cost, 1)})
        log(f"  k={k}: silhouette {score:.3f}, inertia {cost:,.0f}")
    return rows


def measure_stability(x: np.ndarray, labels: np.ndarray, k: int, seed: int, n_init: int, runs: int,
                      log=print) -> Q.Stability:
    """Refit the same procedure (best of n_init seeds) on *runs* seeded half-samples of *x* (the rows the
    chosen model was fitted on) and compare each refit's clusters with the chosen labels on those rows."""
    tables = []
    for r in range(1, runs + 1):
        rows = np.sort(np.random.default_rng(seed + 1000 * r).choice(len(x), max(k, len(x) // 2), replace=False))
        refit = best_of(x[rows], k, list(range(seed + 1000 * r, seed + 1000 * r + n_init)))[0][2]
        tables.append(Q.contingency(labels[rows], refit.labels_, k))
    result = Q.stability(tables, list(range(k)))
    if runs:
        log(f"stability: {runs} refit(s) on half-samples, mean ARI {result.mean_ari:.3f}")
    return result


@dataclass
class ClusterResult:
    model: SegmentModel                  # transform + scaler + the chosen centres
    names: dict[int, tuple[int, str]]    # cluster -> (segment id, segment name)
    assignments: DataFrame               # customer_key, cluster, segment, segment_name
    silhouette: float
    k: int
    seed: int                            # the seed of the chosen KMeans fit
    transform: str
    customers: int
    mode: str = "fit"
    k_param: str = ""
    sweep: list[dict] = field(default_factory=list)
    stability: Q.Stability = field(default_factory=lambda: Q.Stability([], {}))
    parameters: dict[str, str] = field(default_factory=dict)   # as given, for the run log
    fitted_on: int = 0                   # customers the model was fitted on (fit_sample); 0 when scoring
    # cluster -> {"customers": n, <feature>: mean in original units}: over the fit sample after a fit (the
    # rows the model and its names come from; no Spark pass), over every customer when scoring
    cluster_stats: dict[int, dict] = field(default_factory=dict)
    # The MLflow Model Registry's version of this model (registry.py): the one a fit registered (set by its
    # MLflow run), or the one a score loaded; empty when the registry was not used
    registered_model: str = ""
    model_version: str = ""

    @property
    def centres_scaled(self) -> list[list[float]]:
        """KMeans centres in the standardised model space (z-units of the transformed features)."""
        return self.model.centres

    def saved_model(self) -> dict:
        """The model as save_model writes it to ``model/`` (and MLflow logs it): transform, scaling and
        centres, the seed of the chosen fit and the customers it was fitted on."""
        return {**asdict(self.model), "seed": self.seed, "fitted_on": self.fitted_on}

    def saved_segments(self) -> list[dict]:
        """The clusters' ids and names as save_model writes them to ``segments/``."""
        return [{"cluster": c, "segment": s, "segment_name": n, "feature_transform": self.transform}
                for c, (s, n) in sorted(self.names.items())]

    def segment_shares(self) -> dict[int, float]:
        """Segment id -> its share of the customers cluster_stats covers."""
        total = sum(stats["customers"] for stats in self.cluster_stats.values())
        return {self.names[c][0]: stats["customers"] / total for c, stats in self.cluster_stats.items()}

    def segment_means(self):
        """Per segment in id order: customers, share and each feature's mean in original units, over the
        fit sample after a fit, over every customer when scoring (cluster_stats); a pandas DataFrame, no
        Spark job. Every customer's profile is 04_profile's."""
        import pandas as pd
        shares = self.segment_shares()
        rows = [{"segment": self.names[c][0], "segment_name": self.names[c][1], "customers": stats["customers"],
                 "share": round(shares[self.names[c][0]], 4), **{f: round(float(stats[f]), 1) for f in self.model.features}}
                for c, stats in self.cluster_stats.items()]
        return pd.DataFrame(rows).sort_values("segment").reset_index(drop=True)

    def segment_stability(self) -> dict[str, float]:
        return {self.names[c][1]: round(j, 4) for c, j in self.stability.jaccard.items()}

    def unstable_segments(self) -> list[str]:
        return [self.names[c][1] for c in self.stability.unstable]


def _labelled(predictions: DataFrame, names: dict[int, tuple[int, str]]) -> DataFrame:
    """customer_key, cluster, segment, segment_name: the names as CASE expressions on the cluster.

    Not a join with a k-row table: the join's `cluster IS NOT NULL` goes below the model's projection,
    Spark copies the model's statement into that filter, and assigning 1M customers took 13-17 s against
    0.8 s (seglib bench machine; the predictions had been cached to avoid it, 1.2 s at 1M)."""
    cluster = F.col("cluster").cast("int")
    segment = segment_name = None
    for c, (s, n) in sorted(names.items()):
        segment = (F if segment is None else segment).when(cluster == c, F.lit(s))
        segment_name = (F if segment_name is None else segment_name).when(cluster == c, F.lit(n))
    return predictions.select("customer_key", cluster.alias("cluster"), segment.cast("int").alias("segment"),
                              segment_name.alias("segment_name"))


def _cluster_means(predictions: DataFrame, features) -> dict[int, dict]:
    """cluster -> customers and each feature's mean, in one aggregation (k rows collected)."""
    rows = predictions.groupBy("cluster").agg(F.count("*").alias("customers"),
                                              *[F.avg(f).alias(f) for f in features]).collect()
    return {r["cluster"]: {"customers": r["customers"], **{f: r[f] for f in features}} for r in rows}


def _sample_means(raw: np.ndarray, labels: np.ndarray, features) -> dict[int, dict]:
    """_cluster_means of rows on the driver (one column per feature) and their clusters."""
    return {int(c): {"customers": int((labels == c).sum()),
                     **{f: float(v) for f, v in zip(features, raw[labels == c].mean(axis=0))}}
            for c in np.unique(labels)}


def _too_few(k, least: int, customers: int, recipe: Recipe) -> str:
    return (f"input table {recipe.customers_table} has {customers:,} customer(s) with features, fewer than the "
            f"{least} segments k={k} asks for; lower k or check the input")


def driver_sample(features_df: DataFrame, size: int, seed: int, customers: int,
                  features: list[str] | tuple[str, ...] = FEATURES) -> np.ndarray:
    """At most about *size* customers' features (a seeded hash sample, ordered by key so the fit does not
    depend on partitioning), as a rows x features array on the driver."""
    pdf = _sample_by_key(features_df.select("customer_key", *features), size, seed, customers)
    return pdf[list(features)].to_numpy(dtype="float64")


def _sample_by_key(df: DataFrame, size: int, seed: int, total: int):
    """Q.deterministic_sample of *df* as pandas, ordered by customer_key so what is fitted or scored on it
    does not depend on partitioning. Sorted here, not in Spark: an orderBy adds a sampling job and a
    shuffle for ~50,000 rows."""
    return Q.deterministic_sample(df, size, seed, total=total).toPandas().sort_values("customer_key", kind="stable")


def no_autolog() -> None:
    """Fabric switches on ``mlflow.autolog()`` in every notebook: each of the many KMeans fits of one
    segmentation (restarts, sweep, stability refits) would become an MLflow run of its own. seglib
    records one run per segmentation instead (tracking.py), so autologging is turned off for this
    process when MLflow is already loaded (never imported here: that takes seconds)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    # mlflow.autolog(disable=True) alone leaves an already patched scikit-learn autologging (measured).
    for turn_off in (lambda: mlflow.autolog(disable=True), lambda: mlflow.sklearn.autolog(disable=True)):
        try:
            turn_off()
        except Exception:  # noqa: BLE001 - an MLflow without that flavour, or a broken one: nothing to turn off
            pass


def fit_segments(features_df: DataFrame, k=5, seed: int = 42, transform: str = "log1p", n_init: int = 3,
                 k_range=DEFAULT_K_RANGE, stability_runs: int = 2, fit_sample: int = FIT_SAMPLE,
                 recipe: str | Recipe = DEFAULT, log=print) -> ClusterResult:
    """Fit on a seeded sample (k fixed or ``auto``, best of n_init KMeans seeds), then assign and name
    every customer in Spark."""
    k_param, k = str(k), parse_k(k)
    seed, n_init, fit_sample = int(seed), int(n_init), parse_fit_sample(fit_sample)
    if n_init < 1:
        raise ParameterError(f"n_init must be a whole number >= 1, got {n_init!r}")
    k_range = parse_k_range(k_range)
    customers = features_df.count()
    least = k_range[0] if k == "auto" else k
    if customers < least:
        raise InputContractError(_too_few(k, least, customers, get(recipe)))
    recipe = get(recipe)
    no_autolog()
    # The fit sample with the profile columns the names also rest on (the model sees only the features).
    named = [c for c in recipe.naming_features if c in features_df.columns]  # profile columns when computed
    sample = driver_sample(features_df, fit_sample, seed, customers, named)
    raw = sample[:, :len(recipe.features)]
    if len(raw) < customers:
        log(f"fitting on a seeded sample of {len(raw):,} of {customers:,} customers (fit_sample={fit_sample:,}); "
            f"then every customer is assigned")
    spec = fit_transform(raw, transform, recipe)
    x = spec.standardise(raw)
    sweep = []
    if k == "auto":
        log(f"k=auto: sweeping k={k_range[0]}..{k_range[1]} on {len(x):,} customers")
        sweep = sweep_k(x, k_range, seed, n_init, log=log)
        k = Q.choose_k({r["k"]: r["silhouette"] for r in sweep})
        log(f"k=auto chose k={k} (the fewest segments within {Q.SILHOUETTE_TOLERANCE} silhouette of the best)")
    if len(x) < k:
        raise InputContractError(_too_few(k, k, len(x), recipe))
    _, best_seed, best = best_of(x, k, list(range(seed, seed + n_init)))[0]
    spec.centres = [[float(v) for v in centre] for centre in best.cluster_centers_]
    score = silhouette(x, best.labels_, seed)
    stability = measure_stability(x, best.labels_, k, seed, n_init, stability_runs, log=log)
    # Named and profiled on the sample the model was fitted on, as its scaling and centres are: a pass
    # over every customer for that cost 1-1.3 s at 1M, and on two cores it does not hide behind the write
    # of the assignments (measured side by side: no faster). Spark assigns every customer once, in that
    # write (save_cluster_outputs); 04_profile profiles every customer.
    names = assign_names(sample_zscores(sample, best.labels_, recipe, named), recipe)
    predictions = spec.pipeline().transform(features_df).select("customer_key", "cluster")
    return ClusterResult(spec, names, _labelled(predictions, names), score, k, best_seed, transform, customers,
                         "fit", k_param, sweep, stability, fitted_on=len(x),
                         cluster_stats=_sample_means(raw, best.labels_, recipe.features))


# The saved model: the pipeline (plain Spark ML, loadable without seglib), the model as JSON (what
# seglib scores with) and the names of its clusters (readable; a user may rename them).
def _pipeline_path(model_path: str) -> str:
    return f"{model_path.rstrip('/')}/pipeline"


def _spec_path(model_path: str) -> str:
    return f"{model_path.rstrip('/')}/model"


def _names_path(model_path: str) -> str:
    return f"{model_path.rstrip('/')}/segments"


def save_model(result: ClusterResult, model_path: str) -> None:
    spark = result.assignments.sparkSession
    if model_path.startswith("/Volumes/"):  # a Unity Catalog volume must exist before files go in
        catalog_, schema_, volume = model_path.split("/")[2:5]
        spark.sql(f"CREATE VOLUME IF NOT EXISTS {TB.qualified(volume, schema_, catalog_)}")
    result.model.pipeline().write().overwrite().save(_pipeline_path(model_path))
    spec = spark.createDataFrame([(json.dumps(result.saved_model()),)], "value string")
    spec.coalesce(1).write.mode("overwrite").text(_spec_path(model_path))
    names = spark.createDataFrame([tuple(row.values()) for row in result.saved_segments()],
                                  "cluster int, segment int, segment_name string, feature_transform string")
    names.coalesce(1).write.mode("overwrite").json(_names_path(model_path))


def load_model(spark: SparkSession, model_path: str) -> tuple[SegmentModel, dict[int, tuple[int, str]], int]:
    """The model, the cluster names and the seed of the fit a fit run saved at *model_path*."""
    try:
        spec = json.loads(spark.read.text(_spec_path(model_path)).first()["value"])
        rows = spark.read.schema("cluster int, segment int, segment_name string, feature_transform string") \
            .json(_names_path(model_path)).collect()
    except Exception as e:  # noqa: BLE001 - any failure to read means there is no usable model
        raise InputContractError(
            f"mode=score needs the model a fit run saved at {model_path} (model/ and segments/); "
            f"it could not be read ({type(e).__name__}). Run once with mode=fit first.") from None
    return saved_model(spec, [r.asDict() for r in rows], model_path)


def load_registered(folder: str, model_uri: str) -> tuple[SegmentModel, dict[int, tuple[int, str]], int]:
    """load_model for a registered version's files, downloaded to *folder* on the driver (registry.download):
    model.json and segments.json, read without Spark (the driver's files are not the executors')."""
    try:
        with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
            spec = json.load(f)
        with open(os.path.join(folder, "segments.json"), encoding="utf-8") as f:
            rows = json.load(f)
    except (OSError, ValueError) as e:
        raise InputContractError(f"the registered model {model_uri} has no readable model.json and segments.json "
                                 f"({type(e).__name__}); pass another model_path or refit with mode=fit") from None
    return saved_model(spec, rows, model_uri)


def saved_model(spec: dict, rows: list[dict], source: str) -> tuple[SegmentModel, dict[int, tuple[int, str]], int]:
    """The model, names and seed from what ClusterResult.saved_model and saved_segments wrote (*source*: where
    they came from, for the error)."""
    spec = dict(spec)
    seed = int(spec.pop("seed", 0))
    spec.pop("fitted_on", None)
    model = SegmentModel(**{**spec, "bounds": {c: tuple(b) for c, b in spec["bounds"].items()}})
    names = {int(r["cluster"]): (int(r["segment"]), r["segment_name"]) for r in rows}
    k = len(model.centres)
    if sorted(names) != list(range(k)):
        raise InputContractError(f"the model at {source} has {k} clusters but names for {sorted(names)}; "
                                 f"refit with mode=fit")
    return model, names, seed


def score_segments(features_df: DataFrame, model_path: str, recipe: str | Recipe = DEFAULT,
                   lakehouse: str = "") -> ClusterResult:
    """Assign segments with the saved model: no refit, so ids and names stay those of the fit. *model_path*:
    the folder a fit saved, or a registered version, ``models:/<name>@champion`` or ``models:/<name>/<version>``
    (*lakehouse*: where a local run's registry is)."""
    spark = features_df.sparkSession
    registered = None
    if model_path.startswith("models:/"):
        from . import registry
        with tempfile.TemporaryDirectory(prefix="seglib-champion-") as copy:
            folder, registered = registry.download(model_path, lakehouse, copy)
            model, names, seed = load_registered(folder, registered.uri)
        model_path = registered.uri
    else:
        model, names, seed = load_model(spark, model_path)
    missing = [c for c in model.features if c not in features_df.columns]
    if missing:
        raise InputContractError(f"the model at {model_path} uses feature(s) {', '.join(missing)}, which "
                                 f"{TB.SEG_FEATURES} lacks: it was fitted for another recipe; refit with mode=fit")
    inputs = [model_column(c) for c in model.features]
    predictions = model.pipeline().transform(features_df).select("customer_key", "cluster", *model.features,
                                                                  *inputs)
    stats = _cluster_means(predictions, model.features)
    customers = sum(s["customers"] for s in stats.values())
    sample = _sample_by_key(predictions, SILHOUETTE_SAMPLE, seed, customers)
    score = silhouette(sample[inputs].to_numpy(dtype="float64"), sample["cluster"].to_numpy(), seed)
    return ClusterResult(model, names, _labelled(predictions, names), score, len(names), seed,
                         model.transform, customers, "score", str(len(names)), cluster_stats=stats,
                         registered_model=registered.name if registered else "",
                         model_version=registered.version if registered else "")


def segment(features_df: DataFrame, mode: str = "fit", model_path: str = "", k=5, seed: int = 42,
            transform: str = "log1p", n_init: int = 3, k_range=DEFAULT_K_RANGE, stability_runs: int = 2,
            fit_sample: int = FIT_SAMPLE, recipe: str | Recipe = DEFAULT, lakehouse: str = "",
            log=print) -> ClusterResult:
    """The cluster stage: ``fit`` refits, ``score`` applies the model saved at *model_path* (a folder, or
    a registered version ``models:/...``, see score_segments). Nothing is written: save_cluster_outputs
    saves a fit's model and hands the assignments over."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    k_range = parse_k_range(k_range)
    recipe = get(recipe)
    parameters = {"recipe": recipe.name, "mode": mode, "k": str(k), "k_range": "%d-%d" % k_range,
                  "seed": str(seed), "feature_transform": transform, "n_init": str(n_init),
                  "stability_runs": str(stability_runs), "fit_sample": str(fit_sample), "model_path": model_path}
    if mode == "score":
        result = score_segments(features_df, model_path, recipe, lakehouse)
    else:
        result = fit_segments(features_df, k, seed, transform, n_init, k_range, stability_runs, fit_sample, recipe,
                              log=log)
    result.parameters = parameters
    return result


METRICS_SCHEMA = ("parameters map<string,string>, mode string, k_param string, k int, seed int, feature_transform string, silhouette double, "
                  "stability_ari double, segment_stability map<string,double>, unstable_segments array<string>, "
                  "customers long, model_path string, k_sweep string, registered_model string, model_version string")


def default_model_path(lakehouse: str, where: TB.Location, mode: str = "fit", tracking="off", log=print) -> str:
    """Where the fitted pipeline model goes when model_path is empty, and what a score run reads.

    Databricks with Unity Catalog: a volume in the output schema (seglib creates it when saving).
    Fabric: the attached lakehouse's Files area. Locally: under the lakehouse folder.

    ``mode=score`` with MLflow (*tracking* auto with MLflow installed, or on): the registered model's
    champion, ``models:/<name>@champion`` (registry.py), the model of the segments last published. With
    tracking off, or no MLflow, the folder above, as a fit without MLflow saved it (and it says so)."""
    if mode == "score":
        from . import registry
        if registry.enabled(tracking, log):
            return registry.champion_uri(registry.model_name(where))
        log("mode=score reads the model a fit saved in the folder below, not the registry's champion")
    if os.environ.get("DATABRICKS_RUNTIME_VERSION") and where.catalog:
        return f"/Volumes/{where.catalog}/{where.schema}/seglib_models/segmentation"
    if is_managed_runtime():
        return f"Files/seglib_models/{where.schema}/segmentation"
    return str(Path(lakehouse).resolve() / "models" / where.schema / "segmentation")


def save_cluster_outputs(result: ClusterResult, model_path: str, where: TB.Location, track=None) -> DataFrame:
    """What the stage keeps, side by side: a fit's model (at *model_path*, when given) and, for the
    profile and write steps, the assignments and the run's metrics. The model's three small writes
    (0.5-0.6 s one after another at 1M members) overlap the two tables' writes.

    *track*: called once the model is saved, while the assignments are written (the MLflow run,
    tracking.log_clustering, which logs the saved folder and registers a fit's model); the metrics are
    written after it, so they hand the registered version (registered_model, model_version) to the write
    step, which makes it the champion once it has published."""
    def metrics_row():
        # A score by a registered version records that version (an alias moves, the version does not).
        path = f"models:/{result.registered_model}/{result.model_version}" \
            if result.mode == "score" and result.model_version else model_path
        return result.assignments.sparkSession.createDataFrame(
            [(result.parameters, result.mode, result.k_param, result.k, result.seed, result.transform,
              result.silhouette, result.stability.mean_ari, result.segment_stability(), result.unstable_segments(),
              result.customers, path, json.dumps(result.sweep), result.registered_model or None,
              result.model_version or None)], METRICS_SCHEMA)

    def save(item):
        return TB.save_table(item[0], item[1], where)

    # Spark ML's writer stays on this thread: over Spark Connect it needs the thread's active session.
    model = (lambda: save_model(result, model_path)) if result.mode == "fit" and model_path else None
    if track is None:
        metrics = metrics_row()
        parallel.each(save, [(result.assignments, TB.SEG_ASSIGNMENTS), (metrics, TB.SEG_CLUSTER_METRICS)],
                      meanwhile=model)
        return metrics

    def model_then_track():
        if model is not None:
            model()
        track()

    parallel.each(save, [(result.assignments, TB.SEG_ASSIGNMENTS)], meanwhile=model_then_track)
    metrics = metrics_row()
    save((metrics, TB.SEG_CLUSTER_METRICS))
    return metrics


def sweep_figures(result: ClusterResult) -> dict:
    """The k sweep's plotly figures (silhouette and inertia by k); none when k was given."""
    if not result.sweep:
        return {}
    import pandas as pd
    import plotly.express as px
    sweep = pd.DataFrame(result.sweep)
    return {"k_sweep_silhouette": px.line(sweep, x="k", y=["silhouette"], markers=True,
                                          title=f"k sweep: chose k={result.k}"),
            "k_sweep_inertia": px.line(sweep, x="k", y=["inertia"], markers=True, title="inertia by k")}
