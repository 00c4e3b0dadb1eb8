"""Stage 3: the lab's Spark ML pipeline (assembler -> StandardScaler(withMean, withStd) -> KMeans).

One addition, chosen from evidence (README, "Feature transform"): counts and amounts are heavy-tailed,
so by default they enter the model as log1p(x / median x). The transform is a SQLTransformer inside
the fitted pipeline, with the medians as literals, so the saved model scores new data identically.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import tables as TB
from .errors import ParameterError
from .features import FEATURES

HEAVY_TAILED = ["total_flights", "total_km_flown", "total_loyalty_points", "total_spent", "transaction_count"]
TRANSFORMS = ("log1p", "none")
MAX_ITER = 50


def parse_k(k) -> int:
    try:
        value = int(str(k).strip())
    except ValueError:
        raise ParameterError(f"k must be a whole number >= 2, got {k!r}") from None
    if value < 2:
        raise ParameterError(f"k must be a whole number >= 2, got {k!r}")
    return value


def model_column(feature: str) -> str:
    return f"x_{feature}"


def transform_statement(features_df: DataFrame, transform: str) -> str:
    """The SQL that turns raw features into model inputs (medians of positive values as literals)."""
    if transform not in TRANSFORMS:
        raise ParameterError(f"feature_transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    scales = {}
    if transform == "log1p":
        row = features_df.agg(*[
            F.percentile_approx(F.when(F.col(c) > 0, F.col(c)), 0.5, 10_000).alias(c) for c in HEAVY_TAILED
        ]).first()
        scales = {c: float(row[c]) if row[c] else 1.0 for c in HEAVY_TAILED}
    exprs = []
    for c in FEATURES:
        if c in scales:
            exprs.append(f"LN(1 + GREATEST(`{c}`, 0) / {scales[c]!r}) AS `{model_column(c)}`")
        else:
            exprs.append(f"CAST(`{c}` AS DOUBLE) AS `{model_column(c)}`")
    return "SELECT *, " + ", ".join(exprs) + " FROM __THIS__"


def build_pipeline(features_df: DataFrame, k: int, seed: int, transform: str = "log1p") -> Pipeline:
    return Pipeline(stages=[
        SQLTransformer(statement=transform_statement(features_df, transform)),
        VectorAssembler(inputCols=[model_column(c) for c in FEATURES], outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
        KMeans(k=k, seed=seed, maxIter=MAX_ITER, featuresCol="features", predictionCol="cluster"),
    ])


@dataclass
class ClusterResult:
    model: PipelineModel
    assignments: DataFrame   # customer_key, cluster
    silhouette: float
    k: int
    seed: int
    transform: str
    customers: int

    @property
    def centres_scaled(self) -> list[list[float]]:
        """KMeans centres in the standardised model space (z-units of the transformed features)."""
        return [list(map(float, c)) for c in self.model.stages[-1].clusterCenters()]


def fit_segments(features_df: DataFrame, k=5, seed: int = 42, transform: str = "log1p") -> ClusterResult:
    k = parse_k(k)
    seed = int(seed)
    customers = features_df.count()
    if customers < k:
        raise ParameterError(f"k={k} segments need at least {k} customers with features; found {customers}")
    model = build_pipeline(features_df, k, seed, transform).fit(features_df)
    predictions = model.transform(features_df)
    silhouette = ClusteringEvaluator(featuresCol="features", predictionCol="cluster").evaluate(predictions)
    assignments = predictions.select("customer_key", F.col("cluster").cast("int").alias("cluster"))
    return ClusterResult(model, assignments, float(silhouette), k, seed, transform, customers)


def cluster_means(features_df: DataFrame, assignments: DataFrame) -> DataFrame:
    """Cluster centres in original units: the mean of each feature over the cluster's members."""
    return (features_df.join(assignments, "customer_key").groupBy("cluster")
            .agg(F.count("*").alias("customers"), *[F.round(F.avg(c), 1).alias(c) for c in FEATURES])
            .orderBy("cluster"))


def save_cluster_outputs(result: ClusterResult, model_path: str, schema: str, catalog: str | None = None) -> None:
    """The fitted pipeline (for scoring later), the assignments and the run's metrics."""
    if model_path.startswith("/Volumes/"):  # a Unity Catalog volume must exist before files go in
        catalog_, schema_, volume = model_path.split("/")[2:5]
        result.assignments.sparkSession.sql(
            f"CREATE VOLUME IF NOT EXISTS {TB.qualified(volume, schema_, catalog_)}")
    result.model.write().overwrite().save(model_path)
    TB.save_table(result.assignments, TB.SEG_ASSIGNMENTS, schema, catalog)
    metrics = result.assignments.sparkSession.createDataFrame(
        [(result.k, result.seed, result.transform, result.silhouette, result.customers, model_path)],
        "k int, seed int, feature_transform string, silhouette double, customers long, model_path string")
    TB.save_table(metrics, TB.SEG_CLUSTER_METRICS, schema, catalog)
