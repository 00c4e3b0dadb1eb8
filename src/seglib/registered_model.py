"""The registered model's pyfunc (MLflow "models from code"): the file is copied into the model as it
is, so it imports only numpy, pandas and mlflow, never seglib, and a Databricks serving endpoint or a
plain ``mlflow.pyfunc.load_model`` needs nothing else.

It assigns segments from a pandas frame of the model's features with seglib's model files
(``model.json``: transform, scaling and centres; ``segments.json``: the clusters' ids and names), the
same numbers the Spark SQL statement in cluster.py holds: inputs transformed, clipped and
standardised, then the nearest centre by squared distance (ties to the lower cluster). Tested equal to
seglib's Spark scoring (tests/stages/test_registry.py). seglib itself scores in Spark and reads the
same two files from the registry (cluster.load_registered).
"""
import json

import mlflow
import numpy as np
import pandas as pd


def _assign(spec: dict, frame: pd.DataFrame) -> np.ndarray:
    features, logs = spec["features"], set(spec["log_features"])
    x = frame[features].to_numpy(dtype="float64").copy()
    for i, c in enumerate(features):
        if spec["transform"] == "log1p":
            if c in logs:
                x[:, i] = np.log1p(np.maximum(x[:, i], 0) / spec["medians"][c])
            x[:, i] = np.clip(x[:, i], *spec["bounds"][c])
        std = spec["stds"][c]
        x[:, i] = (x[:, i] - spec["means"][c]) / std if std > 0 else 0.0
    centres = np.asarray(spec["centres"], dtype="float64")
    distances = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1)  # the first of equal minima, as the SQL's ARRAY_POSITION


class SegmentationModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["model"], encoding="utf-8") as f:
            self.spec = json.load(f)
        with open(context.artifacts["segments"], encoding="utf-8") as f:
            self.names = {int(r["cluster"]): (int(r["segment"]), r["segment_name"]) for r in json.load(f)}

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        clusters = _assign(self.spec, frame)
        return pd.DataFrame({"cluster": clusters.astype("int32"),
                             "segment": np.array([self.names[c][0] for c in clusters], dtype="int32"),
                             "segment_name": [self.names[c][1] for c in clusters]})


mlflow.models.set_model(SegmentationModel())
