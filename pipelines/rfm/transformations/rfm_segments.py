# The RFM segmentation as a declarative pipeline: the retail recipe's rules (seglib.rfm) over an invoice
# lines table, written as three materialized views in the pipeline's schema. Lakeflow runs this file on
# Databricks (resources/rfm.pipeline.yml); `seglib pipeline run` runs it locally with spark-pipelines.
# Settings come from the pipeline's configuration: seglib.source_table (default retail_transactions),
# seglib.rfm_bins (4 or 5), seglib.as_of (YYYY-MM-DD; empty: the day after the last transaction).
#
# The steps are temporary views and every materialized view reads views only, never another of the
# pipeline's tables: Spark 4.1.1 orders a flow that reads an existing materialized view without waiting
# for it (apache/spark#57897), so from the second run on the segments read the values mid-refresh.
from pyspark import pipelines as dp
from pyspark.sql import SparkSession

from seglib import comments as C, pipeline as P, tables as TB

spark = SparkSession.active()
settings = P.Settings.from_conf(spark.conf)


@dp.temporary_view(name="customer_rfm_values")
def customer_rfm_values():
    return P.customer_values(spark.read.table(settings.source_table), settings)


@dp.temporary_view(name="customer_rfm_segments")
def customer_rfm_segments():
    return P.customer_segments(spark.read.table("customer_rfm_values"), settings)


@dp.temporary_view(name="rfm_segment_counts")
def rfm_segment_counts():
    return P.segment_summary(spark.read.table("customer_rfm_segments"))


@dp.materialized_view(name=TB.GOLD_RFM_SEGMENTS, comment=C.TABLES[TB.GOLD_RFM_SEGMENTS])
def gold_rfm_segments():
    return P.commented(spark.read.table("customer_rfm_segments"), TB.GOLD_RFM_SEGMENTS)


@dp.materialized_view(name=TB.GOLD_RFM_SUMMARY, comment=C.TABLES[TB.GOLD_RFM_SUMMARY])
def gold_rfm_segment_summary():
    return P.commented(spark.read.table("rfm_segment_counts"), TB.GOLD_RFM_SUMMARY)


@dp.materialized_view(name=TB.RFM_QUALITY_CHECKS, comment=C.TABLES[TB.RFM_QUALITY_CHECKS])
def rfm_quality_checks():
    checks = P.quality_checks(spark.read.table("customer_rfm_segments"), spark.read.table("rfm_segment_counts"),
                              settings)
    return P.commented(checks, TB.RFM_QUALITY_CHECKS)
