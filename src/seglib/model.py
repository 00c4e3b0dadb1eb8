"""The fitted segmentation model, apart from its fitting (cluster.py): the whole model as one SQL
statement, as JSON, and applied to customers with their segment names.

The profile and write steps apply the model the cluster step handed over (segmented_customers) and
import this module, not cluster.py, whose scikit-learn the local runner would otherwise import ahead
in their kernels while the cluster step runs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables as TB
from .errors import InputContractError
from .recipes import AIRLINE


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
    features: list[str] = field(default_factory=lambda: list(AIRLINE.features))
    log_features: list[str] = field(default_factory=lambda: list(AIRLINE.log_features))

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


def to_json(model: SegmentModel, seed: int, fitted_on: int) -> str:
    """The model as JSON, with the seed of its KMeans fit and the customers it was fitted on: what
    cluster.save_model writes at model_path and the cluster step hands over in seg_cluster_metrics."""
    return json.dumps({**asdict(model), "seed": seed, "fitted_on": fitted_on})


def from_json(text: str) -> tuple[SegmentModel, int]:
    """to_json's model and seed."""
    spec = json.loads(text)
    seed = int(spec.pop("seed", 0))
    spec.pop("fitted_on", None)
    return SegmentModel(**{**spec, "bounds": {c: tuple(b) for c, b in spec["bounds"].items()}}), seed


def with_names(predictions: DataFrame, names: dict[int, tuple[int, str]]) -> DataFrame:
    """*predictions* plus segment and segment_name: the names as CASE expressions on the cluster.

    Not a join with a k-row table: the join's `cluster IS NOT NULL` goes below the model's projection,
    Spark copies the model's statement into that filter, and assigning 1M customers took 13-17 s against
    0.8 s (seglib bench machine; the predictions had been cached to avoid it, 1.2 s at 1M)."""
    cluster = F.col("cluster").cast("int")
    segment = segment_name = None
    for c, (s, n) in sorted(names.items()):
        segment = (F if segment is None else segment).when(cluster == c, F.lit(s))
        segment_name = (F if segment_name is None else segment_name).when(cluster == c, F.lit(n))
    return predictions.withColumn("cluster", cluster).withColumns(
        {"segment": segment.cast("int"), "segment_name": segment_name})


def labelled(predictions: DataFrame, names: dict[int, tuple[int, str]]) -> DataFrame:
    """customer_key, cluster, segment, segment_name."""
    return with_names(predictions, names).select("customer_key", "cluster", "segment", "segment_name")


def segmented_customers(spark: SparkSession, schema: str, catalog: str | None = None) -> DataFrame:
    """seg_features with each customer's cluster, segment and segment_name, assigned by the model the
    cluster step handed over in seg_cluster_metrics (the same SQL it scores with): no table of
    assignments is written or joined."""
    metrics = TB.read_table(spark, TB.SEG_CLUSTER_METRICS, schema, catalog)
    if not {"model", "segment_names"} <= set(metrics.columns):
        raise InputContractError(f"{TB.SEG_CLUSTER_METRICS} has no columns model and segment_names (written by an "
                                 f"older seglib); run 03_cluster again")
    row = metrics.select("model", "segment_names").first()
    if row is None or row["model"] is None:
        raise InputContractError(f"{TB.SEG_CLUSTER_METRICS} holds no model; run 03_cluster first")
    model, _ = from_json(row["model"])
    names = {r["cluster"]: (r["segment"], r["segment_name"]) for r in row["segment_names"]}
    features = TB.read_table(spark, TB.SEG_FEATURES, schema, catalog)
    missing = [c for c in model.features if c not in features.columns]
    if missing:
        raise InputContractError(f"{TB.SEG_FEATURES} lacks {', '.join(missing)}, which the model in "
                                 f"{TB.SEG_CLUSTER_METRICS} uses: run 02_features and 03_cluster with the same recipe")
    predictions = model.pipeline().transform(features).select(*features.columns, "cluster")
    return with_names(predictions, names)
