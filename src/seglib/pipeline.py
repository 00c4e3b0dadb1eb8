"""The RFM segmentation as a declarative pipeline's datasets (pipelines/rfm: Lakeflow on Databricks,
``spark-pipelines`` locally).

The same rules as the retail recipe's notebooks (seglib.rfm): per-customer recency, frequency and
monetary value from the invoice lines, the R, F and M scores, the six rule segments and a summary per
segment. What differs is only how the scores are computed: a pipeline's query functions must stay lazy
(no job, no look at a DataFrame's columns while the graph is built), so the scores come from rank()
windows (rfm.rank_scores) instead of rfm_scores' cut points, with the same result.

The pipeline's settings are Spark confs of its ``configuration`` (seglib.source_table, seglib.rfm_bins,
seglib.as_of), read once by ``Settings.from_conf``. Every function here is a plain function over
DataFrames: the pipeline's source file only wires them to its datasets, and tests call them directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import comments as C
from . import rfm
from . import tables as TB
from .errors import ParameterError

CONF_PREFIX = "seglib."
SOURCE_TABLE = "seglib.source_table"
RFM_BINS = "seglib.rfm_bins"
AS_OF = "seglib.as_of"

# One row per check in rfm_quality_checks: a pipeline fails none of its datasets for bad data, so the checks
# are data a job, an alert or `seglib pipeline run` reads (failing > 0 is a failed check).
CHECKS = {
    "customers_found": "gold_rfm_segments has at least one customer (failing: 1 when it has none)",
    "one_row_per_customer": "each customer_id once in gold_rfm_segments (failing: rows beyond the first)",
    "segment_assigned": "every customer has one of the six rule segments (failing: customers without)",
    "scores_in_range": "r_score, f_score and m_score within 1..rfm_bins (failing: customers outside)",
    "summary_adds_up": "gold_rfm_segment_summary's customer_count sums to the customers (failing: the difference)",
}
QUALITY_COLUMNS = ("check", "failing", "passed", "expectation")

@dataclass(frozen=True)
class Settings:
    """What a run segments: the invoice lines' table (a name in the pipeline's schema, or qualified), the
    score levels (4 or 5) and the reference day (None: the day after the last transaction)."""
    source_table: str = TB.RETAIL_TRANSACTIONS
    rfm_bins: int = 4
    as_of: date | None = None

    def __post_init__(self):
        parts = str(self.source_table or "").split(".")
        if not 1 <= len(parts) <= 3:
            raise ParameterError(f"{SOURCE_TABLE} must be a table name, schema.table or catalog.schema.table, "
                                 f"got {self.source_table!r}")
        for part in parts:
            TB.check_identifier(part, SOURCE_TABLE)
        object.__setattr__(self, "rfm_bins", rfm.parse_rfm_bins(self.rfm_bins, RFM_BINS))
        object.__setattr__(self, "as_of", rfm.parse_as_of(self.as_of, AS_OF))

    @classmethod
    def from_conf(cls, conf) -> Settings:
        """From a Spark session's conf (``spark.conf``): what the pipeline's configuration sets."""
        return cls(source_table=conf.get(SOURCE_TABLE, TB.RETAIL_TRANSACTIONS) or TB.RETAIL_TRANSACTIONS,
                   rfm_bins=conf.get(RFM_BINS, "4") or "4", as_of=conf.get(AS_OF, "") or None)

    def conf(self) -> dict[str, str]:
        """The pipeline configuration that gives these settings back."""
        return {SOURCE_TABLE: self.source_table, RFM_BINS: str(self.rfm_bins),
                AS_OF: self.as_of.isoformat() if self.as_of else ""}


def commented(df: DataFrame, table: str) -> DataFrame:
    """*df* as the pipeline's *table*: its columns in order, each with its comment (seglib.comments), which
    Delta keeps in the table's schema. The columns are named, not read from df: no analysis."""
    comments = C.PIPELINE_COLUMNS[table]
    return C.commented(df, comments, columns=list(comments))


def customer_values(transactions: DataFrame, settings: Settings) -> DataFrame:
    """One row per customer: customer_id, recency_days, frequency, monetary, first_purchase, last_purchase."""
    return rfm.customer_rfm_lazy(transactions, settings.as_of)


def customer_segments(values: DataFrame, settings: Settings) -> DataFrame:
    """customer_values with r_score, f_score, m_score and rfm_segment (tables.RETAIL_RFM_COLUMNS)."""
    scored = rfm.rank_scores(values, settings.rfm_bins)
    return scored.withColumn("rfm_segment", rfm.rfm_segment_column(settings.rfm_bins)).select(*TB.RETAIL_RFM_COLUMNS)


def segment_summary(segments: DataFrame) -> DataFrame:
    """One row per rule segment present: segment (its place in rfm.RFM_SEGMENTS), segment_name, the
    customers, mean recency, frequency and monetary value, total revenue (as the notebooks' summary)."""
    return rfm.rule_summary(segments).select(*TB.RFM_PIPELINE_SUMMARY_COLUMNS)


def quality_checks(segments: DataFrame, summary: DataFrame, settings: Settings) -> DataFrame:
    """CHECKS over the pipeline's outputs, one row each: check, failing, passed, expectation."""
    in_range = F.lit(True)
    for score in rfm.SCORE_COLUMNS:
        in_range = in_range & F.coalesce(F.col(score).between(1, settings.rfm_bins), F.lit(False))
    found = segments.agg(
        F.count("*").alias("rows"),
        F.count_distinct("customer_id").alias("customers"),
        F.count_if(F.col("rfm_segment").isNull()).alias("unassigned"),
        F.count_if(~in_range).alias("out_of_range"))
    summed = summary.agg(F.coalesce(F.sum("customer_count"), F.lit(0)).alias("summed"))
    failing = {
        "customers_found": F.when(F.col("rows") == 0, 1).otherwise(0),
        "one_row_per_customer": F.col("rows") - F.col("customers"),
        "segment_assigned": F.col("unassigned"),
        "scores_in_range": F.col("out_of_range"),
        "summary_adds_up": F.abs(F.col("summed") - F.col("rows")),
    }
    rows = F.array(*[F.struct(F.lit(name).alias("check"), failing[name].cast("long").alias("failing"),
                              F.lit(expectation).alias("expectation"))
                     for name, expectation in CHECKS.items()])
    return (found.crossJoin(summed).select(F.inline(rows))
            .withColumn("passed", F.col("failing") == 0)
            .select(*QUALITY_COLUMNS))
