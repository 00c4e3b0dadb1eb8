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


def _with_tenure(profile, days):
    return {**profile, "membership_days": days}


def test_a_name_goes_unused_when_no_cluster_earns_it():
    # Real-data shape: a cluster of long-time members who fly a little less than average lands on the
    # "New Joiners" signature by elimination; its tenure says it is not new, so it is named by traits.
    zs = {i: _with_tenure(p, 0.3) for i, p in enumerate(PROFILES.values())}
    zs[4] = _with_tenure(z(flights=-0.5, recency=-0.3, age=-0.6), 0.2)
    result = assign_names(zs, "airline")
    assert [result[i] for i in range(4)] == [(i, n) for i, n in enumerate(list(PROFILES)[:4])]
    assert result[4] == (5, "Members (younger, fewer flights)")
    # The same cluster with the short tenure its name promises keeps the name.
    zs[4] = _with_tenure(PROFILES["New Joiners"], -1.4)
    assert assign_names(zs, "airline")[4] == (4, "New Joiners")


def test_beyond_a_profile_in_its_direction_still_fits_and_flat_features_say_nothing():
    # More flights and points than the premium profile asks for, and no spend recorded for anyone
    # (spend z-scores all near 0): still the premium members.
    zs = {i: {**p, "total_spent": 0.02 * i, "transaction_count": -0.02 * i} for i, p in enumerate(PROFILES.values())}
    zs[0] = {**z(flights=2.9, recency=-1.1, age=1.0), "total_spent": -0.03, "transaction_count": -0.03}
    assert assign_names(zs, "airline")[0] == (0, "Premium Elite Members")
