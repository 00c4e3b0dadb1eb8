"""Stage 3: the lab's Spark ML pipeline (assembler -> StandardScaler(withMean, withStd) -> KMeans), made
trustworthy: restarts, a k sweep, stability, names from profiles, and a saved model for scoring.

Model inputs (README, "Feature transform"): with the default ``log1p`` transform, counts, amounts and
days since the last flight enter as log1p(x / median x), clipped to their 1st-99th percentiles. Logs
tame the heavy right tails; the clip stops a handful of extreme members (or a feature that is non-zero
for under 1% of customers, like spend when only a few members have transactions) from claiming a
segment of their own. Medians and clip bounds are literals in a SQLTransformer inside the fitted
pipeline, so the saved model scores new data exactly as it was fitted. ``none`` is the lab's plain
scaling.

KMeans is run from ``n_init`` seeds (seed, seed+1, ...) on the same scaled data; the fit with the
lowest within-cluster cost wins (k-means|| alone lands in a poorer local optimum from some seeds), and
the others measure stability.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import quality as Q
from . import tables as TB
from .errors import InputContractError, ParameterError
from .features import FEATURES
from .naming import name_clusters

LOG_FEATURES = ["total_flights", "total_km_flown", "total_loyalty_points", "total_spent", "transaction_count",
                "days_since_last_flight"]
TRANSFORMS = ("log1p", "none")
MODES = ("fit", "score")
CLIP_QUANTILES = (0.01, 0.99)
MAX_ITER = 50
DEFAULT_K_RANGE = (3, 8)
SWEEP_SAMPLE = 20_000  # customers the k sweep fits on (a seeded sample; the final fit uses everyone)


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


def model_column(feature: str) -> str:
    return f"x_{feature}"


def transform_statement(features_df: DataFrame, transform: str) -> str:
    """The SQL that turns raw features into model inputs (medians and clip bounds as literals)."""
    if transform not in TRANSFORMS:
        raise ParameterError(f"feature_transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    exprs = {c: f"CAST(`{c}` AS DOUBLE)" for c in FEATURES}
    if transform == "log1p":
        row = features_df.agg(*[
            F.percentile_approx(F.when(F.col(c) > 0, F.col(c)), 0.5, 10_000).alias(c) for c in LOG_FEATURES
        ]).first()
        for c in LOG_FEATURES:
            exprs[c] = f"LN(1 + GREATEST(`{c}`, 0) / {float(row[c]) if row[c] else 1.0!r})"
        bounds = features_df.select(*[F.expr(e).alias(c) for c, e in exprs.items()]).agg(
            *[F.percentile_approx(c, list(CLIP_QUANTILES), 10_000).alias(c) for c in FEATURES]).first()
        exprs = {c: f"LEAST(GREATEST({e}, {float(bounds[c][0])!r}), {float(bounds[c][1])!r})"
                 for c, e in exprs.items()}
    return "SELECT *, " + ", ".join(f"{e} AS `{model_column(c)}`" for c, e in exprs.items()) + " FROM __THIS__"


# Spark Connect (pyspark 4.1) frees a fitted model on the server when Python garbage-collects it, from
# whatever call is running at the time; inside another gRPC call that deadlocks the client (seen on a
# real run). Fitted models therefore stay referenced until the notebook process ends; they are small.
_KEEP: list = []


def prepare(features_df: DataFrame, transform: str = "log1p") -> PipelineModel:
    """The fitted transform -> assemble -> standardise stages (column ``features``)."""
    prep = Pipeline(stages=[
        SQLTransformer(statement=transform_statement(features_df, transform)),
        VectorAssembler(inputCols=[model_column(c) for c in FEATURES], outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
    ]).fit(features_df)
    _KEEP.extend((prep, *prep.stages))
    return prep


def _kmeans(k: int, seed: int, prediction: str = "cluster") -> KMeans:
    return KMeans(k=k, seed=seed, maxIter=MAX_ITER, featuresCol="features", predictionCol=prediction)


def best_of(scaled: DataFrame, k: int, seeds: list[int]):
    """KMeans from each seed; returns [(cost, seed, model)] sorted best first (ties: lower seed)."""
    fits = []
    for s in seeds:
        m = _kmeans(k, s).fit(scaled)
        summary = m.summary
        _KEEP.extend((m, summary))
        fits.append((float(summary.trainingCost), s, m))
    return sorted(fits, key=lambda f: (round(f[0], 6), f[1]))


def sweep_k(scaled: DataFrame, k_range: tuple[int, int], seed: int, n_init: int, log=print) -> list[dict]:
    """Silhouette and inertia for each k in the range, on *scaled* (a sample), best of n_init seeds."""
    rows = []
    evaluator = ClusteringEvaluator(featuresCol="features", predictionCol="cluster")
    for k in range(k_range[0], k_range[1] + 1):
        cost, _, model = best_of(scaled, k, list(range(seed, seed + n_init)))[0]
        silhouette = evaluator.evaluate(model.transform(scaled))
        rows.append({"k": k, "silhouette": round(float(silhouette), 4), "inertia": round(cost, 1)})
        log(f"  k={k}: silhouette {silhouette:.3f}, inertia {cost:,.0f}")
    return rows


@dataclass
class ClusterResult:
    model: PipelineModel                 # transform + scaler + the chosen KMeans
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

    @property
    def centres_scaled(self) -> list[list[float]]:
        """KMeans centres in the standardised model space (z-units of the transformed features)."""
        return [list(map(float, c)) for c in self.model.stages[-1].clusterCenters()]

    def segment_stability(self) -> dict[str, float]:
        return {self.names[c][1]: round(j, 4) for c, j in self.stability.jaccard.items()}

    def unstable_segments(self) -> list[str]:
        return [self.names[c][1] for c in self.stability.unstable]


def _labelled(predictions: DataFrame, names: dict[int, tuple[int, str]]) -> DataFrame:
    """customer_key, cluster, segment, segment_name (names joined from a k-row table)."""
    spark = predictions.sparkSession
    lookup = spark.createDataFrame([(c, s, n) for c, (s, n) in sorted(names.items())],
                                   "cluster int, segment int, segment_name string")
    return (predictions.select("customer_key", F.col("cluster").cast("int").alias("cluster"))
            .join(F.broadcast(lookup), "cluster").select("customer_key", "cluster", "segment", "segment_name"))


def _silhouette(predictions: DataFrame) -> float:
    return float(ClusteringEvaluator(featuresCol="features", predictionCol="cluster").evaluate(predictions))


def measure_stability(scaled: DataFrame, total: int, chosen, k: int, seed: int, n_init: int, runs: int,
                      log=print) -> Q.Stability:
    """Refit the same procedure (best of n_init seeds) on *runs* seeded half-samples (at most
    SWEEP_SAMPLE rows each) of the *total* rows of *scaled* and compare each refit's clusters with
    the chosen model's on those rows."""
    tables = []
    for r in range(1, runs + 1):
        size = min(SWEEP_SAMPLE, max(k, total // 2))
        sub = Q.deterministic_sample(scaled, size, seed + 1000 * r, total=total).cache()
        seeds = list(range(seed + 1000 * r, seed + 1000 * r + n_init))
        refit = best_of(sub, k, seeds)[0][2].setPredictionCol("refit")
        labelled = refit.transform(chosen.transform(sub))
        tables.append(Q.contingency(labelled, "cluster", "refit", list(range(k)), list(range(k))))
        sub.unpersist()
    result = Q.stability(tables, list(range(k)))
    if runs:
        log(f"stability: {runs} refit(s) on half-samples, mean ARI {result.mean_ari:.3f}")
    return result


def _too_few(k, least: int, customers: int) -> str:
    return (f"input table {TB.KPI_CUSTOMER_VALUE} has {customers:,} customer(s) with features, fewer than the "
            f"{least} segments k={k} asks for; lower k or check the input")


def fit_segments(features_df: DataFrame, k=5, seed: int = 42, transform: str = "log1p", n_init: int = 4,
                 k_range=DEFAULT_K_RANGE, stability_runs: int = 3, log=print) -> ClusterResult:
    """Fit the pipeline (k fixed or ``auto``), keep the best of n_init KMeans seeds, name the clusters."""
    k_param, k = str(k), parse_k(k)
    seed, n_init = int(seed), int(n_init)
    if n_init < 1:
        raise ParameterError(f"n_init must be a whole number >= 1, got {n_init!r}")
    k_range = parse_k_range(k_range)
    customers = features_df.count()
    least = k_range[0] if k == "auto" else k
    if customers < least:
        raise InputContractError(_too_few(k, least, customers))
    prep = prepare(features_df, transform)
    scaled = prep.transform(features_df).select("customer_key", "features").cache()
    sweep = []
    if k == "auto":
        sample = Q.deterministic_sample(scaled, SWEEP_SAMPLE, seed, total=customers).cache()
        log(f"k=auto: sweeping k={k_range[0]}..{k_range[1]} on {sample.count():,} sampled customers")
        sweep = sweep_k(sample, k_range, seed, n_init, log=log)
        sample.unpersist()
        k = Q.choose_k({r["k"]: r["silhouette"] for r in sweep})
        log(f"k=auto chose k={k} (the fewest segments within {Q.SILHOUETTE_TOLERANCE} silhouette of the best)")
        if customers < k:
            raise InputContractError(_too_few(k, k, customers))
    _, best_seed, best = best_of(scaled, k, list(range(seed, seed + n_init)))[0]
    predictions = best.transform(scaled).cache()
    silhouette = _silhouette(predictions)
    stability = measure_stability(scaled, customers, best, k, seed, n_init, stability_runs, log=log)
    model = PipelineModel(stages=[*prep.stages, best.setPredictionCol("cluster")])
    _KEEP.append(model)
    names = name_clusters(features_df, predictions.select("customer_key", "cluster"))
    assignments = _labelled(predictions, names)
    scaled.unpersist()
    return ClusterResult(model, names, assignments, silhouette, k, best_seed, transform, customers, "fit", k_param,
                         sweep, stability)


# The saved model: the fitted pipeline and the names of its clusters, side by side.
def _pipeline_path(model_path: str) -> str:
    return f"{model_path.rstrip('/')}/pipeline"


def _names_path(model_path: str) -> str:
    return f"{model_path.rstrip('/')}/segments"


def save_model(result: ClusterResult, model_path: str) -> None:
    spark = result.assignments.sparkSession
    if model_path.startswith("/Volumes/"):  # a Unity Catalog volume must exist before files go in
        catalog_, schema_, volume = model_path.split("/")[2:5]
        spark.sql(f"CREATE VOLUME IF NOT EXISTS {TB.qualified(volume, schema_, catalog_)}")
    result.model.write().overwrite().save(_pipeline_path(model_path))
    names = spark.createDataFrame([(c, s, n, result.transform) for c, (s, n) in sorted(result.names.items())],
                                  "cluster int, segment int, segment_name string, feature_transform string")
    names.coalesce(1).write.mode("overwrite").json(_names_path(model_path))  # readable; a user may rename


def load_model(spark: SparkSession, model_path: str) -> tuple[PipelineModel, dict[int, tuple[int, str]], str]:
    """The pipeline and cluster names a fit run saved at *model_path*."""
    try:
        model = PipelineModel.load(_pipeline_path(model_path))
        rows = spark.read.schema("cluster int, segment int, segment_name string, feature_transform string") \
            .json(_names_path(model_path)).collect()
    except Exception as e:  # noqa: BLE001 - any failure to read means there is no usable model
        raise InputContractError(
            f"mode=score needs the model a fit run saved at {model_path} (pipeline/ and segments/); "
            f"it could not be read ({type(e).__name__}). Run once with mode=fit first.") from None
    names = {r["cluster"]: (r["segment"], r["segment_name"]) for r in rows}
    k = len(model.stages[-1].clusterCenters())
    if sorted(names) != list(range(k)):
        raise InputContractError(f"the model at {model_path} has {k} clusters but names for {sorted(names)}; "
                                 f"refit with mode=fit")
    return model, names, rows[0]["feature_transform"]


def score_segments(features_df: DataFrame, model_path: str) -> ClusterResult:
    """Assign segments with the saved model: no refit, so ids and names stay those of the fit."""
    spark = features_df.sparkSession
    model, names, transform = load_model(spark, model_path)
    _KEEP.extend((model, *model.stages))
    predictions = model.transform(features_df).cache()
    customers = predictions.count()
    silhouette = _silhouette(predictions) if customers > len(names) else float("nan")
    kmeans = model.stages[-1]
    return ClusterResult(model, names, _labelled(predictions, names), silhouette, len(names), kmeans.getSeed(),
                         transform, customers, "score", str(len(names)))


def segment(features_df: DataFrame, mode: str = "fit", model_path: str = "", k=5, seed: int = 42,
            transform: str = "log1p", n_init: int = 4, k_range=DEFAULT_K_RANGE, stability_runs: int = 3,
            log=print) -> ClusterResult:
    """The cluster stage: ``fit`` refits (and saves the model), ``score`` applies the saved one."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    k_range = parse_k_range(k_range)
    parameters = {"mode": mode, "k": str(k), "k_range": "%d-%d" % k_range,
                  "seed": str(seed), "feature_transform": transform, "n_init": str(n_init),
                  "stability_runs": str(stability_runs), "model_path": model_path}
    if mode == "score":
        result = score_segments(features_df, model_path)
    else:
        result = fit_segments(features_df, k, seed, transform, n_init, k_range, stability_runs, log=log)
        if model_path:
            save_model(result, model_path)
    result.parameters = parameters
    return result


def cluster_means(features_df: DataFrame, assignments: DataFrame) -> DataFrame:
    """Segment centres in original units: the mean of each feature over the segment's members."""
    return (features_df.join(assignments, "customer_key").groupBy("segment", "segment_name")
            .agg(F.count("*").alias("customers"), *[F.round(F.avg(c), 1).alias(c) for c in FEATURES])
            .orderBy("segment"))


METRICS_SCHEMA = ("parameters map<string,string>, mode string, k_param string, k int, seed int, feature_transform string, silhouette double, "
                  "stability_ari double, segment_stability map<string,double>, unstable_segments array<string>, "
                  "customers long, model_path string, k_sweep string")


def save_cluster_outputs(result: ClusterResult, model_path: str, schema: str, catalog: str | None = None) -> None:
    """The assignments and the run's metrics, handed over to the profile and write steps."""
    import json
    TB.save_table(result.assignments, TB.SEG_ASSIGNMENTS, schema, catalog)
    metrics = result.assignments.sparkSession.createDataFrame(
        [(result.parameters, result.mode, result.k_param, result.k, result.seed, result.transform, result.silhouette,
          result.stability.mean_ari, result.segment_stability(), result.unstable_segments(), result.customers,
          model_path, json.dumps(result.sweep))], METRICS_SCHEMA)
    TB.save_table(metrics, TB.SEG_CLUSTER_METRICS, schema, catalog)
