"""Stage 4: per-segment profile: size, averages in original units and the z-scores the names follow."""
from __future__ import annotations

from pyspark.sql import DataFrame

from .naming import cluster_profiles
from .recipes import DEFAULT, Recipe, get

PROFILE_AVERAGES = get().profile_averages  # the default recipe's; each recipe has its own


def profile_segments(features_df: DataFrame, assignments: DataFrame, recipe: str | Recipe = DEFAULT) -> DataFrame:
    """One row per segment: id, name, cluster, size, share, averages in original units, z-scores.

    *assignments* carries customer_key, cluster, segment and segment_name (the cluster stage's output).
    """
    spark = features_df.sparkSession
    recipe = get(recipe)
    # A profile column (tenure, say) is only there when its input table was given to build_features.
    averages = {k: c for k, c in recipe.profile_averages.items() if c in features_df.columns}
    features = [c for c in recipe.naming_features if c in features_df.columns]
    zscores, profiles = cluster_profiles(features_df, assignments, by="segment", recipe=recipe, averages=averages,
                                         carry=("segment_name", "cluster"))
    total = sum(p["customers"] for p in profiles.values())
    records = []
    for segment_id, p in sorted(profiles.items()):
        rec = {"segment": segment_id, "segment_name": p["segment_name"], "cluster": p["cluster"],
               "customer_count": p["customers"], "share": round(p["customers"] / total, 4)}
        rec.update({k: round(float(p[k]), 2) for k in averages})
        rec.update({f"z_{c}": round(zscores[segment_id][c], 3) for c in features})
        records.append(rec)
    schema = ("segment int, segment_name string, cluster int, customer_count long, share double, "
              + ", ".join(f"{k} double" for k in averages) + ", "
              + ", ".join(f"z_{c} double" for c in features))
    return spark.createDataFrame(records, schema=schema)
