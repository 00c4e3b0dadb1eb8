"""How much to trust a segmentation: agreement between fits, per-segment stability, and choosing k.

Everything is computed from contingency tables (k x k counts) of the labels on the fit sample, which
is bounded by fit_sample whatever the size of the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# Hennig (2007): a cluster whose mean best-match Jaccard across refits is below 0.75 is not reliably
# reproduced; below 0.5 it is "dissolved".
STABLE_JACCARD = 0.75
# k=auto: scores within this much silhouette of the best count as a tie, and the fewest segments win.
SILHOUETTE_TOLERANCE = 0.01


def _pairs(n: np.ndarray) -> np.ndarray:
    return n * (n - 1) / 2.0


def adjusted_rand_index(table: np.ndarray) -> float:
    """ARI (Hubert & Arabie) from a contingency table of two labelings of the same items."""
    table = np.asarray(table, dtype=float)
    n = table.sum()
    if n < 2:
        return 1.0
    index = _pairs(table).sum()
    rows, cols = _pairs(table.sum(axis=1)).sum(), _pairs(table.sum(axis=0)).sum()
    expected = rows * cols / _pairs(np.array(n))
    maximum = (rows + cols) / 2.0
    if maximum == expected:  # both labelings put everything in one cluster (or all apart)
        return 1.0
    return float((index - expected) / (maximum - expected))


def best_match_jaccard(table: np.ndarray) -> np.ndarray:
    """For each row cluster: the highest Jaccard similarity with any column cluster."""
    table = np.asarray(table, dtype=float)
    union = table.sum(axis=1, keepdims=True) + table.sum(axis=0, keepdims=True) - table
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, table / union, 0.0)
    return jaccard.max(axis=1)


def contingency(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Counts of (a, b) label pairs of the same items, labels 0..k-1, as a k x k array."""
    table = np.zeros((k, k))
    np.add.at(table, (a, b), 1)
    return table


@dataclass
class Stability:
    """Agreement of the chosen fit with refits of the same procedure on subsamples (Hennig's clusterboot
    by subsetting): the ARI with each refit, and per cluster the mean best-match Jaccard."""
    ari: list[float]                  # chosen fit vs each refit, on the refit's rows
    jaccard: dict[int, float]         # cluster of the chosen fit -> mean best-match Jaccard over refits
    threshold: float = STABLE_JACCARD

    @property
    def mean_ari(self) -> float | None:
        return float(np.mean(self.ari)) if self.ari else None

    @property
    def unstable(self) -> list[int]:
        return sorted(c for c, j in self.jaccard.items() if j < self.threshold)

    def lines(self, names: dict[int, str] | None = None) -> list[str]:
        if not self.ari:
            return ["stability: not measured"]
        label = (lambda c: names.get(c, str(c))) if names else str
        out = [f"stability over {len(self.ari)} refit(s) on subsamples: mean ARI {self.mean_ari:.3f} "
               f"(min {min(self.ari):.3f})"]
        for c, j in sorted(self.jaccard.items()):
            flag = f"  <- UNSTABLE (below {self.threshold:.2f})" if j < self.threshold else ""
            out.append(f"  {label(c)}: best-match Jaccard {j:.3f}{flag}")
        return out


def stability(tables: list[np.ndarray], clusters: list[int]) -> Stability:
    """From contingency tables chosen-cluster (rows, in *clusters* order) x refit-cluster (columns)."""
    if not tables:
        return Stability([], {})
    mean_j = np.mean([best_match_jaccard(t) for t in tables], axis=0)
    return Stability([adjusted_rand_index(t) for t in tables], {c: float(mean_j[i]) for i, c in enumerate(clusters)})


def deterministic_sample(df: DataFrame, n: int, seed: int, key: str = "customer_key",
                         total: int | None = None) -> DataFrame:
    """About *n* rows chosen by a hash of (seed, key): the same rows whatever the partitioning.
    *total* is df's row count when the caller already knows it."""
    total = df.count() if total is None else total
    if total <= n:
        return df
    u = (F.pmod(F.xxhash64(F.lit(seed), F.col(key)), F.lit(1 << 30)).cast("double") / float(1 << 30))
    return df.where(u < n / total)


def choose_k(scores: dict[int, float], tolerance: float = SILHOUETTE_TOLERANCE) -> int:
    """The fewest segments whose silhouette is within *tolerance* of the best."""
    best = max(scores.values())
    return min(k for k, s in scores.items() if s >= best - tolerance)
