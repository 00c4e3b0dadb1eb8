"""Stage 4: per-segment profile and the names that follow from it."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .cluster import HEAVY_TAILED
from .features import FEATURES
from .naming import assign_names

PROFILE_AVERAGES = {  # output column -> feature
    "avg_age": "age", "avg_flights": "total_flights", "avg_km": "total_km_flown",
    "avg_points": "total_loyalty_points", "avg_days_since_last_flight": "days_since_last_flight",
    "avg_spent": "total_spent", "avg_transactions": "transaction_count",
    "avg_recency_score": "recency_score", "avg_frequency_score": "frequency_score",
    "avg_monetary_score": "monetary_score",
}


def _naming_scale(c: str):
    return F.log1p(F.col(c)) if c in HEAVY_TAILED else F.col(c)


def profile_segments(features_df: DataFrame, assignments: DataFrame) -> DataFrame:
    """One row per segment: id, name, cluster, size, averages in original units, z-scores."""
    spark = features_df.sparkSession
    joined = features_df.join(assignments, "customer_key")
    scaled = joined.select("cluster", *PROFILE_AVERAGES.values(),
                           *[_naming_scale(c).alias(f"_t_{c}") for c in FEATURES])
    pop = scaled.agg(*[F.avg(f"_t_{c}").alias(f"m_{c}") for c in FEATURES],
                     *[F.stddev_pop(f"_t_{c}").alias(f"s_{c}") for c in FEATURES]).first()
    rows = (scaled.groupBy("cluster")
            .agg(F.count("*").alias("customer_count"),
                 *[F.avg(f).alias(name) for name, f in PROFILE_AVERAGES.items()],
                 *[F.avg(f"_t_{c}").alias(f"_t_{c}") for c in FEATURES])
            .orderBy("cluster").collect())  # k rows
    zscores = {r["cluster"]: {c: ((r[f"_t_{c}"] - pop[f"m_{c}"]) / pop[f"s_{c}"]) if pop[f"s_{c}"] else 0.0
                              for c in FEATURES} for r in rows}
    names = assign_names(zscores)
    total = sum(r["customer_count"] for r in rows)
    records = []
    for r in rows:
        segment, name = names[r["cluster"]]
        rec = {"segment": segment, "segment_name": name, "cluster": r["cluster"],
               "customer_count": r["customer_count"], "share": round(r["customer_count"] / total, 4)}
        rec.update({k: round(float(r[k]), 2) for k in PROFILE_AVERAGES})
        rec.update({f"z_{c}": round(zscores[r["cluster"]][c], 3) for c in FEATURES})
        records.append(rec)
    records.sort(key=lambda rec: rec["segment"])
    schema = ("segment int, segment_name string, cluster int, customer_count long, share double, "
              + ", ".join(f"{k} double" for k in PROFILE_AVERAGES) + ", "
              + ", ".join(f"z_{c} double" for c in FEATURES))
    return spark.createDataFrame(records, schema=schema)
