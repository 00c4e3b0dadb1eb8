"""The AI/BI (Lakeview) dashboards and their bundle resource.

The gold tables' columns depend on the recipe (airline: kpi_customer_value's; retail: RFM), so each recipe
names a dashboard file (its `dashboard` key: airline, retail, or generic, which reads only the segment
columns every recipe writes) and resources/customer_segments.dashboard.yml picks it with ${var.dashboard}.
Static checks on the resource and on each dashboards/customer_segments_<dashboard>.lvdash.json, then every
dataset query and every widget query run on small real gold tables of each recipe the dashboard serves,
built by the pipeline's own code (stage 5, and for retail the features step's RFM), the way the dashboard
runs them: unqualified table names resolved in the current schema. A query naming a column the recipe's
tables lack fails there, as it would on the warehouse.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
import yaml
from databricks.bundles.dashboards import Dashboard

from seglib import bundle as B
from seglib import recipes as R
from seglib import tables as TB
from seglib.write import UNSEGMENTED_ID, UNSEGMENTED_NAME, build_outputs

ROOT = Path(__file__).resolve().parents[2]
RESOURCE_YML = ROOT / "resources" / "customer_segments.dashboard.yml"
RESOURCE_KEY = "customer_segments"

GOLD_TABLES = {TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY}
GRID_COLUMNS = 12  # layoutVersion GRID_V1
# Spec version each widget type needs; a wrong version renders as a broken widget.
SPEC_VERSIONS = {"counter": 2, "table": 2, "bar": 3, "line": 3, "pie": 3, "pivot": 3}
AGGREGATE = re.compile(r"^\s*(SUM|COUNT|AVG|MIN|MAX|COUNT_IF)\s*\(", re.IGNORECASE)
BACKTICKED = re.compile(r"`([^`]+)`")


# ---------- helpers ----------

def _resource() -> dict:
    return yaml.safe_load(RESOURCE_YML.read_text())["resources"]["dashboards"][RESOURCE_KEY]


def _deployed(dashboard: str | None, recipe: str | None = None) -> dict:
    """The dashboard resource as the bundle deploys it with `--var dashboard=<dashboard> --var recipe=<recipe>`
    (None: the bundle's default), its file_path and display_name resolved through seglib.bundle."""
    env = {f"BUNDLE_VAR_{name}": value for name, value in (("dashboard", dashboard), ("recipe", recipe))
           if value is not None}
    bundle = B.load(ROOT, env=env)  # not os.environ: the runtime rows' threads read it meanwhile
    spec = bundle.resources("dashboards")[RESOURCE_KEY]
    return {"file": (bundle.files[f"dashboards.{RESOURCE_KEY}"].parent / bundle.resolve(spec["file_path"])).resolve(),
            "display_name": bundle.resolve(spec["display_name"])}


RECIPES = list(R.RECIPES)
GENERIC = "generic"  # the dashboard of a recipe that names none
# dashboard -> the recipes whose gold tables it is tested on: its own, and for the generic one every recipe's
SERVES = {**{R.get(r).dashboard: (r,) for r in RECIPES}, GENERIC: tuple(RECIPES)}
DASHBOARDS = list(SERVES)
DASHBOARD_FILES = {name: _deployed(name)["file"] for name in DASHBOARDS}


def _dashboard(recipe: str) -> dict:
    return json.loads(DASHBOARD_FILES[recipe].read_text())


def _datasets(recipe: str) -> dict[str, str]:
    """Dataset name -> SQL (queryLines are joined verbatim, as Lakeview does)."""
    return {d["name"]: "".join(d["queryLines"]) for d in _dashboard(recipe)["datasets"]}


def _widgets(recipe: str) -> list[dict]:
    return [item["widget"] for page in _dashboard(recipe)["pages"] for item in page["layout"]]


def _data_widgets(recipe: str) -> list[dict]:
    return [w for w in _widgets(recipe) if "queries" in w]


def _widget(recipe: str, name: str) -> dict:
    return next(w for w in _widgets(recipe) if w["name"] == name)


def _field_names_in(obj) -> set[str]:
    """Every fieldName an encoding binds, however deeply nested (x, y, color, value, columns, ...)."""
    found = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "fieldName":
                found.add(value)
            else:
                found |= _field_names_in(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= _field_names_in(value)
    return found


def _widget_sql(dataset_sql: str, query: dict) -> str:
    """What Lakeview runs for a widget: its field expressions over the dataset, grouped unless disaggregated."""
    fields = query["fields"]
    select = ", ".join(f"{f['expression']} AS `{f['name']}`" for f in fields)
    sql = f"SELECT {select} FROM (\n{dataset_sql}\n) AS ds"
    keys = [f["expression"] for f in fields if not AGGREGATE.match(f["expression"])]
    if not query["disaggregated"] and len(keys) < len(fields) and keys:
        sql += " GROUP BY " + ", ".join(keys)
    return sql


def _from_targets(sql: str) -> list[str]:
    return re.findall(r"\b(?:FROM|JOIN)\s+([^\s,()]+)", sql, flags=re.IGNORECASE)


@contextlib.contextmanager
def _current_database(spark, name: str):
    previous = spark.catalog.currentDatabase()
    spark.catalog.setCurrentDatabase(name)
    try:
        yield
    finally:
        spark.catalog.setCurrentDatabase(previous)


def _each_dashboard(names) -> list:
    """(dashboard, recipe, name) for parametrize: each dataset or widget of each dashboard, on the gold tables
    of each recipe it serves."""
    return [pytest.param(dashboard, recipe, name, id=f"{dashboard}-{recipe}-{name}")
            for dashboard, recipes in SERVES.items() for recipe in recipes for name in sorted(names(dashboard))]


# ---------- bundle resource ----------

def test_resource_is_a_valid_bundle_dashboard():
    doc = yaml.safe_load(RESOURCE_YML.read_text())
    assert list(doc) == ["resources"] and list(doc["resources"]) == ["dashboards"]
    assert list(doc["resources"]["dashboards"]) == [RESOURCE_KEY]
    res = _resource()
    dashboard = Dashboard.from_dict(res)  # strict: unknown keys raise
    assert dashboard.as_dict() == res  # nothing dropped or renamed on the way through
    assert res["display_name"]


def test_dashboard_model_rejects_unknown_keys():
    """The check above means something: the model is strict."""
    with pytest.raises(ValueError, match="Unexpected field"):
        Dashboard.from_dict({**_resource(), "dataset_catalogue": "x"})


def test_the_dashboard_variable_picks_the_file():
    """file_path names ${var.dashboard}; the CLI substitutes variables in resources before it resolves the
    path (relative to the YAML) and reads the file, so `--var dashboard=retail` deploys the retail file."""
    assert "${var.dashboard}" in _resource()["file_path"]
    for name, path in DASHBOARD_FILES.items():
        assert path.is_file() and path.name == f"customer_segments_{name}.lvdash.json", name
        assert path.parent == (ROOT / "dashboards").resolve()
    assert len(set(DASHBOARD_FILES.values())) == len(DASHBOARDS) == len(RECIPES) + 1 >= 3
    assert _deployed(None)["file"] == DASHBOARD_FILES["airline"] == DASHBOARD_FILES[R.get(R.DEFAULT).dashboard]
    # which recipe's it is, in the workspace too
    assert _deployed("retail", "recipes/my_orders.yml")["display_name"] == "Customer Segments (recipes/my_orders.yml)"


def test_each_recipe_names_its_dashboard_and_a_new_one_gets_the_generic(tmp_path):
    assert {r: R.get(r).dashboard for r in RECIPES} == {"airline": "airline", "retail": "retail"}
    assert R.get(str(ROOT / "recipes" / "my_orders.yml")).dashboard == "retail"  # inherited with extends
    unseen = tmp_path / "unseen.yml"
    unseen.write_text((ROOT / "src/seglib/recipes/retail.yml").read_text().replace("dashboard: retail", ""))
    assert R.get(str(unseen)).dashboard == GENERIC
    bad = tmp_path / "bad.yml"
    bad.write_text("extends: retail\ndashboard: no such/file\n")
    with pytest.raises(R.RecipeError, match="key dashboard: expected the name of a dashboard file"):
        R.get(str(bad))


def test_warehouse_catalog_and_schema_come_from_bundle_variables():
    res = _resource()
    assert res["warehouse_id"] == "${var.warehouse_id}"
    assert res["dataset_catalog"] == "${var.catalog}"
    assert res["dataset_schema"] == "${var.schema}"
    # Nothing else pins a workspace: no ids, paths or hosts.
    assert set(res) == {"display_name", "file_path", "warehouse_id", "dataset_catalog", "dataset_schema"}


def test_bundle_declares_the_variables_and_includes_the_resource():
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    used = set(re.findall(r"\$\{var\.([A-Za-z0-9_]+)\}", RESOURCE_YML.read_text()))
    assert used == {"warehouse_id", "catalog", "schema", "recipe", "dashboard"}
    assert used <= set(bundle["variables"])
    assert any(RESOURCE_YML.relative_to(ROOT).match(pattern) for pattern in bundle["include"])


# ---------- serialized dashboards ----------

@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_dashboard_json_structure(dashboard):
    dash = _dashboard(dashboard)
    names = [d["name"] for d in dash["datasets"]]
    assert len(names) == len(set(names))
    for d in dash["datasets"]:
        assert "query" not in d, "datasets use queryLines"
        assert d["queryLines"] and all(isinstance(line, str) for line in d["queryLines"])
        assert ";" not in "".join(d["queryLines"]), "one statement per dataset"
    widget_names = [w["name"] for w in _widgets(dashboard)]
    assert len(widget_names) == len(set(widget_names))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,60}", n) for n in widget_names)
    for page in dash["pages"]:
        assert page["pageType"] == "PAGE_TYPE_CANVAS" and page["layoutVersion"] == "GRID_V1"
        cells = set()
        for item in page["layout"]:
            p = item["position"]
            assert p["x"] >= 0 and p["y"] >= 0 and p["width"] > 0 and p["height"] > 0
            assert p["x"] + p["width"] <= GRID_COLUMNS, item["widget"]["name"]
            area = {(x, y) for x in range(p["x"], p["x"] + p["width"]) for y in range(p["y"], p["y"] + p["height"])}
            assert not cells & area, f"{item['widget']['name']} overlaps another widget"
            cells |= area


EXPECTED_WIDGETS = {
    "airline": {
        "total-customers": "counter",
        "segment-sizes": "bar",
        "revenue-by-segment": "bar",
        "segment-by-loyalty-tier": "bar",
        "status-by-segment": "bar",
        "top-members": "table",
    },
    "retail": {
        "total-customers": "counter",
        "total-revenue": "counter",
        "customers-per-segment": "bar",
        "revenue-per-segment": "bar",
        "customers-per-rfm-segment": "bar",
        "revenue-per-rfm-segment": "bar",
        "rfm-score-grid": "pivot",
        "segment-by-rfm-segment": "bar",
        "top-customers": "table",
    },
    GENERIC: {
        "total-customers": "counter",
        "customers-per-segment": "bar",
        "segments": "table",
        "runs": "table",
    },
}
STACKED = {"airline": ("segment-by-loyalty-tier", "status-by-segment"), "retail": ("segment-by-rfm-segment",),
           GENERIC: ()}


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_expected_widgets_with_right_types_and_versions(dashboard):
    types = {w["name"]: w["spec"]["widgetType"] for w in _data_widgets(dashboard)}
    assert types == EXPECTED_WIDGETS[dashboard]
    for w in _data_widgets(dashboard):
        assert w["spec"]["version"] == SPEC_VERSIONS[w["spec"]["widgetType"]], w["name"]
    for name in STACKED[dashboard]:
        assert "color" in _widget(dashboard, name)["spec"]["encodings"], f"{name} is stacked by a colour field"


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_widget_queries_reference_existing_datasets_and_bound_fields(dashboard):
    datasets = _datasets(dashboard)
    for w in _data_widgets(dashboard):
        fields = set()
        for q in w["queries"]:
            assert q["query"]["datasetName"] in datasets, f"{w['name']}: unknown dataset"
            fields |= {f["name"] for f in q["query"]["fields"]}
        bound = _field_names_in(w["spec"]["encodings"])
        assert bound and bound <= fields, f"{w['name']}: encodings bind {bound - fields} not in its query"


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_dataset_queries_use_unqualified_gold_tables_only(dashboard):
    for name, sql in _datasets(dashboard).items():
        targets = _from_targets(sql)
        assert targets, name
        for t in targets:
            assert re.fullmatch(r"[A-Za-z0-9_]+", t), f"{name}: FROM {t} is qualified or quoted"
            assert t in GOLD_TABLES, f"{name}: FROM {t} is not a gold table"
        assert not re.search(r"[.`]\s*gold_", sql), f"{name}: qualified gold table"
        assert not re.search(r"`[^`]*`\s*\.", sql), f"{name}: backticked qualified name"
        assert "${" not in sql and "__" not in sql, f"{name}: placeholder left in the query"


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_no_catalog_or_schema_hard_coded_anywhere(dashboard):
    text = DASHBOARD_FILES[dashboard].read_text()
    assert not re.search(r"[\w`]+\s*\.\s*`?(gold_customer_segments_ml|gold_segment_summary)", text)
    for word in ("hive_metastore", "contoso", "${"):
        assert word not in text.lower(), word


# ---------- on real gold tables ----------

# airline: hand-made kpi_customer_value members through stage 5's build_outputs
N_CUSTOMERS = 25
NAMES = {0: "Premium Elite Members", 1: "Loyal Frequent Flyers", 2: "Occasional Travelers"}


def _kpi_rows() -> list[tuple]:
    """Hand-made members in kpi_customer_value's column order: 24 in three clusters, the last unlabelled."""
    rows = []
    for key in range(1, N_CUSTOMERS + 1):
        tier = None if key == 7 else 4 + key % 3
        status = None if key == 8 else ("Active", "At Risk", "Inactive")[key % 3]
        rows.append((key, "F" if key % 2 else "M", 20 + key, tier, "ON", key * 2, key * 1000,
                     (key * 7919) % 50_000, key * 10, round(key * 123.45, 2), key % 5, status))
    return rows


def _cluster(key: int) -> int:
    return key % 3


def _airline_gold(spark, schema: str) -> None:
    kpi = spark.createDataFrame(_kpi_rows(), TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE])
    assignments = spark.createDataFrame(
        [(k, _cluster(k), _cluster(k), NAMES[_cluster(k)]) for k in range(1, N_CUSTOMERS)],
        "customer_key int, cluster int, segment int, segment_name string")
    segments, summary = build_outputs(kpi, assignments, "dashboard-test")
    TB.save_table(segments, TB.GOLD_SEGMENTS, TB.Location(schema))
    TB.save_table(summary, TB.GOLD_SUMMARY, TB.Location(schema))


# retail: hand-made invoice lines through the features step's RFM (seglib.rfm) and stage 5's build_outputs,
# without the optional retail_customers: the columns every retail run has
N_SHOPPERS = 24
RETAIL_NAMES = {0: "Top Spenders", 1: "Steady Buyers", 2: "Lapsed One-Timers"}
CANCELLING = 5  # this customer cancels one unit of a purchase


def _retail_lines() -> list[tuple]:
    """Invoice lines in retail_transactions' column order: customer c buys 1 + c % 4 invoices, each of c
    units at 2.50, 3.50, ... over 2024; customer CANCELLING returns one unit of its first."""
    rows = []
    for c in range(1, N_SHOPPERS + 1):
        for i in range(1 + c % 4):
            ts = dt.datetime(2024, 1, 1, 10) + dt.timedelta(days=(c * 7 + i * 40) % 360)
            rows.append((f"{c}-{i}", c, ts, f"P{i}", "Gifts", c, 2.5 + i, 0.0, "United Kingdom", "web"))
    rows.append((f"C{CANCELLING}-0", CANCELLING, dt.datetime(2024, 12, 30, 9), "P0", "Gifts", -1, 2.5, 0.0,
                 "United Kingdom", "web"))
    return rows


def _revenue(c: int) -> float:
    """Net revenue of customer c (monetary), from the lines' rule above."""
    return sum(c * (2.5 + i) for i in range(1 + c % 4)) - (2.5 if c == CANCELLING else 0.0)


def _retail_gold(spark, schema: str) -> None:
    from seglib.features import build_retail_features
    lines = spark.createDataFrame(_retail_lines(), TB.INPUT_SCHEMAS[TB.RETAIL_TRANSACTIONS])
    base, _ = build_retail_features(lines)  # seg_features: customer_key, RFM values, scores, rule segment
    assignments = spark.createDataFrame(
        [(c, _cluster(c), _cluster(c), RETAIL_NAMES[_cluster(c)]) for c in range(1, N_SHOPPERS)],
        "customer_key long, cluster int, segment int, segment_name string")
    segments, summary = build_outputs(base, assignments, "dashboard-test", recipe="retail")
    TB.save_table(segments, TB.GOLD_SEGMENTS, TB.Location(schema))
    TB.save_table(summary, TB.GOLD_SUMMARY, TB.Location(schema))


BUILDERS = {"airline": _airline_gold, "retail": _retail_gold}


@pytest.fixture(scope="module")
def gold(spark):
    """recipe -> a schema of its own holding that recipe's two gold tables, built on first use."""
    built: dict[str, str] = {}

    def schema_of(recipe: str) -> str:
        if recipe not in built:
            schema = f"dashboard_{recipe}_{uuid.uuid4().hex[:10]}"
            spark.sql(f"CREATE SCHEMA {schema}")
            built[recipe] = schema
            BUILDERS[recipe](spark, schema)
        return built[recipe]
    yield schema_of
    for schema in built.values():
        spark.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_every_recipe_has_gold_tables_to_test_its_dashboard_on():
    assert set(BUILDERS) == set(RECIPES)


def _expected() -> dict:
    rows = _kpi_rows()
    label = {k: NAMES[_cluster(k)] if k < N_CUSTOMERS else UNSEGMENTED_NAME for k, *_ in rows}
    sizes, revenue = {}, {}
    for r in rows:
        sizes[label[r[0]]] = sizes.get(label[r[0]], 0) + 1
        revenue[label[r[0]]] = revenue.get(label[r[0]], 0.0) + r[9]
    top = sorted(rows, key=lambda r: (-r[7], r[0]))[:20]
    return {"sizes": sizes, "revenue": revenue, "top_keys": [r[0] for r in top]}


def _retail_expected() -> dict:
    label = {c: RETAIL_NAMES[_cluster(c)] if c < N_SHOPPERS else UNSEGMENTED_NAME for c in range(1, N_SHOPPERS + 1)}
    sizes, revenue = {}, {}
    for c, name in label.items():
        sizes[name] = sizes.get(name, 0) + 1
        revenue[name] = revenue.get(name, 0.0) + _revenue(c)
    top = sorted(label, key=lambda c: (-_revenue(c), c))[:20]
    return {"sizes": sizes, "revenue": revenue, "top_ids": top}


def _run(spark, schema: str, sql: str):
    with _current_database(spark, schema):
        df = spark.sql(sql)
        return df.collect(), df.columns


def test_gold_tables_have_the_pipeline_columns(spark, gold):
    with _current_database(spark, gold("airline")):
        seg = spark.table(TB.GOLD_SEGMENTS)
        summ = spark.table(TB.GOLD_SUMMARY)
        assert seg.columns == [f.name for f in TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE].fields] + [
            "segment", "segment_name", "run_id"]
        assert summ.columns == TB.GOLD_SUMMARY_COLUMNS
        assert dict(seg.dtypes)["segment"] == "int" and dict(seg.dtypes)["loyalty_tier"] == "int"
        assert seg.count() == N_CUSTOMERS
        assert seg.filter(f"segment = {UNSEGMENTED_ID}").count() == 1


def test_retail_gold_tables_have_the_pipeline_columns(spark, gold):
    with _current_database(spark, gold("retail")):
        seg = spark.table(TB.GOLD_SEGMENTS)
        summ = spark.table(TB.GOLD_SUMMARY)
        # as test_retail_job's run without retail_customers: no customer attributes
        assert seg.columns == TB.RETAIL_RFM_COLUMNS + TB.GOLD_SEGMENT_COLUMNS
        assert summ.columns == TB.RETAIL_SUMMARY_COLUMNS
        assert seg.count() == N_SHOPPERS
        assert seg.filter(f"segment = {UNSEGMENTED_ID}").count() == 1
        assert {r.grouping for r in summ.select("grouping").distinct().collect()} == {"cluster", "rfm_segment"}


def test_current_database_is_restored(spark, gold):
    before = spark.catalog.currentDatabase()
    _run(spark, gold("airline"), "SELECT 1")
    assert spark.catalog.currentDatabase() == before != gold("airline")


@pytest.mark.parametrize("dashboard, recipe, dataset", _each_dashboard(_datasets))
def test_dataset_query_runs_and_returns_the_bound_columns(spark, gold, dashboard, recipe, dataset):
    """Each dashboard on the gold tables of each recipe it serves: a column they lack fails the query here."""
    rows, columns = _run(spark, gold(recipe), _datasets(dashboard)[dataset])
    assert rows, f"{dataset} returned nothing"
    needed = set()
    for w in _data_widgets(dashboard):
        for q in w["queries"]:
            if q["query"]["datasetName"] == dataset:
                for f in q["query"]["fields"]:
                    needed |= set(BACKTICKED.findall(f["expression"]))
    assert needed and needed <= set(columns), f"{dataset} lacks {needed - set(columns)}"


@pytest.mark.parametrize("dashboard, recipe, widget", _each_dashboard(lambda d: [w["name"] for w in _data_widgets(d)]))
def test_widget_query_runs_and_returns_its_encoded_fields(spark, gold, dashboard, recipe, widget):
    w = _widget(dashboard, widget)
    (q,) = w["queries"]
    rows, columns = _run(spark, gold(recipe), _widget_sql(_datasets(dashboard)[q["query"]["datasetName"]], q["query"]))
    assert rows
    assert _field_names_in(w["spec"]["encodings"]) <= set(columns)


def test_a_query_naming_a_column_the_recipes_tables_lack_fails(spark, gold):
    """What the two tests above rest on: the real query fails on a column the gold tables lack. The
    airline dashboard (loyalty tier, status, flights) cannot work on retail's tables, the bug the
    per-recipe dashboards fix."""
    from pyspark.errors import AnalysisException
    retail = gold("retail")
    query = _datasets("retail")["ds_customers"]
    sql = query.replace("       monetary\n", "       monetary,\n       loyalty_tier\n")
    assert sql != query and "loyalty_tier" not in query
    with pytest.raises(AnalysisException, match="loyalty_tier"):
        _run(spark, retail, sql)
    failing = []
    for name, airline_sql in _datasets("airline").items():
        try:
            _run(spark, retail, airline_sql)
        except AnalysisException:
            failing.append(name)
    assert failing, "the airline dashboard's queries all run on retail gold tables"


def _widget_rows(spark, schema: str, dashboard: str, name: str) -> list[dict]:
    (q,) = _widget(dashboard, name)["queries"]
    rows, _ = _run(spark, schema, _widget_sql(_datasets(dashboard)[q["query"]["datasetName"]], q["query"]))
    return [r.asDict() for r in rows]


# ---------- airline widgets' values ----------

def test_total_customers_counter(spark, gold):
    (row,) = _widget_rows(spark, gold("airline"), "airline", "total-customers")
    assert row["sum(customer_count)"] == N_CUSTOMERS


def test_segment_sizes_add_up_to_the_customers(spark, gold):
    rows = _widget_rows(spark, gold("airline"), "airline", "segment-sizes")
    sizes = {r["segment_name"]: r["sum(customer_count)"] for r in rows}
    assert sizes == _expected()["sizes"]
    assert sum(sizes.values()) == N_CUSTOMERS


def test_revenue_by_segment_sums_total_spent(spark, gold):
    rows = _widget_rows(spark, gold("airline"), "airline", "revenue-by-segment")
    revenue = {r["segment_name"]: r["sum(total_spent)"] for r in rows}
    expected = _expected()["revenue"]
    assert revenue.keys() == expected.keys()
    for name, value in expected.items():
        assert revenue[name] == pytest.approx(value)


def test_segment_by_loyalty_tier(spark, gold):
    rows = _widget_rows(spark, gold("airline"), "airline", "segment-by-loyalty-tier")
    assert sum(r["count(customer_key)"] for r in rows) == N_CUSTOMERS
    assert {r["loyalty_tier"] for r in rows} == {"Tier 4", "Tier 5", "Tier 6", "Unknown"}
    assert {r["segment_name"] for r in rows} == set(_expected()["sizes"])


def test_customer_status_by_segment(spark, gold):
    rows = _widget_rows(spark, gold("airline"), "airline", "status-by-segment")
    assert sum(r["count(customer_key)"] for r in rows) == N_CUSTOMERS
    assert {r["customer_status"] for r in rows} == {"Active", "At Risk", "Inactive", "Unknown"}


def test_top_members_are_the_20_with_most_points(spark, gold):
    rows = _widget_rows(spark, gold("airline"), "airline", "top-members")
    assert [r["customer_key"] for r in rows] == _expected()["top_keys"]
    points = [r["total_loyalty_points"] for r in rows]
    assert points == sorted(points, reverse=True)
    assert all(r["segment_name"] for r in rows)


# ---------- retail widgets' values ----------

def test_retail_counters(spark, gold):
    (customers,) = _widget_rows(spark, gold("retail"), "retail", "total-customers")
    assert customers["sum(customer_count)"] == N_SHOPPERS  # the cluster rows only, not twice
    (revenue,) = _widget_rows(spark, gold("retail"), "retail", "total-revenue")
    assert revenue["sum(total_revenue)"] == pytest.approx(sum(_revenue(c) for c in range(1, N_SHOPPERS + 1)))


def test_retail_customers_and_revenue_per_segment(spark, gold):
    expected = _retail_expected()
    sizes = {r["segment_name"]: r["sum(customer_count)"]
             for r in _widget_rows(spark, gold("retail"), "retail", "customers-per-segment")}
    assert sizes == expected["sizes"]
    revenue = {r["segment_name"]: r["sum(total_revenue)"]
               for r in _widget_rows(spark, gold("retail"), "retail", "revenue-per-segment")}
    assert revenue.keys() == expected["revenue"].keys()
    for name, value in expected["revenue"].items():
        assert revenue[name] == pytest.approx(value)


def test_retail_customers_and_revenue_per_rfm_segment(spark, gold):
    from seglib.rfm import RFM_SEGMENTS
    with _current_database(spark, gold("retail")):
        truth = {r.rfm_segment: (r.n, r.revenue) for r in spark.sql(
            f"SELECT rfm_segment, COUNT(*) AS n, SUM(monetary) AS revenue FROM {TB.GOLD_SEGMENTS} "
            f"GROUP BY rfm_segment").collect()}
    sizes = {r["rfm_segment"]: r["sum(customer_count)"]
             for r in _widget_rows(spark, gold("retail"), "retail", "customers-per-rfm-segment")}
    assert sizes == {name: n for name, (n, _) in truth.items()}
    assert sum(sizes.values()) == N_SHOPPERS and set(sizes) <= set(RFM_SEGMENTS) and len(sizes) > 1
    revenue = {r["rfm_segment"]: r["sum(total_revenue)"]
               for r in _widget_rows(spark, gold("retail"), "retail", "revenue-per-rfm-segment")}
    assert revenue == pytest.approx({name: total for name, (_, total) in truth.items()})


def test_retail_rfm_score_grid(spark, gold):
    rows = _widget_rows(spark, gold("retail"), "retail", "rfm-score-grid")
    assert sum(r["count(customer_id)"] for r in rows) == N_SHOPPERS
    with _current_database(spark, gold("retail")):
        truth = {(f"R{r.r_score}", f"F{r.f_score}"): r.n for r in spark.sql(
            f"SELECT r_score, f_score, COUNT(*) AS n FROM {TB.GOLD_SEGMENTS} GROUP BY r_score, f_score").collect()}
    assert {(r["r_score"], r["f_score"]): r["count(customer_id)"] for r in rows} == truth
    assert len({r["r_score"] for r in rows}) > 1 and len({r["f_score"] for r in rows}) > 1


def test_retail_clusters_by_rfm_segment(spark, gold):
    rows = _widget_rows(spark, gold("retail"), "retail", "segment-by-rfm-segment")
    assert sum(r["count(customer_id)"] for r in rows) == N_SHOPPERS
    assert {r["segment_name"] for r in rows} == set(_retail_expected()["sizes"])


def test_retail_top_customers_are_the_20_with_most_revenue(spark, gold):
    rows = _widget_rows(spark, gold("retail"), "retail", "top-customers")
    assert [r["customer_id"] for r in rows] == _retail_expected()["top_ids"]
    assert [r["monetary"] for r in rows] == pytest.approx([_revenue(c) for c in _retail_expected()["top_ids"]])
    assert all(r["segment_name"] and r["rfm_segment"] and re.fullmatch(r"[1-5]{3}", r["rfm_score"]) for r in rows)


# ---------- the generic dashboard's values, on every recipe's gold tables ----------

@pytest.mark.parametrize("recipe", RECIPES)
def test_generic_dashboard_counts_every_recipes_segments(spark, gold, recipe):
    schema = gold(recipe)
    expected = {"airline": _expected, "retail": _retail_expected}[recipe]()["sizes"]
    (total,) = _widget_rows(spark, schema, GENERIC, "total-customers")
    assert total["sum(customers)"] == sum(expected.values()) == {"airline": N_CUSTOMERS, "retail": N_SHOPPERS}[recipe]
    bars = _widget_rows(spark, schema, GENERIC, "customers-per-segment")
    assert {r["segment_name"]: r["sum(customers)"] for r in bars} == expected
    table = _widget_rows(spark, schema, GENERIC, "segments")
    assert {r["segment_name"]: r["customers"] for r in table} == expected
    assert {r["segment"] for r in table if r["segment_name"] == UNSEGMENTED_NAME} == {UNSEGMENTED_ID}
    (run,) = _widget_rows(spark, schema, GENERIC, "runs")
    assert run == {"run_id": "dashboard-test", "customers": sum(expected.values()), "segments": len(expected)}
