"""Table names and schemas: the one place that defines them.

Input: the Contoso airline Gold layer (DESIGN.md). Handover tables between notebooks live in the
same schema, prefixed ``seg_``; outputs are the two gold tables dashboards read.
"""
from __future__ import annotations

import re

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import ParameterError

# Input Gold layer
DIM_CUSTOMERS = "dim_customers"
FACT_FLIGHTS = "fact_flights"
FACT_TRANSACTIONS = "fact_transactions"
KPI_CUSTOMER_VALUE = "kpi_customer_value"
# Tests only: the archetype each demo member was drawn from. No pipeline code reads it.
FIXTURE_TRUTH = "fixture_truth"

# Handover between notebooks (one process each, on Databricks and under papermill)
SEG_FEATURES = "seg_features"
SEG_ASSIGNMENTS = "seg_assignments"
SEG_CLUSTER_METRICS = "seg_cluster_metrics"
SEG_PROFILE = "seg_profile"

# Outputs
GOLD_SEGMENTS = "gold_customer_segments_ml"
GOLD_SUMMARY = "gold_segment_summary"

INPUT_SCHEMAS: dict[str, T.StructType] = {
    DIM_CUSTOMERS: T.StructType([
        T.StructField("customer_key", T.IntegerType()),
        T.StructField("gender", T.StringType()),
        T.StructField("age", T.IntegerType()),
        T.StructField("loyalty_tier", T.IntegerType()),
        T.StructField("loyalty_join_date", T.StringType()),
        T.StructField("first_flight_date", T.StringType()),
        T.StructField("city", T.StringType()),
        T.StructField("province", T.StringType()),
        T.StructField("country", T.StringType()),
        T.StructField("load_timestamp", T.TimestampType()),
    ]),
    FACT_FLIGHTS: T.StructType([
        T.StructField("customer_key", T.IntegerType()),
        T.StructField("total_flights", T.IntegerType()),
        T.StructField("base_points", T.IntegerType()),
        T.StructField("year_1_flights", T.DoubleType()),
        T.StructField("year_2_flights", T.DoubleType()),
        T.StructField("total_km_flown", T.IntegerType()),
        T.StructField("avg_flight_interval_days", T.DoubleType()),
        T.StructField("max_flight_interval_days", T.IntegerType()),
        T.StructField("days_since_last_flight", T.IntegerType()),
        T.StructField("exchange_count", T.IntegerType()),
        T.StructField("avg_discount_rate", T.DoubleType()),
        T.StructField("total_loyalty_points", T.IntegerType()),
        T.StructField("non_flight_points", T.IntegerType()),
        T.StructField("last_flight_date", T.DateType()),
        T.StructField("load_timestamp", T.TimestampType()),
    ]),
    FACT_TRANSACTIONS: T.StructType([
        T.StructField("transaction_id", T.StringType()),
        T.StructField("customer_key", T.IntegerType()),
        T.StructField("transaction_date", T.DateType()),
        T.StructField("transaction_amount", T.DoubleType()),
        T.StructField("status", T.StringType()),
        T.StructField("region", T.StringType()),
        T.StructField("payment_method", T.StringType()),
        T.StructField("load_timestamp", T.TimestampType()),
    ]),
    KPI_CUSTOMER_VALUE: T.StructType([
        T.StructField("customer_key", T.IntegerType()),
        T.StructField("gender", T.StringType()),
        T.StructField("age", T.IntegerType()),
        T.StructField("loyalty_tier", T.IntegerType()),
        T.StructField("province", T.StringType()),
        T.StructField("total_flights", T.IntegerType()),
        T.StructField("total_km_flown", T.IntegerType()),
        T.StructField("total_loyalty_points", T.IntegerType()),
        T.StructField("days_since_last_flight", T.IntegerType()),
        T.StructField("total_spent", T.DoubleType()),
        T.StructField("transaction_count", T.LongType()),
        T.StructField("customer_status", T.StringType()),
    ]),
}

GOLD_SUMMARY_COLUMNS = ["segment", "segment_name", "customer_count", "avg_flights", "avg_points", "avg_revenue"]

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]+$")


def check_identifier(value: str, what: str) -> str:
    """Catalog, schema and table names reach SQL: allow only letters, digits and underscores."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ParameterError(f"{what} must match [A-Za-z0-9_]+, got {value!r}")
    return value


def qualified(table: str, schema: str, catalog: str | None = None) -> str:
    """``catalog.schema.table`` (Unity Catalog) or ``schema.table`` (local / Fabric), back-quoted."""
    parts = ([check_identifier(catalog, "catalog")] if catalog else []) + [
        check_identifier(schema, "schema"),
        check_identifier(table, "table"),
    ]
    return ".".join(f"`{p}`" for p in parts)


def schema_name(schema: str, catalog: str | None = None) -> str:
    parts = ([check_identifier(catalog, "catalog")] if catalog else []) + [check_identifier(schema, "schema")]
    return ".".join(f"`{p}`" for p in parts)


def conform(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Exactly the schema's columns, in order, cast to its types."""
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def save_table(df: DataFrame, table: str, schema: str, catalog: str | None = None) -> str:
    """Every table seglib writes: Delta, overwrite, schema replaced (the lab's mode)."""
    name = qualified(table, schema, catalog)
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").saveAsTable(name)
    return name
