"""Stage 4: per-segment profile: size, averages in original units and the z-scores the names follow."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .features import FEATURES
from .naming import cluster_zscores

PROFILE_AVERAGES = {  # output column -> feature
    "avg_age": "age", "avg_flights": "total_flights", "avg_km": "total_km_flown",
    "avg_points": "total_loyalty_points", "avg_days_since_last_flight": "days_since_last_flight",
    "avg_spent": "total_spent", "avg_transactions": "transaction_count",
    "avg_recency_score": "recency_score", "avg_frequency_score": "frequency_score",
    "avg_monetary_score": "monetary_score",
}


def profile_segments(features_df: DataFrame, assignments: DataFrame) -> DataFrame:
    """One row per segment: id, name, cluster, size, share, averages in original units, z-scores.

    *assignments* carries customer_key, cluster, segment and segment_name (the cluster stage's output).
    """
    spark = features_df.sparkSession
    joined = features_df.join(assignments.select("customer_key", "cluster", "segment", "segment_name"),
                              "customer_key")
    rows = (joined.groupBy("segment", "segment_name", "cluster")
            .agg(F.count("*").alias("customer_count"), *[F.avg(f).alias(name) for name, f in PROFILE_AVERAGES.items()])
            .orderBy("segment").collect())  # k rows
    zscores = cluster_zscores(features_df, assignments, by="segment")
    total = sum(r["customer_count"] for r in rows)
    records = []
    for r in rows:
        rec = {"segment": r["segment"], "segment_name": r["segment_name"], "cluster": r["cluster"],
               "customer_count": r["customer_count"], "share": round(r["customer_count"] / total, 4)}
        rec.update({k: round(float(r[k]), 2) for k in PROFILE_AVERAGES})
        rec.update({f"z_{c}": round(zscores[r["segment"]][c], 3) for c in FEATURES})
        records.append(rec)
    schema = ("segment int, segment_name string, cluster int, customer_count long, share double, "
              + ", ".join(f"{k} double" for k in PROFILE_AVERAGES) + ", "
              + ", ".join(f"z_{c} double" for c in FEATURES))
    return spark.createDataFrame(records, schema=schema)
