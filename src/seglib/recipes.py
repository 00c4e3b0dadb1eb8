"""Recipes: what differs between segmenting an airline loyalty programme and a retailer's customers.

A recipe names its input tables, its clustering features (and which of them enter on a log scale),
the segment names and the profile each name stands for, and what the profile step averages. The five
notebooks are the same for every recipe; the ``recipe`` job parameter picks one of these.

- ``airline`` (default): the Contoso Gold layer; seven features from kpi_customer_value.
- ``retail``: invoice lines; recency, frequency and monetary value per customer (seglib.rfm), beside the
  six RFM rule segments.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import tables as TB
from .errors import ParameterError


@dataclass(frozen=True)
class Recipe:
    name: str
    inputs: tuple[str, ...]                 # tables the load step checks against the contract
    features: tuple[str, ...]               # clustering features: seg_features columns, as doubles
    log_features: tuple[str, ...]           # enter the model as log1p(x / median x) with feature_transform=log1p
    # Naming (seglib.naming): the z-score profile each segment name stands for, in business order
    # (segment id 0 is the most valuable); counts and amounts compared on a log scale.
    signatures: tuple[tuple[str, dict[str, float]], ...]
    naming_log_scale: tuple[str, ...]
    traits: dict[str, tuple[str, str]]      # words for a feature above / below the nearest named segment
    rank_feature: str                        # orders extra clusters (k above the number of names)
    profile_averages: dict[str, str]         # profile column -> seg_features column
    customers_table: str                     # the input table that lists the customers (named in errors)
    feature_inputs: tuple[str, ...]          # the input tables the features step reads
    base_table: str                          # what gold_customer_segments_ml has a row of per customer: an
                                             # input table, or a handover table (seglib.tables)
    key: str = "customer_key"                # the customer column of the gold output
    optional_inputs: tuple[str, ...] = field(default=())


AIRLINE = Recipe(
    name="airline",
    inputs=TB.GOLD_INPUTS,
    customers_table=TB.KPI_CUSTOMER_VALUE,
    feature_inputs=(TB.KPI_CUSTOMER_VALUE,),
    base_table=TB.KPI_CUSTOMER_VALUE,
    features=("age", "total_flights", "total_km_flown", "total_loyalty_points", "days_since_last_flight",
              "total_spent", "transaction_count"),
    log_features=("total_flights", "total_km_flown", "total_loyalty_points", "total_spent", "transaction_count",
                  "days_since_last_flight"),
    signatures=(
        ("Premium Elite Members", {"total_flights": 1.6, "total_km_flown": 1.6, "total_loyalty_points": 1.6,
                                   "total_spent": 1.4, "days_since_last_flight": -0.8}),
        ("Loyal Frequent Flyers", {"total_flights": 0.8, "total_km_flown": 0.8, "total_loyalty_points": 0.8,
                                   "total_spent": 0.6, "days_since_last_flight": -0.6}),
        ("Occasional Travelers", {"total_flights": 0.0, "total_km_flown": 0.0, "total_loyalty_points": 0.0,
                                  "days_since_last_flight": 0.2}),
        ("At-Risk Customers", {"days_since_last_flight": 1.5, "total_flights": -0.3}),
        ("New Joiners", {"total_flights": -1.0, "total_km_flown": -1.0, "total_loyalty_points": -1.0,
                         "days_since_last_flight": -0.6}),
    ),
    naming_log_scale=("total_flights", "total_km_flown", "total_loyalty_points", "total_spent", "transaction_count"),
    traits={
        "total_flights": ("more flights", "fewer flights"),
        "total_km_flown": ("longer distances", "shorter distances"),
        "total_loyalty_points": ("more points", "fewer points"),
        "days_since_last_flight": ("lapsing", "recently active"),
        "total_spent": ("high spend", "low spend"),
        "transaction_count": ("frequent buyers", "rare buyers"),
        "age": ("older", "younger"),
    },
    rank_feature="total_loyalty_points",
    profile_averages={
        "avg_age": "age", "avg_flights": "total_flights", "avg_km": "total_km_flown",
        "avg_points": "total_loyalty_points", "avg_days_since_last_flight": "days_since_last_flight",
        "avg_spent": "total_spent", "avg_transactions": "transaction_count",
        "avg_recency_score": "recency_score", "avg_frequency_score": "frequency_score",
        "avg_monetary_score": "monetary_score",
    },
)

# Cluster names differ from the six RFM rule names on purpose: the cross-tab of the two shows where the
# data's own groups and the fixed rules agree, which it could not if both used the same words.
RETAIL = Recipe(
    name="retail",
    inputs=(TB.RETAIL_TRANSACTIONS, TB.RETAIL_CUSTOMERS),
    optional_inputs=(TB.RETAIL_CUSTOMERS,),
    customers_table=TB.RETAIL_TRANSACTIONS,
    feature_inputs=(TB.RETAIL_TRANSACTIONS, TB.RETAIL_CUSTOMERS),
    base_table=TB.SEG_FEATURES,  # the customers with their RFM values, scores and rule segment
    features=("recency_days", "frequency", "monetary"),
    log_features=("recency_days", "frequency", "monetary"),
    signatures=(
        ("Top Spenders", {"frequency": 1.6, "monetary": 1.6, "recency_days": -0.8}),
        ("Steady Buyers", {"frequency": 0.6, "monetary": 0.6, "recency_days": -0.5}),
        ("Recent First-Timers", {"frequency": -0.8, "monetary": -0.5, "recency_days": -0.7}),
        ("Fading Customers", {"frequency": 0.0, "monetary": 0.0, "recency_days": 0.5}),
        ("Lapsed One-Timers", {"frequency": -0.8, "monetary": -0.8, "recency_days": 1.5}),
    ),
    naming_log_scale=("frequency", "monetary"),
    traits={
        "recency_days": ("lapsing", "recently active"),
        "frequency": ("more orders", "fewer orders"),
        "monetary": ("higher spend", "lower spend"),
    },
    rank_feature="monetary",
    profile_averages={
        "avg_recency_days": "recency_days", "avg_frequency": "frequency", "avg_monetary": "monetary",
        "avg_r_score": "r_score", "avg_f_score": "f_score", "avg_m_score": "m_score",
    },
    key="customer_id",
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (AIRLINE, RETAIL)}


def get(recipe: str | Recipe = "airline") -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[str(recipe).strip().lower()]
    except KeyError:
        raise ParameterError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}") from None
