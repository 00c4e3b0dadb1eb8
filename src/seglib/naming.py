"""Segment names from profiles, never from cluster indexes.

Each name has a signature: the z-scores (cluster mean relative to the population, counts and amounts
on a log scale) its segment is expected to show on a few features. Clusters get names by an optimal
one-to-one matching (Hungarian algorithm) that minimises the total distance between cluster z-scores
and signatures. The signature order is the business order of segment ids: 0 is the most valuable.
Edit SIGNATURES to rename segments or change what they mean.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from .features import FEATURES

# Naming compares clusters on a log scale for counts and amounts (so one extreme member does not make
# a cluster "elite"), and in days for recency, which is what the signatures below are written in.
LOG_SCALE = ["total_flights", "total_km_flown", "total_loyalty_points", "total_spent", "transaction_count"]

SIGNATURES: list[tuple[str, dict[str, float]]] = [
    ("Premium Elite Members", {"total_flights": 1.6, "total_km_flown": 1.6, "total_loyalty_points": 1.6,
                               "total_spent": 1.4, "days_since_last_flight": -0.8}),
    ("Loyal Frequent Flyers", {"total_flights": 0.8, "total_km_flown": 0.8, "total_loyalty_points": 0.8,
                               "total_spent": 0.6, "days_since_last_flight": -0.6}),
    ("Occasional Travelers", {"total_flights": 0.0, "total_km_flown": 0.0, "total_loyalty_points": 0.0,
                              "days_since_last_flight": 0.2}),
    ("At-Risk Customers", {"days_since_last_flight": 1.5, "total_flights": -0.3}),
    ("New Joiners", {"total_flights": -1.0, "total_km_flown": -1.0, "total_loyalty_points": -1.0,
                     "days_since_last_flight": -0.6}),
]

# Words for the trait that sets an extra cluster apart from its nearest named segment (k > 5).
TRAITS = {
    "total_flights": ("more flights", "fewer flights"),
    "total_km_flown": ("longer distances", "shorter distances"),
    "total_loyalty_points": ("more points", "fewer points"),
    "days_since_last_flight": ("lapsing", "recently active"),
    "total_spent": ("high spend", "low spend"),
    "transaction_count": ("frequent buyers", "rare buyers"),
    "age": ("older", "younger"),
}


def signature_distance(z: dict[str, float], signature: dict[str, float]) -> float:
    """Mean squared distance over the features the signature speaks of."""
    return float(np.mean([(z[f] - target) ** 2 for f, target in signature.items()]))


def assign_names(zscores: dict[int, dict[str, float]]) -> dict[int, tuple[int, str]]:
    """cluster -> (segment id, segment name), deterministic for the same z-scores."""
    clusters = sorted(zscores)
    cost = np.array([[signature_distance(zscores[c], sig) for _, sig in SIGNATURES] for c in clusters])
    rows, cols = linear_sum_assignment(cost)
    result = {clusters[r]: (int(s), SIGNATURES[s][0]) for r, s in zip(rows, cols)}
    # Clusters beyond the number of signatures: nearest signature plus the trait that differs most
    # from that signature's matched cluster; ids continue after the named ones, most points first.
    extra = [c for c in clusters if c not in result]
    extra.sort(key=lambda c: (-zscores[c]["total_loyalty_points"], c))
    used = {name for _, name in result.values()}
    for i, c in enumerate(extra):
        s = int(np.argmin(cost[clusters.index(c)]))
        base_name = SIGNATURES[s][0]
        twin = next((zscores[o] for o, (sid, _) in result.items() if sid == s), None)
        name = base_name
        if twin is not None:
            feature = max(TRAITS, key=lambda f: (abs(zscores[c][f] - twin[f]), f))
            more, less = TRAITS[feature]
            name = f"{base_name} ({more if zscores[c][feature] > twin[feature] else less})"
        n = 2
        while name in used:
            name, n = f"{name.split(' #')[0]} #{n}", n + 1
        used.add(name)
        result[c] = (len(SIGNATURES) + i, name)
    return result


def _naming_scale(c: str):
    return F.log1p(F.col(c)) if c in LOG_SCALE else F.col(c)


def cluster_zscores(features_df: DataFrame, assignments: DataFrame | None = None,
                    by: str = "cluster") -> dict[int, dict[str, float]]:
    """Per cluster (column *by* of *assignments*, or of *features_df* itself when it carries it): each
    feature's mean relative to the population, in population standard deviations, on the naming scale.
    One aggregation (count, sum, sum of squares per cluster); k rows collected."""
    df = features_df if assignments is None else features_df.join(assignments.select("customer_key", by),
                                                                    "customer_key")
    scaled = df.select(by, *[_naming_scale(c).alias(c) for c in FEATURES])
    rows = scaled.groupBy(by).agg(F.count("*").alias("_n"), *[F.sum(c).alias(f"s_{c}") for c in FEATURES],
                                  *[F.sum(F.col(c) * F.col(c)).alias(f"q_{c}") for c in FEATURES]).collect()
    n = sum(r["_n"] for r in rows)
    out: dict[int, dict[str, float]] = {r[by]: {} for r in rows}
    for c in FEATURES:
        mean = sum(r[f"s_{c}"] for r in rows) / n
        std = max(sum(r[f"q_{c}"] for r in rows) / n - mean * mean, 0.0) ** 0.5
        for r in rows:
            out[r[by]][c] = (r[f"s_{c}"] / r["_n"] - mean) / std if std > 1e-12 * max(1.0, abs(mean)) else 0.0
    return out


def name_clusters(features_df: DataFrame, assignments: DataFrame | None = None) -> dict[int, tuple[int, str]]:
    """cluster -> (segment id, segment name) from the clusters' profiles (*assignments* None: the
    ``cluster`` column of *features_df*)."""
    return assign_names(cluster_zscores(features_df, assignments))
