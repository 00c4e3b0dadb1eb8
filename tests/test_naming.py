"""Names follow profiles (pure Python: no Spark)."""
import random

from seglib.naming import SIGNATURES, assign_names

FEATURES = ["age", "total_flights", "total_km_flown", "total_loyalty_points", "days_since_last_flight",
            "total_spent", "transaction_count"]


def z(flights=0.0, recency=0.0, spent=0.0, age=0.0):
    return {"age": age, "total_flights": flights, "total_km_flown": flights, "total_loyalty_points": flights,
            "days_since_last_flight": recency, "total_spent": spent, "transaction_count": spent}


PROFILES = {
    "Premium Elite Members": z(flights=2.1, recency=-0.9, spent=1.9),
    "Loyal Frequent Flyers": z(flights=1.0, recency=-0.6, spent=0.8),
    "Occasional Travelers": z(flights=0.1, recency=0.1, spent=0.0),
    "At-Risk Customers": z(flights=-0.4, recency=1.6, spent=-0.3),
    "New Joiners": z(flights=-1.1, recency=-0.7, spent=-0.6),
}


def test_names_follow_profiles_whatever_the_cluster_index():
    names = list(PROFILES)
    for trial in range(20):
        order = names[:]
        random.Random(trial).shuffle(order)
        result = assign_names({i: PROFILES[n] for i, n in enumerate(order)})
        for i, n in enumerate(order):
            assert result[i][1] == n
            assert result[i][0] == [s for s, _ in SIGNATURES].index(n)  # business order, not cluster index


def test_extra_clusters_get_descriptive_unique_names():
    zs = {i: p for i, p in enumerate(PROFILES.values())}
    # k=6: a sixth cluster between Loyal and Occasional. It is nearest the Loyal signature, and flies
    # (and so earns points) less than the cluster already named Loyal.
    zs[5] = z(flights=0.5, recency=-0.5, spent=0.7)
    result = assign_names(zs)
    names = [n for _, n in result.values()]
    assert len(set(names)) == 6
    assert result[5] == (5, "Loyal Frequent Flyers (fewer points)")
    assert result[1] == (1, "Loyal Frequent Flyers")


def test_fewer_clusters_than_names():
    result = assign_names({0: PROFILES["Premium Elite Members"], 1: PROFILES["At-Risk Customers"],
                           2: PROFILES["New Joiners"]})
    assert [result[i][1] for i in range(3)] == ["Premium Elite Members", "At-Risk Customers", "New Joiners"]
