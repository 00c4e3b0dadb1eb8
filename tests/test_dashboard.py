"""The AI/BI (Lakeview) dashboard and its bundle resource.

Static checks on resources/customer_segments.dashboard.yml and dashboards/customer_segments.lvdash.json,
then every dataset query and every widget query run on small real gold tables built by the pipeline's
own stage-5 code, the way the dashboard runs them: unqualified table names resolved in the current schema.
"""
from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path

import pytest
import yaml
from databricks.bundles.dashboards import Dashboard

from seglib import tables as TB
from seglib.write import UNSEGMENTED_ID, UNSEGMENTED_NAME, build_outputs

ROOT = Path(__file__).resolve().parents[1]
RESOURCE_YML = ROOT / "resources" / "customer_segments.dashboard.yml"
DASHBOARD_JSON = ROOT / "dashboards" / "customer_segments.lvdash.json"

GOLD_TABLES = {TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY}
GRID_COLUMNS = 12  # layoutVersion GRID_V1
# Spec version each widget type needs; a wrong version renders as a broken widget.
SPEC_VERSIONS = {"counter": 2, "table": 2, "bar": 3, "line": 3, "pie": 3, "pivot": 3}
AGGREGATE = re.compile(r"^\s*(SUM|COUNT|AVG|MIN|MAX|COUNT_IF)\s*\(", re.IGNORECASE)
BACKTICKED = re.compile(r"`([^`]+)`")


# ---------- helpers ----------

def _resource() -> dict:
    return yaml.safe_load(RESOURCE_YML.read_text())["resources"]["dashboards"]["customer_segments"]


def _dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def _datasets() -> dict[str, str]:
    """Dataset name -> SQL (queryLines are joined verbatim, as Lakeview does)."""
    return {d["name"]: "".join(d["queryLines"]) for d in _dashboard()["datasets"]}


def _widgets() -> list[dict]:
    return [item["widget"] for page in _dashboard()["pages"] for item in page["layout"]]


def _data_widgets() -> list[dict]:
    return [w for w in _widgets() if "queries" in w]


def _widget(name: str) -> dict:
    return next(w for w in _widgets() if w["name"] == name)


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


# ---------- bundle resource ----------

def test_resource_is_a_valid_bundle_dashboard():
    doc = yaml.safe_load(RESOURCE_YML.read_text())
    assert list(doc) == ["resources"] and list(doc["resources"]) == ["dashboards"]
    assert list(doc["resources"]["dashboards"]) == ["customer_segments"]
    res = _resource()
    dashboard = Dashboard.from_dict(res)  # strict: unknown keys raise
    assert dashboard.as_dict() == res  # nothing dropped or renamed on the way through
    assert res["display_name"]


def test_dashboard_model_rejects_unknown_keys():
    """The check above means something: the model is strict."""
    with pytest.raises(ValueError, match="Unexpected field"):
        Dashboard.from_dict({**_resource(), "dataset_catalogue": "x"})


def test_file_path_resolves_relative_to_the_yaml():
    path = (RESOURCE_YML.parent / _resource()["file_path"]).resolve()
    assert path == DASHBOARD_JSON.resolve()
    assert path.is_file() and path.name.endswith(".lvdash.json")


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
    assert used == {"warehouse_id", "catalog", "schema"}
    assert used <= set(bundle["variables"])
    assert any(RESOURCE_YML.relative_to(ROOT).match(pattern) for pattern in bundle["include"])


# ---------- serialized dashboard ----------

def test_dashboard_json_structure():
    dash = _dashboard()
    names = [d["name"] for d in dash["datasets"]]
    assert len(names) == len(set(names))
    for d in dash["datasets"]:
        assert "query" not in d, "datasets use queryLines"
        assert d["queryLines"] and all(isinstance(line, str) for line in d["queryLines"])
        assert ";" not in "".join(d["queryLines"]), "one statement per dataset"
    widget_names = [w["name"] for w in _widgets()]
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


def test_expected_widgets_with_right_types_and_versions():
    types = {w["name"]: w["spec"]["widgetType"] for w in _data_widgets()}
    assert types == {
        "total-customers": "counter",
        "segment-sizes": "bar",
        "revenue-by-segment": "bar",
        "segment-by-loyalty-tier": "bar",
        "status-by-segment": "bar",
        "top-members": "table",
    }
    for w in _data_widgets():
        assert w["spec"]["version"] == SPEC_VERSIONS[w["spec"]["widgetType"]], w["name"]
    for name in ("segment-by-loyalty-tier", "status-by-segment"):
        assert "color" in _widget(name)["spec"]["encodings"], f"{name} is stacked by a colour field"


def test_widget_queries_reference_existing_datasets_and_bound_fields():
    datasets = _datasets()
    for w in _data_widgets():
        fields = set()
        for q in w["queries"]:
            assert q["query"]["datasetName"] in datasets, f"{w['name']}: unknown dataset"
            fields |= {f["name"] for f in q["query"]["fields"]}
        bound = _field_names_in(w["spec"]["encodings"])
        assert bound and bound <= fields, f"{w['name']}: encodings bind {bound - fields} not in its query"


def test_dataset_queries_use_unqualified_gold_tables_only():
    for name, sql in _datasets().items():
        targets = _from_targets(sql)
        assert targets, name
        for t in targets:
            assert re.fullmatch(r"[A-Za-z0-9_]+", t), f"{name}: FROM {t} is qualified or quoted"
            assert t in GOLD_TABLES, f"{name}: FROM {t} is not a gold table"
        assert not re.search(r"[.`]\s*gold_", sql), f"{name}: qualified gold table"
        assert not re.search(r"`[^`]*`\s*\.", sql), f"{name}: backticked qualified name"
        assert "${" not in sql and "__" not in sql, f"{name}: placeholder left in the query"


def test_no_catalog_or_schema_hard_coded_anywhere():
    text = DASHBOARD_JSON.read_text()
    assert not re.search(r"[\w`]+\s*\.\s*`?(gold_customer_segments_ml|gold_segment_summary)", text)
    for word in ("hive_metastore", "contoso", "${"):
        assert word not in text.lower(), word


# ---------- on real gold tables ----------

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


@pytest.fixture(scope="module")
def gold(spark):
    """The two gold tables, as stage 5 builds and writes them, in a schema of their own."""
    schema = f"dashboard_{uuid.uuid4().hex[:10]}"
    spark.sql(f"CREATE SCHEMA {schema}")
    kpi_schema = TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE]
    kpi = spark.createDataFrame(_kpi_rows(), kpi_schema)
    assignments = spark.createDataFrame(
        [(k, _cluster(k), _cluster(k), NAMES[_cluster(k)]) for k in range(1, N_CUSTOMERS)],
        "customer_key int, cluster int, segment int, segment_name string")
    segments, summary = build_outputs(kpi, assignments, "dashboard-test")
    TB.save_table(segments, TB.GOLD_SEGMENTS, schema)
    TB.save_table(summary, TB.GOLD_SUMMARY, schema)
    yield schema
    spark.sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _expected() -> dict:
    rows = _kpi_rows()
    label = {k: NAMES[_cluster(k)] if k < N_CUSTOMERS else UNSEGMENTED_NAME for k, *_ in rows}
    sizes, revenue = {}, {}
    for r in rows:
        sizes[label[r[0]]] = sizes.get(label[r[0]], 0) + 1
        revenue[label[r[0]]] = revenue.get(label[r[0]], 0.0) + r[9]
    top = sorted(rows, key=lambda r: (-r[7], r[0]))[:20]
    return {"sizes": sizes, "revenue": revenue, "top_keys": [r[0] for r in top]}


def _run(spark, gold, sql: str):
    with _current_database(spark, gold):
        df = spark.sql(sql)
        return df.collect(), df.columns


def test_gold_tables_have_the_pipeline_columns(spark, gold):
    with _current_database(spark, gold):
        seg = spark.table(TB.GOLD_SEGMENTS)
        summ = spark.table(TB.GOLD_SUMMARY)
        assert seg.columns == [f.name for f in TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE].fields] + [
            "segment", "segment_name", "run_id"]
        assert summ.columns == TB.GOLD_SUMMARY_COLUMNS
        assert dict(seg.dtypes)["segment"] == "int" and dict(seg.dtypes)["loyalty_tier"] == "int"
        assert seg.count() == N_CUSTOMERS
        assert seg.filter(f"segment = {UNSEGMENTED_ID}").count() == 1


def test_current_database_is_restored(spark, gold):
    before = spark.catalog.currentDatabase()
    _run(spark, gold, "SELECT 1")
    assert spark.catalog.currentDatabase() == before != gold


@pytest.mark.parametrize("dataset", sorted(_datasets()))
def test_dataset_query_runs_and_returns_the_bound_columns(spark, gold, dataset):
    rows, columns = _run(spark, gold, _datasets()[dataset])
    assert rows, f"{dataset} returned nothing"
    needed = set()
    for w in _data_widgets():
        for q in w["queries"]:
            if q["query"]["datasetName"] == dataset:
                for f in q["query"]["fields"]:
                    needed |= set(BACKTICKED.findall(f["expression"]))
    assert needed and needed <= set(columns), f"{dataset} lacks {needed - set(columns)}"


@pytest.mark.parametrize("widget", sorted(w["name"] for w in _data_widgets()))
def test_widget_query_runs_and_returns_its_encoded_fields(spark, gold, widget):
    w = _widget(widget)
    (q,) = w["queries"]
    rows, columns = _run(spark, gold, _widget_sql(_datasets()[q["query"]["datasetName"]], q["query"]))
    assert rows
    assert _field_names_in(w["spec"]["encodings"]) <= set(columns)


def _widget_rows(spark, gold, name: str) -> list[dict]:
    (q,) = _widget(name)["queries"]
    rows, _ = _run(spark, gold, _widget_sql(_datasets()[q["query"]["datasetName"]], q["query"]))
    return [r.asDict() for r in rows]


def test_total_customers_counter(spark, gold):
    (row,) = _widget_rows(spark, gold, "total-customers")
    assert row["sum(customer_count)"] == N_CUSTOMERS


def test_segment_sizes_add_up_to_the_customers(spark, gold):
    rows = _widget_rows(spark, gold, "segment-sizes")
    sizes = {r["segment_name"]: r["sum(customer_count)"] for r in rows}
    assert sizes == _expected()["sizes"]
    assert sum(sizes.values()) == N_CUSTOMERS


def test_revenue_by_segment_sums_total_spent(spark, gold):
    rows = _widget_rows(spark, gold, "revenue-by-segment")
    revenue = {r["segment_name"]: r["sum(total_spent)"] for r in rows}
    expected = _expected()["revenue"]
    assert revenue.keys() == expected.keys()
    for name, value in expected.items():
        assert revenue[name] == pytest.approx(value)


def test_segment_by_loyalty_tier(spark, gold):
    rows = _widget_rows(spark, gold, "segment-by-loyalty-tier")
    assert sum(r["count(customer_key)"] for r in rows) == N_CUSTOMERS
    assert {r["loyalty_tier"] for r in rows} == {"Tier 4", "Tier 5", "Tier 6", "Unknown"}
    assert {r["segment_name"] for r in rows} == set(_expected()["sizes"])


def test_customer_status_by_segment(spark, gold):
    rows = _widget_rows(spark, gold, "status-by-segment")
    assert sum(r["count(customer_key)"] for r in rows) == N_CUSTOMERS
    assert {r["customer_status"] for r in rows} == {"Active", "At Risk", "Inactive", "Unknown"}


def test_top_members_are_the_20_with_most_points(spark, gold):
    rows = _widget_rows(spark, gold, "top-members")
    assert [r["customer_key"] for r in rows] == _expected()["top_keys"]
    points = [r["total_loyalty_points"] for r in rows]
    assert points == sorted(points, reverse=True)
    assert all(r["segment_name"] for r in rows)
