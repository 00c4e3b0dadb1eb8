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


# A feature whose cluster z-scores all stay within this of the population mean does not separate the
# clusters (no spend recorded for almost anyone, say): it says nothing for or against a name.
FLAT = 0.1


def signature_distance(z: dict[str, float], signature: dict[str, float], flat=()) -> float:
    """Mean squared distance over the features the signature speaks of, except *flat* ones and those
    *z* lacks (a profile column not computed)."""
    terms = [(z[f] - target) ** 2 for f, target in signature.items() if f not in flat and f in z]
    return float(np.mean(terms)) if terms else 0.0


def signature_shortfall(z: dict[str, float], signature: dict[str, float], flat=()) -> float:
    """How far a profile falls short of a signature: like signature_distance, but going beyond a target
    in its own direction (more flights than the premium profile asks for) is no misfit."""
    terms = [(z[f] - t) ** 2 if t == 0 else max(0.0, (t - z[f]) * np.sign(t)) ** 2
             for f, t in signature.items() if f not in flat and f in z]
    return float(np.mean(terms)) if terms else 0.0


def assign_names(zscores: dict[int, dict[str, float]], recipe: str | Recipe = DEFAULT) -> dict[int, tuple[int, str]]:
    """cluster -> (segment id, segment name), deterministic for the same z-scores.

    With the recipe's ``naming.max_distance``, a cluster whose profile falls short of the signature it
    would take by more than that (signature_shortfall) does not get the name: its name says what sets
    it apart instead ("Members (fewer flights, lapsing)"), and its id follows the named ones."""
    recipe = get(recipe)
    signatures, traits = recipe.signatures, recipe.traits
    clusters = sorted(zscores)
    flat = {f for f in zscores[clusters[0]] if all(abs(zscores[c][f]) < FLAT for c in clusters)}
    traits = {f: words for f, words in traits.items() if f in zscores[clusters[0]]}
    cost = np.array([[signature_distance(zscores[c], sig, flat) for _, sig in signatures] for c in clusters])
    rows, cols = linear_sum_assignment(cost)
    limit = recipe.max_distance

    def fits(c, s):
        return limit is None or signature_shortfall(zscores[c], signatures[s][1], flat) <= limit

    result = {clusters[r]: (int(s), signatures[s][0]) for r, s in zip(rows, cols) if fits(clusters[r], s)}
    unfit = [clusters[r] for r, s in zip(rows, cols) if clusters[r] not in result]
    # Clusters beyond the number of signatures: nearest signature plus the trait that differs most
    # from that signature's matched cluster; ids continue after the named ones, most points first.
    extra = [c for c in clusters if c not in result and c not in unfit]
    extra.sort(key=lambda c: (-zscores[c][recipe.rank_feature], c))
    used = {name for _, name in result.values()}
    next_id = len(signatures)
    for c in extra:
        s = int(np.argmin(cost[clusters.index(c)]))
        twin = next((zscores[o] for o, (sid, _) in result.items() if sid == s), None)
        if twin is None and not fits(c, s):
            unfit.append(c)
            continue
        name = signatures[s][0]
        if twin is not None:
            feature = max(traits, key=lambda f: (abs(zscores[c][f] - twin[f]), f))
            more, less = traits[feature]
            name = f"{name} ({more if zscores[c][feature] > twin[feature] else less})"
        result[c] = (next_id, _unique(name, used))
        next_id += 1
    # Clusters no signature fits: named by their two most distinctive traits against all customers.
    for c in sorted(unfit, key=lambda c: (-zscores[c][recipe.rank_feature], c)):
        words = [traits[f][0 if zscores[c][f] > 0 else 1]
                 for f in sorted(traits, key=lambda f: (-abs(zscores[c][f]), f))[:2]]
        result[c] = (next_id, _unique(f"{recipe.unmatched} ({', '.join(words)})", used))
        next_id += 1
    return result


def _unique(name: str, used: set[str]) -> str:
    n = 2
    while name in used:
        name, n = f"{name.split(' #')[0]} #{n}", n + 1
    used.add(name)
    return name


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
    features = [c for c in recipe.naming_features if c in df.columns]
    averages = averages or {}
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


def sample_zscores(raw: np.ndarray, labels: np.ndarray, recipe: str | Recipe = DEFAULT,
                   columns: list[str] | None = None) -> dict[int, dict[str, float]]:
    """cluster_profiles' z-scores for rows on the driver: *raw* has one column per name in *columns* (the
    recipe's features, and any profile columns computed; default: the features), *labels* each row's
    cluster. A fit names its clusters from the sample it was fitted on, with no Spark pass."""
    recipe = get(recipe)
    named = list(columns or recipe.features)
    values = raw.astype("float64")  # a copy: the log scale is applied in place
    for i, c in enumerate(named):
        if c in recipe.naming_log_scale:
            values[:, i] = np.log1p(np.maximum(values[:, i], 0.0))
    sums = {}
    for cluster in np.unique(labels):
        rows = values[labels == cluster]
        sums[int(cluster)] = (len(rows), dict(zip(named, rows.sum(axis=0).tolist())),
                              dict(zip(named, (rows * rows).sum(axis=0).tolist())))
    return _zscores(sums, named)


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
