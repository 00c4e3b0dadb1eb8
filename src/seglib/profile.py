"""Stage 4: per-segment profile: size, averages in original units and the z-scores the names follow."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .naming import cluster_zscores
from .recipes import AIRLINE, Recipe, get

PROFILE_AVERAGES = AIRLINE.profile_averages  # the airline recipe's; each recipe has its own


def profile_segments(features_df: DataFrame, assignments: DataFrame, recipe: str | Recipe = AIRLINE) -> DataFrame:
    """One row per segment: id, name, cluster, size, share, averages in original units, z-scores.

    *assignments* carries customer_key, cluster, segment and segment_name (the cluster stage's output).
    """
    spark = features_df.sparkSession
    recipe = get(recipe)
    averages, features = recipe.profile_averages, recipe.features
    joined = features_df.join(assignments.select("customer_key", "cluster", "segment", "segment_name"),
                              "customer_key")
    rows = (joined.groupBy("segment", "segment_name", "cluster")
            .agg(F.count("*").alias("customer_count"), *[F.avg(f).alias(name) for name, f in averages.items()])
            .orderBy("segment").collect())  # k rows
    zscores = cluster_zscores(features_df, assignments, by="segment", recipe=recipe)
    total = sum(r["customer_count"] for r in rows)
    records = []
    for r in rows:
        rec = {"segment": r["segment"], "segment_name": r["segment_name"], "cluster": r["cluster"],
               "customer_count": r["customer_count"], "share": round(r["customer_count"] / total, 4)}
        rec.update({k: round(float(r[k]), 2) for k in averages})
        rec.update({f"z_{c}": round(zscores[r["segment"]][c], 3) for c in features})
        records.append(rec)
    schema = ("segment int, segment_name string, cluster int, customer_count long, share double, "
              + ", ".join(f"{k} double" for k in averages) + ", "
              + ", ".join(f"z_{c} double" for c in features))
    return spark.createDataFrame(records, schema=schema)
