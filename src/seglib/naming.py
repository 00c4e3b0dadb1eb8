"""Segment names from profiles, never from cluster indexes.

Each name has a signature: the z-scores (cluster mean relative to the population, counts and amounts
on a log scale) its segment is expected to show on a few features. Clusters get names by an optimal
one-to-one matching (Hungarian algorithm) that minimises the total distance between cluster z-scores
and signatures. The signature order is the business order of segment ids: 0 is the most valuable.
The signatures live with each recipe (seglib.recipes): edit them to rename segments or change what they mean.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from .recipes import DEFAULT, Recipe, get

# The airline recipe's, for readers of this module; every function takes the recipe.
SIGNATURES = list(get().signatures)


def signature_distance(z: dict[str, float], signature: dict[str, float]) -> float:
    """Mean squared distance over the features the signature speaks of."""
    return float(np.mean([(z[f] - target) ** 2 for f, target in signature.items()]))


def assign_names(zscores: dict[int, dict[str, float]], recipe: str | Recipe = DEFAULT) -> dict[int, tuple[int, str]]:
    """cluster -> (segment id, segment name), deterministic for the same z-scores."""
    recipe = get(recipe)
    signatures, traits = recipe.signatures, recipe.traits
    clusters = sorted(zscores)
    cost = np.array([[signature_distance(zscores[c], sig) for _, sig in signatures] for c in clusters])
    rows, cols = linear_sum_assignment(cost)
    result = {clusters[r]: (int(s), signatures[s][0]) for r, s in zip(rows, cols)}
    # Clusters beyond the number of signatures: nearest signature plus the trait that differs most
    # from that signature's matched cluster; ids continue after the named ones, most points first.
    extra = [c for c in clusters if c not in result]
    extra.sort(key=lambda c: (-zscores[c][recipe.rank_feature], c))
    used = {name for _, name in result.values()}
    for i, c in enumerate(extra):
        s = int(np.argmin(cost[clusters.index(c)]))
        base_name = signatures[s][0]
        twin = next((zscores[o] for o, (sid, _) in result.items() if sid == s), None)
        name = base_name
        if twin is not None:
            feature = max(traits, key=lambda f: (abs(zscores[c][f] - twin[f]), f))
            more, less = traits[feature]
            name = f"{base_name} ({more if zscores[c][feature] > twin[feature] else less})"
        n = 2
        while name in used:
            name, n = f"{name.split(' #')[0]} #{n}", n + 1
        used.add(name)
        result[c] = (len(signatures) + i, name)
    return result


def _naming_scale(c: str, recipe: Recipe):
    return F.log1p(F.greatest(F.col(c), F.lit(0.0))) if c in recipe.naming_log_scale else F.col(c)


def cluster_profiles(features_df: DataFrame, assignments: DataFrame | None = None, by: str = "cluster",
                     recipe: str | Recipe = DEFAULT, averages: dict[str, str] | None = None,
                     carry: tuple[str, ...] = ()) -> tuple[dict[int, dict[str, float]], dict[int, dict]]:
    """Per cluster (column *by* of *assignments*, or of *features_df* itself when it carries it), in one
    aggregation with k rows collected (each extra pass over the customers cost seconds at 1M):

    - the z-scores the names follow: each feature's mean relative to the population, in population
      standard deviations, on the naming scale;
    - ``customers``, the mean of each column of *averages* (output name -> column) and the *carry*
      columns, which are constant within a cluster (a segment's name)."""
    df = features_df if assignments is None else features_df.join(
        assignments.select("customer_key", by, *[c for c in carry if c != by]), "customer_key")
    recipe = get(recipe)
    features, averages = recipe.features, averages or {}
    rows = (df.groupBy(by).agg(
        F.count("*").alias("_n"),
        *[F.sum(_naming_scale(c, recipe)).alias(f"s_{c}") for c in features],
        *[F.sum(_naming_scale(c, recipe) * _naming_scale(c, recipe)).alias(f"q_{c}") for c in features],
        *[F.avg(column).alias(f"a_{name}") for name, column in averages.items()],
        *[F.max(c).alias(f"c_{c}") for c in carry])
        .collect())
    zscores = _zscores({r[by]: (r["_n"], {c: r[f"s_{c}"] for c in features}, {c: r[f"q_{c}"] for c in features})
                        for r in rows}, features)
    profiles = {r[by]: {"customers": r["_n"], **{c: r[f"c_{c}"] for c in carry},
                        **{name: r[f"a_{name}"] for name in averages}} for r in rows}
    return zscores, profiles


def sample_zscores(raw: np.ndarray, labels: np.ndarray, recipe: str | Recipe = DEFAULT) -> dict[int, dict[str, float]]:
    """cluster_profiles' z-scores for rows on the driver: *raw* has one column per recipe feature, *labels*
    each row's cluster. A fit names its clusters from the sample it was fitted on, with no Spark pass."""
    recipe = get(recipe)
    values = raw.astype("float64")  # a copy: the log scale is applied in place
    for i, c in enumerate(recipe.features):
        if c in recipe.naming_log_scale:
            values[:, i] = np.log1p(np.maximum(values[:, i], 0.0))
    sums = {}
    for cluster in np.unique(labels):
        rows = values[labels == cluster]
        sums[int(cluster)] = (len(rows), dict(zip(recipe.features, rows.sum(axis=0).tolist())),
                              dict(zip(recipe.features, (rows * rows).sum(axis=0).tolist())))
    return _zscores(sums, recipe.features)


def _zscores(sums: dict[int, tuple[int, dict[str, float], dict[str, float]]],
             features) -> dict[int, dict[str, float]]:
    """Each cluster's mean relative to the population, in population standard deviations, from each
    cluster's (rows, sum per feature, sum of squares per feature)."""
    n = sum(rows for rows, _, _ in sums.values())
    zscores: dict[int, dict[str, float]] = {c: {} for c in sums}
    for f in features:
        mean = sum(s[f] for _, s, _ in sums.values()) / n
        std = max(sum(q[f] for _, _, q in sums.values()) / n - mean * mean, 0.0) ** 0.5
        for c, (rows, s, _) in sums.items():
            zscores[c][f] = (s[f] / rows - mean) / std if std > 1e-12 * max(1.0, abs(mean)) else 0.0
    return zscores
