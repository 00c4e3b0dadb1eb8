"""Table names, and the schemas of what seglib writes.

Inputs are a recipe's tables (their columns and types live in the recipe files, seglib.recipes: the
Contoso airline Gold layer, retail invoice lines). Handover tables between notebooks live in the same
schema, prefixed ``seg_``; outputs are the gold tables dashboards read.

Where they live is a Location (catalog tables, or Delta folders for the inputs and the outputs);
``read_table`` and ``save_table`` are the one place that reads and writes them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import ParameterError
from .session import is_managed_runtime

# Input Gold layer
DIM_CUSTOMERS = "dim_customers"
FACT_FLIGHTS = "fact_flights"
FACT_TRANSACTIONS = "fact_transactions"
KPI_CUSTOMER_VALUE = "kpi_customer_value"
# Tests only: the archetype each demo member was drawn from. No pipeline code reads it.
FIXTURE_TRUTH = "fixture_truth"

# Retail recipe input (a transactions table; the customers table is optional)
RETAIL_TRANSACTIONS = "retail_transactions"
RETAIL_CUSTOMERS = "retail_customers"

# Handover between notebooks (one process each, on Databricks and under papermill)
SEG_FEATURES = "seg_features"
SEG_ASSIGNMENTS = "seg_assignments"
SEG_CLUSTER_METRICS = "seg_cluster_metrics"
SEG_PROFILE = "seg_profile"
SEG_INPUTS = "seg_inputs"              # the Gold tables' Delta versions and row counts the run read
SEG_FEATURE_REPORT = "seg_feature_report"
HANDOVER_TABLES = (SEG_FEATURES, SEG_ASSIGNMENTS, SEG_CLUSTER_METRICS, SEG_PROFILE, SEG_INPUTS, SEG_FEATURE_REPORT)

# Outputs
GOLD_SEGMENTS = "gold_customer_segments_ml"
GOLD_SUMMARY = "gold_segment_summary"
GOLD_MIGRATION = "gold_segment_migration"   # who moved between segments since the previous run
GOLD_RUNS = "gold_segmentation_runs"        # one row appended per run

GOLD_INPUTS = (DIM_CUSTOMERS, FACT_FLIGHTS, FACT_TRANSACTIONS, KPI_CUSTOMER_VALUE)  # the airline recipe's
RETAIL_INPUTS = (RETAIL_TRANSACTIONS, RETAIL_CUSTOMERS)
# What seglib writes: under target_path when one is set. Every other table is an input (source_path).
WRITTEN_TABLES = HANDOVER_TABLES + (GOLD_SEGMENTS, GOLD_SUMMARY, GOLD_MIGRATION, GOLD_RUNS, FIXTURE_TRUTH)

# gold_customer_segments_ml = every kpi_customer_value column, then these
GOLD_SEGMENT_COLUMNS = ["segment", "segment_name", "run_id"]
GOLD_SUMMARY_COLUMNS = ["segment", "segment_name", "customer_count", "avg_flights", "avg_points", "avg_revenue",
                        "run_id"]

# The retail recipe: gold_customer_segments_ml is one row per customer with these columns (the customer
# attributes only when retail_customers exists), then GOLD_SEGMENT_COLUMNS; the summary has one row per
# cluster (grouping "cluster") and one per RFM segment (grouping "rfm_segment").
RETAIL_RFM_COLUMNS = ["customer_id", "recency_days", "frequency", "monetary", "first_purchase", "last_purchase",
                      "r_score", "f_score", "m_score", "rfm_segment"]
RETAIL_SUMMARY_COLUMNS = ["grouping", "segment", "segment_name", "customer_count", "avg_recency_days",
                          "avg_frequency", "avg_monetary", "total_revenue", "run_id"]

# The RFM declarative pipeline (pipelines/rfm, seglib.pipeline): materialized views in the pipeline's schema.
# gold_rfm_segments has RETAIL_RFM_COLUMNS; its summary one row per rule segment.
GOLD_RFM_SEGMENTS = "gold_rfm_segments"
GOLD_RFM_SUMMARY = "gold_rfm_segment_summary"
RFM_QUALITY_CHECKS = "rfm_quality_checks"
PIPELINE_TABLES = (GOLD_RFM_SEGMENTS, GOLD_RFM_SUMMARY, RFM_QUALITY_CHECKS)
RFM_PIPELINE_SUMMARY_COLUMNS = ["segment", "segment_name", "customer_count", "avg_recency_days", "avg_frequency",
                                "avg_monetary", "total_revenue"]

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


def try_cast(column: str, data_type: T.DataType) -> Column:
    """Column *column* as *data_type*, null where a value does not convert, never an error (ANSI mode or
    not). SQL's try_cast, which every supported Spark has; Column.try_cast exists only from Spark 4.0."""
    return F.expr(f"try_cast({quote(column)} AS {data_type.simpleString()})")


def quote(column: str) -> str:
    """A column name as a SQL identifier."""
    return "`" + column.replace("`", "``") + "`"


@dataclass(frozen=True)
class Location:
    """Where a run's tables live: made once per notebook (seglib.setup) and passed to every stage.

    Catalog tables ``catalog.schema.table`` (no catalog: the session's, as in Fabric or locally), or
    Delta folders: the inputs under *source_path* and everything seglib writes (WRITTEN_TABLES) under
    *target_path*, one sub-folder per table, e.g. OneLake
    ``abfss://<workspace>@onelake.dfs.fabric.microsoft.com/<lakehouse>.Lakehouse/Tables``. An empty path
    means catalog tables for that side."""
    schema: str
    catalog: str | None = None
    source_path: str = ""
    target_path: str = ""

    def __post_init__(self):
        check_identifier(self.schema, "schema")
        if self.catalog:
            check_identifier(self.catalog, "catalog")
        object.__setattr__(self, "catalog", self.catalog or None)
        for side in ("source_path", "target_path"):
            object.__setattr__(self, side, (getattr(self, side) or "").rstrip("/"))

    def path(self, table: str) -> str | None:
        """The Delta folder of *table* when it lives at a path, None when it is a catalog table."""
        base = self.target_path if table in WRITTEN_TABLES else self.source_path
        return f"{base}/{check_identifier(table, 'table')}" if base else None

    def qualified(self, table: str) -> str:
        """*table*'s catalog name, back-quoted (also for a table at a path: the lab's SQL names it so)."""
        return qualified(table, self.schema, self.catalog)

    def name(self, table: str) -> str:
        """How messages name *table*: its path, or its qualified catalog name."""
        return self.path(table) or self.qualified(table)

    def sql(self, table: str) -> str:
        """*table* in a SQL statement: ``delta.`<path>``` or its qualified name."""
        path = self.path(table)
        return f"delta.`{path}`" if path else self.qualified(table)

    @property
    def schema_name(self) -> str:
        return schema_name(self.schema, self.catalog)

    def describe(self) -> str:
        return "; ".join([f"inputs: {self.source_path}" if self.source_path else "inputs: catalog tables",
                          f"outputs: {self.target_path}" if self.target_path else "outputs: catalog tables"])


def read_table(spark: SparkSession, table: str, where: Location) -> DataFrame:
    """Every table seglib reads, from its path or from the catalog."""
    path = where.path(table)
    if path:
        return spark.read.format("delta").load(path)
    return spark.read.table(where.qualified(table))


def _columns(schema: T.StructType) -> list:
    # Name, type and comment: a changed comment must replace the schema, as a changed column does (an
    # overwrite without overwriteSchema keeps the table's column comments, whatever the DataFrame's say).
    return [(f.name, f.dataType, f.metadata.get("comment") or None) for f in schema.fields]


def _existing(spark: SparkSession, path: str | None, name: str, description: str | None):
    """(schema, description) of the table as it is, or None when it is not there yet (or unreadable). The
    description is only looked up when there is one to compare with (DESCRIBE DETAIL: 0.1-0.3 s locally)."""
    try:
        schema = (spark.read.format("delta").load(path) if path else spark.read.table(name)).schema
        if description is None:
            return schema, None
        return schema, spark.sql(f"DESCRIBE DETAIL {_sql_name(path, name)}").first()["description"]
    except Exception:  # noqa: BLE001 - not there yet (or unreadable): written with its schema, as before
        return None


def _sql_name(path: str | None, name: str) -> str:
    return f"delta.{quote(path)}" if path else name


def sql_string(text: str) -> str:
    """*text* as a SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _create(df: DataFrame, path: str | None, name: str, description: str, replace: bool) -> None:
    # DataFrameWriterV2 is the one writer that sets Delta's table description ("comment") in the same
    # commit as the rows, for a catalog table and for a folder (delta.`path`) alike, on Spark 3.5 and 4.x,
    # classic and Connect. DataFrameWriter.save has no such option, and ALTER TABLE would add a version.
    writer = df.writeTo(_sql_name(path, name)).using("delta").tableProperty("comment", description)
    writer.createOrReplace() if replace else writer.create()


def _document(spark: SparkSession, path: str | None, name: str, schema: T.StructType, existing: T.StructType,
              description: str, old: str | None) -> None:
    """Bring an appended table's description and column comments to *description* and *schema*'s (one
    commit per change; only a table written before they existed, or after they were reworded, has any)."""
    target = _sql_name(path, name)
    if old != description:
        spark.sql(f"ALTER TABLE {target} SET TBLPROPERTIES ('comment' = {sql_string(description)})")
    now = {f.name: f.metadata.get("comment") for f in existing.fields}
    for f in schema.fields:
        comment = f.metadata.get("comment")
        if comment and f.name in now and now[f.name] != comment:
            spark.sql(f"ALTER TABLE {target} ALTER COLUMN {quote(f.name)} COMMENT {sql_string(comment)}")


def save_table(df: DataFrame, table: str, where: Location, mode: str = "overwrite",
               description: str | None = None) -> str:
    """Every table seglib writes: Delta, overwrite with the schema replaced (the lab's mode) or append,
    at its path or as a catalog table. Returns the path or the qualified name.

    *description*: the table's (Delta's table description: DESCRIBE TABLE EXTENDED, Catalog Explorer,
    delta-rs); default seglib's for its own tables (seglib.comments.TABLES), none for an input. Column
    comments are the DataFrame's (seglib.comments.commented). Both are kept across overwrites, and a
    write is still one Delta commit: an overwrite that changes them replaces the table as a changed
    column does.

    Locally a handover table (HANDOVER_TABLES) is dropped and created anew instead (see below). Otherwise
    the table is only replaced when its columns (or comments, or description) changed. A catalog table
    with the same columns gets a plain Delta overwrite (DataFrameWriterV2, columns matched by name): one
    WRITE commit that keeps the table's properties. saveAsTable would run CREATE OR REPLACE TABLE AS
    SELECT and update the metastore: 2.3-2.9 s for 10 rows over local Spark Connect against 1.5 s."""
    if description is None:
        from .comments import table_description
        description = table_description(table)
    spark = df.sparkSession
    path = where.path(table)
    name = where.qualified(table)
    writer = df.write.format("delta").mode(mode)
    if mode == "overwrite" and table in HANDOVER_TABLES and not path and not is_managed_runtime():
        # A handover table is the next task's scratch: no reader needs its old version, so locally it is
        # dropped and created anew. Local Delta rebuilds a table's state from its log on every overwrite:
        # 0.5 s against 1.0 s for a 5-row table, 1.0 against 1.4 s for 1M rows (seglib bench machine).
        # In a workspace dropping needs ownership of the table where overwriting needs MODIFY: overwrite.
        # (*df* must not read *table* itself: it is gone before df is computed.)
        spark.sql(f"DROP TABLE IF EXISTS {name}")
        if description:
            _create(df, None, name, description, replace=False)
        else:
            writer.saveAsTable(name)
        return name
    existing = _existing(spark, path, name, description)
    if mode == "append" and description:
        if existing is None:
            _create(df, path, name, description, replace=False)
            return path or name
        _document(spark, path, name, df.schema, existing[0], description, existing[1])
    if mode == "overwrite":
        same = existing is not None and _columns(df.schema) == _columns(existing[0]) and existing[1] == description
        if same and not path:
            df.writeTo(name).overwrite(F.lit(True))
            return name
        if not same and description:
            _create(df, path, name, description, replace=True)
            return path or name
        writer = writer if same else writer.option("overwriteSchema", "true")
    if path:
        writer.save(path)
        return path
    writer.saveAsTable(name)
    return name


def ensure_schema(spark: SparkSession, tables: list[str], where: Location) -> None:
    """Create the schema when any of *tables* is a catalog table (inputs may come from elsewhere)."""
    if not all(where.path(name) for name in tables):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {where.schema_name}")


def write_tables(spark: SparkSession, frames: dict[str, DataFrame], where: Location, log=print) -> dict[str, int]:
    """Save each DataFrame as its table (creating the schema when any is a catalog table); returns the
    rows of each table as read back."""
    ensure_schema(spark, list(frames), where)
    counts = {}
    for name, df in frames.items():
        target = save_table(df, name, where)
        counts[name] = read_table(spark, name, where).count()
        log(f"  wrote {target}: {counts[name]:,} rows")
    return counts


# What Spark, Delta and the catalogs say when a table (or its schema or folder) does not exist.
_MISSING = ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND", "PATH_NOT_FOUND", "DELTA_MISSING_DELTA_TABLE",
            "not a delta table", "not found")


def is_missing_table(error: Exception) -> bool:
    return any(m.lower() in str(error).lower() for m in _MISSING)


def table_version(spark: SparkSession, table: str, where: Location) -> int | None:
    """The Delta version of *table* now, or None when it does not exist yet."""
    try:
        return int(spark.sql(f"DESCRIBE HISTORY {where.sql(table)} LIMIT 1").first()["version"])
    except Exception as e:  # noqa: BLE001 - only "does not exist" means None
        if is_missing_table(e):
            return None
        raise


def read_version(spark: SparkSession, table: str, version: int, where: Location) -> DataFrame:
    """*table* as it was at Delta *version* (time travel)."""
    return spark.sql(f"SELECT * FROM {where.sql(table)} VERSION AS OF {int(version)}")


def __getattr__(name: str):
    # The input tables' schemas live in the built-in recipe files (seglib.recipes); read on first use.
    if name in ("INPUT_SCHEMAS", "RETAIL_SCHEMAS"):
        from .recipes import builtin
        schemas = {t: spec.schema for r in builtin().values() for t, spec in r.tables.items()}
        return schemas if name == "INPUT_SCHEMAS" else {t: schemas[t] for t in RETAIL_INPUTS}
    raise AttributeError(name)
