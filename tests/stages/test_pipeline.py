"""The RFM pipeline's datasets (seglib.pipeline) on real Spark: the same customers, scores and segments as
the notebooks' retail recipe (features.build_retail_features), a summary that adds up, quality checks that
catch what they name."""
from datetime import date

import pytest
from pyspark.sql import functions as F

from seglib import comments as C
from seglib import pipeline as P
from seglib import tables as TB
from seglib.features import build_retail_features
from seglib.retail_generate import retail_tables
from seglib.rfm import RFM_SEGMENTS


@pytest.fixture(scope="module")
def lines(spark):
    return retail_tables(spark, customers=400, seed=3)[TB.RETAIL_TRANSACTIONS].cache()


def _by_customer(rows, key):
    return {r[key]: tuple(r[c] for c in TB.RETAIL_RFM_COLUMNS[1:]) for r in rows}


@pytest.mark.parametrize("bins,as_of", [(4, None), (5, None), (4, date(2024, 6, 30))])
def test_segments_equal_the_notebooks_retail_recipe(lines, bins, as_of):
    settings = P.Settings(rfm_bins=bins, as_of=as_of)
    segments = P.customer_segments(P.customer_values(lines, settings), settings)
    assert segments.columns == TB.RETAIL_RFM_COLUMNS
    notebooks, _ = build_retail_features(lines, as_of=as_of, rfm_bins=bins)
    expected = _by_customer(notebooks.collect(), "customer_key")
    got = _by_customer(segments.collect(), "customer_id")
    assert len(got) == len(expected) > 300
    assert got == expected
    assert {v[-1] for v in got.values()} >= {"Champions", "Churned"}


def test_summary_adds_up_per_rule_segment(lines):
    settings = P.Settings()
    segments = P.customer_segments(P.customer_values(lines, settings), settings).cache()
    summary = {r.segment_name: r for r in P.segment_summary(segments).collect()}
    assert P.segment_summary(segments).columns == TB.RFM_PIPELINE_SUMMARY_COLUMNS
    for row in segments.groupBy("rfm_segment").agg(F.count("*").alias("n"), F.sum("monetary").alias("revenue"),
                                                   F.avg("recency_days").alias("recency")).collect():
        s = summary[row.rfm_segment]
        assert s.customer_count == row.n
        assert s.total_revenue == pytest.approx(row.revenue, abs=0.01)
        assert s.avg_recency_days == pytest.approx(row.recency, abs=0.05)
    assert {n: s.segment for n, s in summary.items()} == {n: RFM_SEGMENTS.index(n) for n in summary}


def _checks(segments, summary, bins=4):
    return {r.check: (r.failing, r.passed) for r in P.quality_checks(segments, summary, P.Settings(rfm_bins=bins)).collect()}


def test_quality_checks_pass_on_the_pipelines_outputs_and_catch_each_fault(spark, lines):
    settings = P.Settings()
    segments = P.customer_segments(P.customer_values(lines, settings), settings).cache()
    summary = P.segment_summary(segments).cache()
    assert _checks(segments, summary) == {name: (0, True) for name in P.CHECKS}
    one = segments.limit(1)
    broken = {
        "one_row_per_customer": (segments.unionByName(one), summary),
        "segment_assigned": (segments.withColumn("rfm_segment", F.when(F.col("r_score") == 1, None)
                                                 .otherwise(F.col("rfm_segment"))), summary),
        "scores_in_range": (segments.withColumn("m_score", F.col("m_score") + 1), summary),
        "summary_adds_up": (segments, summary.where("segment_name != 'Champions'")),
        "customers_found": (segments.limit(0), summary.limit(0)),
    }
    for check, (seg, summ) in broken.items():
        found = _checks(seg, summ)
        assert found[check][0] > 0 and found[check][1] is False, (check, found)
    assert _checks(segments.unionByName(one), summary)["summary_adds_up"][0] == 1


def test_commented_columns_carry_their_comment_and_order(lines):
    settings = P.Settings()
    segments = P.commented(P.customer_segments(P.customer_values(lines, settings), settings)
                           .select(*reversed(TB.RETAIL_RFM_COLUMNS)), TB.GOLD_RFM_SEGMENTS)
    assert segments.columns == TB.RETAIL_RFM_COLUMNS
    comments = {f.name: f.metadata.get("comment") for f in segments.schema.fields}
    assert comments == C.PIPELINE_COLUMNS[TB.GOLD_RFM_SEGMENTS]
