"""Business insights (seglib.insights) on small hand-built gold tables of both recipes, and report.html."""
import re
from pathlib import Path

import nbformat
import pytest

from seglib.errors import InputContractError, ParameterError
from seglib import recipes as R
from seglib.insights import (DEFAULT_ACTION, Action, customer_values, insights, match_action,
                             roi_scenarios, use_offline_renderer)
from seglib.params import PARAMS
from seglib.rfm import RFM_SEGMENTS

ROOT = Path(__file__).resolve().parents[2]
AIRLINE_PLAYBOOK = R.get("airline").playbook

AIRLINE_SCHEMA = ("customer_key int, gender string, age int, loyalty_tier int, province string, total_flights int, "
                  "total_km_flown int, total_loyalty_points int, days_since_last_flight int, total_spent double, "
                  "transaction_count long, customer_status string, segment int, segment_name string, run_id string")
# (key, tier, flights, points, days since last flight, spent, transactions, status, segment, name)
AIRLINE_ROWS = [
    (1, 3, 40, 9000, 5, 1000.0, 10, "Active", 0, "Premium Elite Members"),
    (2, 3, 30, 7000, 10, 800.0, 8, "Active", 0, "Premium Elite Members"),
    (3, 2, 20, 3000, 20, 900.0, 5, "Active", 1, "Loyal Frequent Flyers"),
    (4, 2, 15, 2500, 30, 700.0, 4, "Active", 1, "Loyal Frequent Flyers"),
    (5, 1, 10, 2000, 100, 600.0, 2, "At Risk", 1, "Loyal Frequent Flyers"),
    (6, 1, 2, 300, 200, 50.0, 1, "Inactive", 2, "Mystery Cluster"),
    (7, 1, 2, 200, 60, 50.0, 1, "Active", 2, "Mystery Cluster"),
    (8, 1, 1, 100, 400, 0.0, 0, "Inactive", 3, "At-Risk Customers"),
    (9, 2, 1, 100, 500, None, None, "Inactive", 3, "At-Risk Customers"),  # no transactions at all
    (10, 1, 3, 150, 150, 20.0, 1, "At Risk", 3, "At-Risk Customers"),
]

RETAIL_SCHEMA = ("customer_id long, recency_days int, frequency long, monetary double, first_purchase date, "
                 "last_purchase date, r_score int, f_score int, m_score int, rfm_segment string, segment int, "
                 "segment_name string, run_id string")
# (id, recency, frequency, monetary, r, f, m, rfm segment, cluster, cluster name)
RETAIL_ROWS = [
    (1, 3, 20, 2000.0, 5, 5, 5, "Champions", 0, "Top Spenders"),
    (2, 5, 12, 1200.0, 5, 4, 5, "Champions", 0, "Top Spenders"),
    (3, 40, 8, 640.0, 4, 4, 4, "Loyal", 0, "Top Spenders"),
    (4, 2, 1, 100.0, 5, 1, 2, "New Customers", 1, "Recent First-Timers"),
    (5, 1, 1, 100.0, 5, 1, 2, "New Customers", 1, "Recent First-Timers"),
    (6, 600, 1, 30.0, 1, 1, 1, "Churned", 2, "Lapsed One-Timers"),
    (7, 300, 3, -15.0, 2, 3, 1, "At Risk", 2, "Lapsed One-Timers"),  # returns exceed purchases
]
ASSUME = {"gross_margin": 0.4, "retention_rate": 0.5, "observation_years": 2.0}  # lifetime 2 y


@pytest.fixture(scope="module")
def airline(spark):
    rows = [(k, "F", 40, t, "ON", fl, fl * 1000, pts, d, s, tx, st, seg, name, "run-7")
            for k, t, fl, pts, d, s, tx, st, seg, name in AIRLINE_ROWS]
    return spark.createDataFrame(rows, AIRLINE_SCHEMA)


@pytest.fixture(scope="module")
def retail(spark):
    import datetime as dt
    end = dt.date(2011, 12, 10)
    rows = [(i, rec, f, m, end - dt.timedelta(days=rec + 30 * (f > 1)), end - dt.timedelta(days=rec), r, fs, ms, rfm,
             seg, name, "run-r") for i, rec, f, m, r, fs, ms, rfm, seg, name in RETAIL_ROWS]
    return spark.createDataFrame(rows, RETAIL_SCHEMA)


@pytest.fixture(scope="module")
def air(airline):
    return insights(airline, "airline", **ASSUME)


@pytest.fixture(scope="module")
def ret(retail):
    return insights(retail, "retail", **ASSUME)


def by_name(table):
    return table.set_index("segment_name")


def test_distribution_counts_and_shares(air, ret):
    d = air.distribution
    assert d.segment_name.tolist() == ["Premium Elite Members", "Loyal Frequent Flyers", "Mystery Cluster",
                                       "At-Risk Customers"]
    assert d.customers.tolist() == [2, 3, 2, 3] and d.share.tolist() == pytest.approx([0.2, 0.3, 0.2, 0.3])
    assert ret.distribution.customers.tolist() == [3, 2, 2]
    assert air.run_id == "run-7" and ret.run_id == "run-r"


def test_revenue_and_concentration_by_hand(air, ret):
    # airline revenues: 1000 800 | 900 700 600 | 50 50 | 0 null(=0) 20 -> 4120
    rev = by_name(air.revenue)
    assert rev.revenue.tolist() == pytest.approx([1800, 2200, 100, 20])
    c = air.concentration
    assert c["total_revenue"] == pytest.approx(4120)
    assert c["top_segment"] == "Loyal Frequent Flyers" and c["top_segment_revenue_share"] == pytest.approx(2200 / 4120)
    assert c["top_customers"] == 2 and c["top_customers_revenue_share"] == pytest.approx((1000 + 900) / 4120)
    # retail: 7 customers -> the top 7 - ceil(0.8 * 7) = 1 customer (2000) of 2000+1200+640+100+100+30-15 = 4055
    assert ret.concentration["top_customers"] == 1
    assert ret.concentration["top_customers_revenue_share"] == pytest.approx(2000 / 4055)
    assert ret.concentration["top_segment"] == "Top Spenders"


def test_top_customers_share_with_ties_at_the_cut(spark):
    # 10 customers: four at 5, six at 1; the top 2 are two of the 5s: 10 of 26, although four tie at the cut
    rows = [(i, 1, 1, float(v), 1, 1, 1, "Regular", 0, "Any") for i, v in enumerate([5, 5, 5, 5, 1, 1, 1, 1, 1, 1])]
    df = spark.createDataFrame([(i, r, f, m, None, None, a, b, c, s, g, n, "x") for i, r, f, m, a, b, c, s, g, n in rows],
                               RETAIL_SCHEMA)
    c = insights(df, "retail", **ASSUME).concentration
    assert c["top_customers"] == 2 and c["revenue_cut"] == 5.0
    assert c["top_customers_revenue_share"] == pytest.approx(10 / 26)


def test_performance_tables(air, ret):
    p = by_name(air.performance)
    assert p.loc["Loyal Frequent Flyers", "avg_order_value"] == pytest.approx(2200 / 11)
    assert p.loc["Loyal Frequent Flyers", "avg_flights"] == pytest.approx(15)
    assert p.loc["Premium Elite Members", "avg_points"] == pytest.approx(8000)
    assert p.loc["At-Risk Customers", "avg_days_since_last_flight"] == pytest.approx(350)
    assert p.loc["At-Risk Customers", "avg_spend"] == pytest.approx(20 / 3)
    r = by_name(ret.performance)
    assert r.loc["Top Spenders", "avg_order_value"] == pytest.approx(3840 / 40)
    assert r.loc["Top Spenders", "avg_frequency"] == pytest.approx(40 / 3)
    assert r.loc["Lapsed One-Timers", "avg_recency_days"] == pytest.approx(450)


def test_clv_formula_by_hand(air, ret):
    # CLV = revenue/orders x orders/2 y x margin 0.4 x lifetime 1/(1-0.5) = 2 y
    clv = by_name(air.clv)
    assert clv.loc["Premium Elite Members", "avg_clv"] == pytest.approx((100 * 5 * 0.8 + 100 * 4 * 0.8) / 2)
    assert clv.loc["Mystery Cluster", "avg_clv"] == pytest.approx(50 * 0.5 * 0.8)
    assert clv.loc["At-Risk Customers", "avg_clv"] == pytest.approx((0 + 0 + 20 * 0.5 * 0.8) / 3)  # no orders: 0
    r = by_name(ret.clv)
    assert r.loc["Lapsed One-Timers", "avg_clv"] == pytest.approx((30 * 0.5 * 0.8 + 0) / 2)  # net negative: 0
    assert air.assumptions["expected_lifetime_years"] == pytest.approx(2)
    assert "1/(1 − retention 0.5)" in air.formula and "gross margin 0.4" in air.formula and "/ 2 y" in air.formula


@pytest.mark.parametrize("assume", [ASSUME, {"gross_margin": 0.05, "retention_rate": 0.95, "observation_years": 0.5},
                                    {"gross_margin": 0.9, "retention_rate": 0.1, "observation_years": 3.0}])
def test_a_one_purchase_customer_never_outranks_a_champion_with_the_same_order_value(spark, assume):
    # Pairs with the same order value: a one-time buyer who bought yesterday (the tenure-based formula's
    # favourite) against a Champion with f purchases over a long tenure.
    import datetime as dt
    end, rows, i = dt.date(2011, 12, 10), [], 0
    for aov in (0.5, 37.5, 250.0, 9999.0):
        for f in (2, 3, 12, 400):
            rows.append((i, 1, 1, aov, end - dt.timedelta(days=1), end - dt.timedelta(days=1), 5, 1, 3,
                         "New Customers", 1, "one-time", "x"))
            rows.append((i + 1, 30, f, aov * f, end - dt.timedelta(days=700), end - dt.timedelta(days=30), 5, 5, 5,
                         "Champions", 0, "champion", "x"))
            i += 2
    gold = spark.createDataFrame(rows, RETAIL_SCHEMA)
    values = customer_values(gold, "retail", **assume).select("customer", "revenue", "orders", "clv")
    got = sorted(values.collect())
    pairs = list(zip(got[0::2], got[1::2]))
    assert len(pairs) == 16
    for once, champ in pairs:
        assert once.orders == 1 and champ.orders >= 2
        assert once.revenue / once.orders == pytest.approx(champ.revenue / champ.orders)  # same order value
        assert champ.clv > once.clv > 0


def test_roi_rows_are_the_segments_present_keyed_by_name(air):
    roi = air.roi
    assert roi.segment_name.tolist() == air.distribution.segment_name.tolist()  # exactly those, once each
    row = by_name(roi)
    assert row.loc["Premium Elite Members", "playbook_key"] == "Premium Elite Members"
    assert row.loc["Premium Elite Members", "action"] == AIRLINE_PLAYBOOK["Premium Elite Members"].action
    assert row.loc["Mystery Cluster", "playbook_key"] is None  # unknown name: the labelled default, not dropped
    assert row.loc["Mystery Cluster", "action"] == DEFAULT_ACTION.action and "default" in DEFAULT_ACTION.action
    # With a playbook of our own: yearly revenue = revenue / 2 y; incremental = uplift x that; cost = n x cost each
    own = {"premium elite members": Action("VIP", 10.0, 0.1), "At-Risk Customers": Action("win back", 5.0, 0.5)}
    mine = by_name(roi_scenarios(air.revenue, own, ASSUME["observation_years"]))  # the per-segment revenue
    assert mine.loc["Premium Elite Members", "expected_incremental_revenue"] == pytest.approx(0.1 * 1800 / 2)
    assert mine.loc["Premium Elite Members", "cost"] == pytest.approx(20)
    assert mine.loc["Premium Elite Members", "roi"] == pytest.approx((90 - 20) / 20)
    assert mine.loc["At-Risk Customers", "roi"] == pytest.approx((0.5 * 10 - 15) / 15)
    assert mine.loc["Loyal Frequent Flyers", "playbook_key"] is None  # not in this playbook
    assert mine.loc["Loyal Frequent Flyers", "cost"] == pytest.approx(3 * DEFAULT_ACTION.cost_per_customer)


def test_action_matching_by_name():
    retail = R.get("retail").playbook
    assert match_action("Occasional Travelers (more flights)", AIRLINE_PLAYBOOK)[0] == "Occasional Travelers"
    assert match_action("Loyal Frequent Flyers #2", AIRLINE_PLAYBOOK)[0] == "Loyal Frequent Flyers"
    assert match_action("Members (younger, fewer points)", AIRLINE_PLAYBOOK)[0] == "Members"
    assert match_action("at risk", retail)[0] == "At Risk"
    assert match_action("At-Risk Customers", AIRLINE_PLAYBOOK)[0] == "At-Risk Customers"
    assert match_action("Unsegmented (incomplete data)", AIRLINE_PLAYBOOK) == (None, DEFAULT_ACTION)
    assert match_action(None, AIRLINE_PLAYBOOK) == (None, DEFAULT_ACTION)
    with pytest.raises(ParameterError, match="cost_per_customer must be > 0"):
        Action("free", 0.0, 0.1)


def test_every_recipe_segment_name_has_an_action_in_its_recipe_file():
    for recipe in (R.get(name) for name in R.BUILT_IN):
        names = [n for n, _ in recipe.signatures] + ([recipe.unmatched] if recipe.max_distance else [])
        for name in names:
            assert match_action(name, recipe.playbook)[0] == name, (recipe.name, name)
    for name in RFM_SEGMENTS:
        assert match_action(name, R.get("retail").playbook)[0] == name


def test_the_playbook_is_read_from_the_recipe_file(tmp_path):
    mine = tmp_path / "mine.yml"
    mine.write_text("extends: airline\nplaybook:\n  New Joiners: {action: Welcome call, cost_per_customer: 1.5, uplift: 0.2}\n")
    playbook = R.get(str(mine)).playbook
    assert playbook["New Joiners"] == Action("Welcome call", 1.5, 0.2)
    assert playbook["Premium Elite Members"] == AIRLINE_PLAYBOOK["Premium Elite Members"]  # merged key by key
    free = tmp_path / "free.yml"
    free.write_text("extends: airline\nplaybook:\n  New Joiners: {action: Free, cost_per_customer: 0, uplift: 0.2}\n")
    with pytest.raises(R.RecipeError, match=r"free.yml: key playbook.New Joiners: expected .*cost_per_customer must be > 0"):
        R.get(str(free))
    typo = tmp_path / "typo.yml"
    typo.write_text("extends: airline\nplaybook:\n  New Joiners: {action: Call, cost_per_customer: 1, uplift: 0.2, upflit: 1}\n")
    with pytest.raises(R.RecipeError, match=r"typo.yml: key playbook.New Joiners.upflit is unknown"):
        R.get(str(typo))


def test_recipe_extras(air, ret):
    tier = air.extras["segment_by_loyalty_tier"]
    assert tier.loc["Loyal Frequent Flyers"].to_dict() == {"tier 1": 1, "tier 2": 2, "tier 3": 0}
    status = air.extras["customer_status_by_segment"]
    assert list(status.columns) == ["Active", "At Risk", "Inactive"]
    assert status.loc["At-Risk Customers"].tolist() == [0, 1, 2]
    cross = ret.extras["cluster_by_rfm_segment"]
    assert list(cross.index) == ["Top Spenders", "Recent First-Timers", "Lapsed One-Timers"]
    assert list(cross.columns) == ["Champions", "Loyal", "New Customers", "At Risk", "Churned"]
    assert cross.loc["Top Spenders"].tolist() == [2, 1, 0, 0, 0] and cross.to_numpy().sum() == 7
    grid = ret.extras["rfm_score_grid"]
    assert list(grid.index) == [5, 4, 2, 1] and list(grid.columns) == [1, 3, 4, 5]
    assert grid.loc[5].tolist() == [2, 0, 1, 1] and grid.loc[1, 1] == 1


def test_figures_carry_the_tables(air, ret):
    assert set(air.figures) == {"shares", "distribution", "revenue", "clv", "roi", "segment_by_loyalty_tier",
                                "customer_status_by_segment"}
    bars = air.figures["distribution"].data
    assert len(bars) == 1 and bars[0].type == "bar" and list(bars[0].y) == [2, 3, 2, 3]
    assert list(bars[0].x) == air.distribution.segment_name.tolist()
    # One colour per segment, the same in every per-segment chart, and each segment its own.
    colors = list(bars[0].marker.color)
    assert len(set(colors)) == 4
    for name in ("revenue", "clv", "roi"):
        assert list(air.figures[name].data[0].marker.color) == colors, name
    sizes, revenue = air.figures["shares"].data
    assert list(sizes.y) == list(bars[0].x) and list(sizes.marker.color) == colors == list(revenue.marker.color)
    assert list(sizes.x) == pytest.approx([0.2, 0.3, 0.2, 0.3]) and sum(revenue.x) == pytest.approx(1.0)
    assert "gross margin 0.4" in air.figures["clv"].layout.title.text
    assert list(air.figures["roi"].data[0].y) == pytest.approx(air.roi.roi.tolist())
    assert [t.name for t in air.figures["segment_by_loyalty_tier"].data] == ["tier 1", "tier 2", "tier 3"]
    heat = ret.figures["cluster_by_rfm_segment"].data
    assert len(heat) == 1 and heat[0].type == "heatmap"
    assert heat[0].z.tolist() == ret.extras["cluster_by_rfm_segment"].to_numpy().tolist()
    assert ret.figures["rfm_score_grid"].data[0].z.tolist() == ret.extras["rfm_score_grid"].to_numpy().tolist()


def test_bad_input_and_assumptions_name_the_problem(airline):
    with pytest.raises(InputContractError, match=r"lacks column\(s\) customer_id, monetary, frequency, recency_days, r_score"):
        insights(airline, "retail")
    with pytest.raises(ParameterError, match="recipe must be one of airline, retail"):
        insights(airline, "hotel")
    with pytest.raises(ParameterError, match="retention_rate must be a number strictly between 0 and 1"):
        insights(airline, "airline", retention_rate=1.0)
    with pytest.raises(InputContractError, match="no customers"):
        insights(airline.limit(0), "airline")


@pytest.mark.parametrize("name,good,bad", [("gross_margin", "0.35", ["0", "1", "1.5", "x", "nan"]),
                                           ("retention_rate", "0.6", ["0", "1", "-0.1"]),
                                           ("observation_years", "2", ["0", "-1", "inf", "two"])])
def test_assumption_parameters(name, good, bad):
    assert PARAMS[name].parse(good) == float(good)
    for value in bad:
        with pytest.raises(ParameterError, match=name):
            PARAMS[name].parse(value)


def test_notebook_defaults_are_the_librarys():
    import papermill as pm
    from seglib import insights as I
    declared = pm.inspect_notebook(str(ROOT / "notebooks" / "06_insights.ipynb"))
    assert {k: float(declared[k]["default"]) for k in ("gross_margin", "retention_rate", "observation_years")} == {
        "gross_margin": I.GROSS_MARGIN, "retention_rate": I.RETENTION_RATE, "observation_years": I.OBSERVATION_YEARS}
    assert declared["recipe"]["default"] == '"airline"'


# ---------------------------------------------------------------------------------------------------
# report.html: a notebook with two charts executed in a real kernel, then written as a report

FIGURE_CELL = """import plotly.graph_objects as go
from seglib.insights import use_offline_renderer
print("renderer", use_offline_renderer())
go.Figure(go.Bar(x=["Zebra Segment", "Other"], y=[4321, 1234])).show()
go.Figure(go.Bar(x=["Second Chart"], y=[777])).show()"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import papermill as pm
    folder = tmp_path_factory.mktemp("run")
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('run_id = ""\nclient_secret_key = ""\nsource_path = ""\nk = "5"',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('print("set-up noise")', metadata={"tags": ["remove-cell"]}),
                nbformat.v4.new_markdown_cell("## Charts below"), nbformat.v4.new_code_cell(FIGURE_CELL)]
    nbformat.write(nb, folder / "in.ipynb")
    pm.execute_notebook(str(folder / "in.ipynb"), str(folder / "06_insights.ipynb"), parameters={"run_id": "r-42", "client_secret_key": "sp-secret-name", "source_path": "", "k": "6"},
                        kernel_name="python3", progress_bar=False)
    return folder


def test_report_holds_the_charts_with_plotly_js_inline_once(executed, tmp_path):
    from seglib.report import write_report
    outputs = nbformat.read(executed / "06_insights.ipynb", as_version=4).cells[-1].outputs
    charts = [o for o in outputs if o.output_type == "display_data"]
    assert len(charts) == 2 and all("text/html" in o.data for o in charts)
    assert "plotly.js v" in charts[0].data["text/html"] and "plotly.js v" not in charts[1].data["text/html"]
    out = write_report(executed, tmp_path / "report.html")  # the run folder: its 06_insights
    page = out.read_text()
    assert page.count("plotly.js v") == 1 and page.count("Plotly.newPlot") >= 2  # the bundle once, both charts
    assert "Zebra Segment" in page and "4321" in page and "Second Chart" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing loaded from a CDN (or anywhere)
    assert "<title>Customer segments, run r-42</title>" in page and "Charts below" in page
    assert "use_offline_renderer()" not in page and "set-up noise" not in page  # a report, not a notebook
    # Parameters in an appendix at the end: the set ones, never a secret's name nor an empty one.
    appendix = page[page.index("Appendix: run parameters"):]
    assert page.index("Zebra Segment") < page.index("Appendix: run parameters")
    assert "<th>k</th><td>6</td>" in appendix and "<th>run_id</th><td>r-42</td>" in appendix
    assert "client_secret_key" not in page and "sp-secret-name" not in page and "source_path" not in page


def test_run_report_only_when_insights_ran(executed, tmp_path):
    from seglib.local.runner import RunResult, write_run_report
    assert write_run_report(RunResult(executed, {"05_write": 1.0}), log=lambda *a: None) is None
    assert not (executed / "report.html").exists()
    said = []
    path = write_run_report(RunResult(executed, {"05_write": 1.0, "06_insights": 2.0}), log=said.append)
    assert path == executed / "report.html" and "Zebra Segment" in path.read_text()
    assert said == [f"report: {path}"]


def test_offline_renderer_is_left_alone_on_databricks(monkeypatch):
    import plotly.io as pio
    before = pio.renderers.default
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    assert use_offline_renderer() == before and pio.renderers.default == before


def test_the_profile_steps_z_scores_show_for_the_segments_of_the_run(spark, airline):
    # seg_profile as the profile step writes it; a segment the gold table does not hold (another run's) is left out.
    profile = spark.createDataFrame(
        [(0, "Premium Elite Members", 4, 2, 0.2, 1.5, -0.8), (1, "Loyal Frequent Flyers", 1, 3, 0.3, 0.6, -0.2),
         (2, "Mystery Cluster", 0, 2, 0.2, -0.9, 0.4), (3, "At-Risk Customers", 2, 3, 0.3, -1.1, 1.9),
         (4, "New Joiners", 3, 1, 0.1, -1.5, -1.0)],
        "segment int, segment_name string, cluster int, customer_count long, share double, z_total_flights double, "
        "z_days_since_last_flight double")
    found = insights(airline, "airline", profile=profile, **ASSUME)
    assert found.profile.index.tolist() == ["Premium Elite Members", "Loyal Frequent Flyers", "Mystery Cluster",
                                            "At-Risk Customers"]
    assert found.profile.columns.tolist() == ["total_flights", "days_since_last_flight"]
    assert found.profile.loc["At-Risk Customers", "days_since_last_flight"] == 1.9
    bars = found.figures["profile"].data  # each segment's z-scores side by side, in its colour
    assert [b.name for b in bars] == found.profile.index.tolist()
    assert [list(b.y) for b in bars] == found.profile.to_numpy().tolist()
    assert [b.marker.color for b in bars] == list(found.figures["distribution"].data[0].marker.color)
    assert "profile" not in insights(airline, "airline", **ASSUME).figures  # no profile given: no chart


# ---------------------------------------------------------------------------------------------------
# The report's summary and cards (seglib.brief) from the insights

MIGRATION_SCHEMA = ("run_id string, from_version long, to_version long, from_segment int, from_segment_name string, "
                    "to_segment int, to_segment_name string, change string, customers long")


@pytest.fixture(scope="module")
def briefed(spark, airline):
    profile = spark.createDataFrame(
        [(0, "Premium Elite Members", 4, 2, 0.2, 1.5, -0.8, 0.1), (1, "Loyal Frequent Flyers", 1, 3, 0.3, 0.6, -0.2, 0.0),
         (2, "Mystery Cluster", 0, 2, 0.2, -0.1, 0.2, -0.9), (3, "At-Risk Customers", 2, 3, 0.3, -1.1, 1.9, 0.2)],
        "segment int, segment_name string, cluster int, customer_count long, share double, z_total_flights double, "
        "z_days_since_last_flight double, z_age double")
    migration = spark.createDataFrame(  # this run's rows, and an older run's that must be ignored
        [("run-7", 1, 2, 0, "Premium Elite Members", 0, "Premium Elite Members", "stayed", 2),
         ("run-7", 1, 2, 1, "Loyal Frequent Flyers", 1, "Loyal Frequent Flyers", "stayed", 2),
         ("run-7", 1, 2, 0, "Premium Elite Members", 1, "Loyal Frequent Flyers", "moved", 1),
         ("run-7", 1, 2, 3, "At-Risk Customers", 3, "At-Risk Customers", "stayed", 3),
         ("run-7", 1, 2, 3, "At-Risk Customers", None, None, "departed", 4),
         ("run-7", 1, 2, None, None, 2, "Mystery Cluster", "new", 2),
         ("run-6", 0, 1, None, None, 0, "Premium Elite Members", "new", 99)], MIGRATION_SCHEMA)
    return insights(airline, "airline", profile=profile, migration=migration, currency="EUR", **ASSUME)


def test_summary_table_and_findings_are_the_data(briefed):
    from seglib import brief
    rows = brief.segment_rows(briefed).set_index("segment_name")
    # gold by hand: 10 members, spend 4,120 (AIRLINE_ROWS)
    assert rows.customers.to_dict() == {"Premium Elite Members": 2, "Loyal Frequent Flyers": 3, "Mystery Cluster": 2,
                                        "At-Risk Customers": 3}
    assert rows.revenue["Premium Elite Members"] == 1800.0 and rows.revenue_share.sum() == pytest.approx(1.0)
    page = brief.summary_html(briefed, "EUR")
    assert page.index("Key findings") > page.index('id="segment-table"')
    assert '<td class="n" data-col="customers">3</td>' in page and "EUR 4,120" in page  # total spend
    assert f'data-col="revenue_share">{1800 / 4120:.0%}<' in page
    found = brief.findings(briefed, "EUR")
    assert 3 <= len(found) <= 5
    spend = {}
    for row in AIRLINE_ROWS:
        spend[row[-1]] = spend.get(row[-1], 0.0) + (row[5] or 0.0)
    top = max(spend, key=spend.get)
    members = sum(r[-1] == top for r in AIRLINE_ROWS)
    assert found[0] == (f"{top} are {brief.pct(members / len(AIRLINE_ROWS))} of members and bring "
                        f"{brief.pct(spend[top] / sum(spend.values()))} of spend.")
    # migration of this run only: 7 stayed or moved, 1 moved (Premium Elite -> Loyal)
    assert any(f.startswith(f"Since the last run, 1 member ({brief.pct(1 / 8)}) changed segment; the largest move: 1 from "
                            "Premium Elite Members to Loyal Frequent Flyers") for f in found), found
    assert any("At-Risk Customers: 3 members (30%), on average 350 days since their last flight" in f for f in found)
    for raw in ("nan", "None", "e+0"):
        assert raw not in page


def test_a_card_per_segment_with_traits_moves_and_the_playbook(briefed):
    from seglib import brief
    page = brief.cards_html(briefed, "EUR")
    assert page.count('class="seg-card"') == 4
    card = page[page.index('id="segment-3"'):]
    card = card[:card.index("</section>")]
    assert "lapsing" in card and "(+1.9 SD)" in card and "fewer flights" in card and "(−1.1 SD)" in card
    assert "age" not in card.split("Who they are")[1].split("On average")[0]  # |z| 0.2: not a trait
    assert "3 of the 7 members it had stayed (43%)." in card and "4 are no longer in the data." in card
    action = AIRLINE_PLAYBOOK["At-Risk Customers"]
    roi = briefed.roi.set_index("segment_name").loc["At-Risk Customers"]
    assert action.action in card and f"{brief.money(action.cost_per_customer, 'EUR')} per member" in card
    assert f"<strong>{brief.pct(roi.roi)}</strong>" in card
    mystery = page[page.index('id="segment-2"'):]
    assert "New this run" in mystery and "2 are new members" in mystery
    assert "generic default" in mystery  # a name the playbook does not know
    assert "younger" in mystery


def test_the_migration_is_a_sankey_in_the_segments_colours(briefed, air):
    sankey = briefed.figures["migration"].data[0]
    assert sankey.type == "sankey"
    assert sum(sankey.link.value) == 2 + 2 + 1 + 3 + 4 + 2  # this run's rows only, the older run's 99 left out
    colors = dict(zip(briefed.distribution.segment_name, briefed.figures["distribution"].data[0].marker.color))
    labels = list(sankey.node.label)
    assert sankey.node.color[labels.index("At-Risk Customers (now)")] == colors["At-Risk Customers"]
    assert sankey.node.color[labels.index("Premium Elite Members (before)")] == colors["Premium Elite Members"]
    assert "migration" not in air.figures  # none given: no chart (and a first run's all-new rows draw none either)
