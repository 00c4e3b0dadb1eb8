"""The retail recipe end to end: `seglib demo --recipe retail` (demo data, the six notebooks through
papermill, report.html, an MLflow run and the registry's champion), then its tables read back with delta-rs and recomputed with
pandas, independently of Spark and seglib's own code."""
import json

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from seglib import rfm
from seglib import tables as TB
from seglib.recipes import RETAIL

from conftest import seglib_cli

pytestmark = pytest.mark.e2e

CUSTOMERS = 800
CURRENCY = "GBP"  # Online Retail II's
PIPELINE = ["01_load", "02_features", "03_cluster", "04_profile", "05_write", "06_insights"]


@pytest.fixture(scope="module")
def run(published, published_spark, tmp_path_factory):
    """`seglib demo --recipe retail` in schema shop of the published lakehouse, on its shared Spark server
    (warm by now: a JVM start and its first slow queries saved)."""
    lakehouse, out = published[0], tmp_path_factory.mktemp("retail") / "runs"
    env = published_spark["env"]
    proc = seglib_cli("demo", "--recipe", "retail", "--lakehouse", str(lakehouse), "--schema", "shop",
                      "--customers", str(CUSTOMERS), "--seed", "5", "--output", str(out),
                      "--param", "n_init=2", "--param", "stability_runs=1", "--param", f"currency={CURRENCY}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lakehouse, out, proc


def table(lakehouse, name):
    return DeltaTable(str(lakehouse / "warehouse" / "shop.db" / name)).to_pandas()


def test_every_notebook_ran(run):
    _, out, proc = run
    for i, name in enumerate(PIPELINE, 1):
        assert f"[{i}/{len(PIPELINE)}] {name} ... ok" in proc.stdout
    # 05 shows the clusters beside the rule segments (the cross-tab query)
    assert "segment x RFM segment" in (out / "05_write.ipynb").read_text()


def test_rfm_matches_a_pandas_recomputation(run):
    lakehouse, _, _ = run
    lines = table(lakehouse, TB.RETAIL_TRANSACTIONS)
    gold = table(lakehouse, TB.GOLD_SEGMENTS).set_index("customer_id").sort_index()
    assert list(table(lakehouse, TB.GOLD_SEGMENTS).columns) == (
        TB.RETAIL_RFM_COLUMNS + list(RETAIL.attributes) + TB.GOLD_SEGMENT_COLUMNS)
    day = pd.to_datetime(lines.invoice_ts).dt.normalize()
    as_of = day.max() + pd.Timedelta(days=1)
    known = lines[lines.customer_id.notna()].assign(day=day)
    cancel = known.invoice_id.str.startswith("C") | (known.quantity < 0)
    purchases = known[~cancel]
    expected = pd.DataFrame({
        "frequency": purchases.groupby("customer_id").invoice_id.nunique(),
        "recency_days": (as_of - purchases.groupby("customer_id").day.max()).dt.days,
        "monetary": (known.quantity * known.unit_price).groupby(known.customer_id).sum().round(2),
    }).dropna(subset=["frequency"])
    expected.index = expected.index.astype("int64")
    assert gold.index.is_unique and set(expected.index) <= set(gold.index)
    got = gold.loc[expected.index]
    assert (got.frequency == expected.frequency).all()
    assert (got.recency_days == expected.recency_days).all()
    assert np.allclose(got.monetary, expected.monetary, atol=0.011)


def test_rule_segments_follow_the_scores_and_clusters_are_named(run):
    lakehouse, _, _ = run
    gold = table(lakehouse, TB.GOLD_SEGMENTS)
    for col in ("r_score", "f_score", "m_score"):
        assert gold[col].between(1, 4).all() and gold[col].nunique() > 1, col
    expected = [rfm.rule_segment(r.r_score, r.f_score, r.m_score, r.frequency == 1, 4) for r in gold.itertuples()]
    assert gold.rfm_segment.tolist() == expected
    assert len(set(gold.rfm_segment)) >= 4
    names = {name for name, _ in RETAIL.signatures}
    assert set(gold.segment_name) == names and gold.segment.nunique() == 5  # k=5: each signature once
    # Champions sit in the clusters of the best customers, not spread over all of them.
    champions = gold[gold.rfm_segment == rfm.CHAMPIONS].segment_name.value_counts(normalize=True)
    assert champions.index[0] in ("Top Spenders", "Steady Buyers") and champions.iloc[0] > 0.5


def test_summary_has_a_row_per_cluster_and_per_rule_segment(run):
    lakehouse, _, _ = run
    gold, summary = table(lakehouse, TB.GOLD_SEGMENTS), table(lakehouse, TB.GOLD_SUMMARY)
    assert list(summary.columns) == TB.RETAIL_SUMMARY_COLUMNS
    for grouping, column in (("cluster", "segment_name"), ("rfm_segment", "rfm_segment")):
        part = summary[summary.grouping == grouping].set_index("segment_name")
        counts = gold[column].value_counts()
        assert part.customer_count.to_dict() == counts.to_dict(), grouping
        revenue = gold.groupby(column).monetary.sum().round(2)
        assert np.allclose(part.total_revenue.sort_index(), revenue.sort_index(), atol=0.02)
    assert set(summary.run_id) == set(gold.run_id) and len(set(gold.run_id)) == 1


def test_report_holds_the_charts_offline(run):
    _, out, _ = run
    html = (out / "report.html").read_text()
    assert html.count("Plotly.newPlot") >= 5  # one per chart, drawn by the plotly.js embedded once
    assert "<script src=" not in html          # nothing fetched from a CDN
    for title in ("Segment sizes and revenue share", "Average CLV per customer", "Who they are"):
        assert title in html
    assert "Top Spenders" in html and "Champions" in html


def test_report_reads_right_in_a_browser(run):
    """report.html in headless Chromium, offline: every chart drew (the RFM grid among them), no raw value on
    screen, the summary's figures are the gold tables', amounts in the run's currency."""
    from report_browser import check_report, read_report
    lakehouse, out, _ = run
    gold, summary = table(lakehouse, TB.GOLD_SEGMENTS), table(lakehouse, TB.GOLD_SUMMARY)
    clusters = summary[summary.grouping == "cluster"]
    page = read_report(out / "report.html")
    try:
        check_report(page, gold, RETAIL.insights["revenue"], dict(zip(clusters.segment_name, clusters.customer_count)),
                     currency=CURRENCY)
        assert any(c["title"].startswith("RFM scores") for c in page.charts)
        assert f"{CURRENCY} " in page.text.split("Segments")[0]  # the revenue headline
    finally:
        page.driver.quit()
    assert (out / "report.html").stat().st_size < 6_000_000


def test_the_fit_is_an_mlflow_run(run):
    lakehouse, _, _ = run
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{lakehouse}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="params.recipe = 'retail'")  # other runs used this lakehouse
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.params["recipe"] == "retail" and logged.params["k"] == "5"
    log = table(lakehouse, TB.GOLD_RUNS).iloc[-1]
    assert logged.metrics["silhouette"] == pytest.approx(log.silhouette)
    assert logged.metrics["k"] == log.k == 5
    shares = {int(k.split(".")[1]): v for k, v in logged.metrics.items() if k.startswith("segment_share.")}
    gold = table(lakehouse, TB.GOLD_SEGMENTS)  # every customer is in the fit sample of this fixture
    assert shares == pytest.approx((gold.segment.value_counts() / len(gold)).to_dict(), abs=1e-12)
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "model")}
    assert "model/model.json" in artifacts
    model = json.loads(open(client.download_artifacts(runs[0].info.run_id, "model/model.json")).read())
    assert model["features"] == list(RETAIL.features)
    # The fit registered its model, and the write step made it the champion once it had published.
    champion = client.get_model_version_by_alias("seglib_segmentation_shop", "champion")
    assert champion.run_id == runs[0].info.run_id and champion.tags["seglib.recipe"] == "retail"
    assert champion.tags["seglib.run_id"] == champion.tags["seglib.published_run_id"] == log.run_id
