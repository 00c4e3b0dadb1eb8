"""The cluster stage's arithmetic and parameters, without Spark: k, k_range and fit_sample parsing, the
silhouette against scikit-learn's, ARI and Jaccard against their definitions, the choice of k."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from seglib import quality as Q
from seglib.cluster import parse_fit_sample, parse_k, parse_k_range, silhouette
from seglib.errors import ParameterError


@pytest.mark.parametrize("k", [0, 1, "five", "2.5", None])
def test_bad_k(k):
    with pytest.raises(ParameterError, match="k must be a whole number >= 2 or auto"):
        parse_k(k)


def test_k_and_k_range_parsing():
    assert parse_k(" 6 ") == 6 and parse_k("AUTO") == "auto"
    assert parse_k_range("3-8") == (3, 8) and parse_k_range(" 2 - 4 ") == (2, 4)
    for bad in ["8-3", "1-4", "3", "a-b", "3-99"]:
        with pytest.raises(ParameterError, match="k_range must look like 3-8"):
            parse_k_range(bad)


def test_fit_sample_bounds():
    assert parse_fit_sample("50000") == 50_000
    for bad in ["0", "999", "lots", "3000000"]:
        with pytest.raises(ParameterError, match="fit_sample must be a whole number from 1000"):
            parse_fit_sample(bad)


@pytest.mark.parametrize("rows, k, seed", [(500, 3, 1), (12_000, 5, 42), (30_000, 8, 7)])
def test_silhouette_is_scikit_learns_on_the_same_sample(rows, k, seed):
    """The closed form gives silhouette_score's value (squared Euclidean, the same seeded 10,000 rows
    above that size); a point alone in its cluster scores 0 in both."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score
    x, labels = make_blobs(n_samples=rows, centers=k, n_features=7, cluster_std=2.5, random_state=seed)
    x, labels = np.r_[x, [[40.0] * 7]], np.r_[labels, [k]]  # a singleton cluster
    expected = silhouette_score(x, labels, metric="sqeuclidean", sample_size=10_000 if len(x) > 10_000 else None,
                                random_state=seed)
    assert silhouette(x, labels, seed) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(silhouette(x, np.zeros(len(x), int), seed))  # one cluster: undefined


def test_ari_and_jaccard_from_contingency_tables():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
        b[:200] = a[:200]  # partly agreeing labelings
        table = np.zeros((4, 5))
        np.add.at(table, (a, b), 1)
        assert Q.adjusted_rand_index(table) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    table = np.array([[50, 0], [0, 50]])
    assert Q.adjusted_rand_index(table) == 1.0
    assert list(Q.best_match_jaccard(table)) == [1.0, 1.0]
    # Cluster 1 of the chosen fit split in half by the refit: Jaccard 0.5, flagged unstable.
    split = np.array([[40, 0, 0], [0, 20, 20]])
    assert list(Q.best_match_jaccard(split)) == [1.0, 0.5]
    assert Q.stability([split, split], [0, 1]).unstable == [1]


def test_choose_k_prefers_fewer_segments_when_close():
    assert Q.choose_k({3: 0.50, 4: 0.62, 5: 0.615, 6: 0.55}) == 4
    assert Q.choose_k({3: 0.50, 4: 0.60, 5: 0.605, 6: 0.55}) == 4  # within 0.01: the fewer wins
    assert Q.choose_k({3: 0.50, 4: 0.57, 5: 0.56, 6: 0.60}) == 6
