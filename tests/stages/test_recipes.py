"""Recipes as data (seglib.recipes): the built-in files, a column mapping onto your own table, errors that
name the file and the key, and a recipe the code has never seen run through every stage."""
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from seglib import publish as P
from seglib import recipes as R
from seglib import tables as TB
from seglib.cluster import segment
from seglib.comments import table_description, uncommented
from seglib.errors import InputContractError, ParameterError
from seglib.features import build_recipe_features, feature_inputs
from seglib.insights import insights
from seglib.load import load_gold, overview
from seglib.params import PARAMS
from seglib.profile import profile_segments
from seglib.retail_generate import retail_tables
from seglib.write import build_outputs, validate_outputs

ROOT = Path(__file__).resolve().parents[2]
MY_ORDERS = ROOT / "recipes" / "my_orders.yml"
MAPPING = {"invoice_id": "order_no", "customer_id": "client", "invoice_ts": "ordered_at", "quantity": "qty",
           "unit_price": "price"}
QUIET = {"log": lambda *a, **k: None}


def _recipe_file(tmp_path, text: str, name: str = "mine.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------
# Reading recipe files (no Spark)

def test_every_recipe_file_in_the_repository_loads_and_the_example_maps_retail():
    files = sorted(ROOT.glob("recipes/**/*.yml")) + sorted((ROOT / "src" / "seglib" / "recipes").glob("*.yml"))
    assert MY_ORDERS in files and len(files) >= 3
    for path in files:
        assert R.get(str(path)).signatures
    assert R.BUILT_IN == ("airline", "retail")
    mine, retail = R.get(str(MY_ORDERS)), R.get("retail")
    assert mine.name == "my_orders" and mine.source == str(MY_ORDERS)
    spec = mine.tables[TB.RETAIL_TRANSACTIONS]
    assert spec.table == "my_orders" and spec.columns == MAPPING
    assert spec.schema == retail.schema(TB.RETAIL_TRANSACTIONS)  # the contract is retail's
    assert (mine.signatures, mine.features, mine.build) == (retail.signatures, retail.features, retail.build)
    assert mine.tables[TB.RETAIL_CUSTOMERS] == retail.tables[TB.RETAIL_CUSTOMERS]


def test_the_recipe_parameter_takes_a_name_or_a_file(tmp_path, monkeypatch):
    parse = PARAMS["recipe"].parse
    assert parse(" retail ") == "retail"
    assert parse(str(MY_ORDERS)) == str(MY_ORDERS)
    monkeypatch.chdir(ROOT)
    assert parse("recipes/my_orders.yml") == "recipes/my_orders.yml"  # relative to the working folder
    monkeypatch.chdir(tmp_path)
    # Elsewhere, relative to the repository the notebooks run from (the bundle root on Databricks).
    assert R.get("recipes/my_orders.yml").source == str(MY_ORDERS)
    assert R.absolute("recipes/my_orders.yml") == str(MY_ORDERS)
    with pytest.raises(ParameterError, match="recipe must be one of airline, retail or a path"):
        parse("airlines")
    with pytest.raises(R.RecipeError, match="recipe file nope.yml not found; looked in"):
        parse("nope.yml")


BAD = {
    "a misspelt key": ("extends: retail\nfeature: {}\n", "key feature is unknown; expected one of"),
    "a misspelt input key": ("extends: retail\ninputs:\n  retail_transactions:\n    colums: {invoice_id: x}\n",
                             "key inputs.retail_transactions.colums is unknown"),
    "a mapping of a column the recipe lacks": (
        "extends: retail\ninputs:\n  retail_transactions:\n    columns: {order_id: order_no}\n",
        "key inputs.retail_transactions.columns.order_id: expected a column of retail_transactions"),
    "two columns mapped to one": (
        "extends: retail\ninputs:\n  retail_transactions:\n    columns: {invoice_id: x, customer_id: x}\n",
        "key inputs.retail_transactions.columns: expected each of your columns mapped once"),
    "an unknown type": ("extends: airline\ninputs:\n  fact_flights:\n    schema: {total_flights: integer}\n",
                        "key inputs.fact_flights.schema.total_flights: expected one of string, int"),
    "an unknown base": ("extends: grocery\n", "key extends names 'grocery', which is neither a built-in recipe"),
    "a profile on no feature": ("extends: retail\nsegments:\n  - {name: A, profile: {spend: 1}}\n",
                                "key segments[0].profile: expected features among recency_days, frequency"),
    "not a mapping": ("- retail\n", "expected a mapping of keys"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_recipe_names_the_file_and_the_key(tmp_path, case):
    text, message = BAD[case]
    path = _recipe_file(tmp_path, text)
    with pytest.raises(R.RecipeError) as error:
        R.get(str(path))
    assert str(error.value).startswith(f"recipe file {path}: ") and message in str(error.value), str(error.value)


# ---------------------------------------------------------------------------------------------------
# A mapped table on Spark

@pytest.fixture(scope="module")
def orders(spark):
    """The same invoice lines twice: as retail_transactions in schema `ours`, and as an `orders` table with
    the user's column names in schema `theirs` (plus a column of theirs that a mapped name would shadow)."""
    lines = retail_tables(spark, customers=400, seed=11)[TB.RETAIL_TRANSACTIONS]
    ours, theirs = TB.Location("ours"), TB.Location("theirs")
    for loc in (ours, theirs):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {loc.schema_name}")
    TB.save_table(lines, TB.RETAIL_TRANSACTIONS, ours)
    renamed = lines.select(*[F.col(c).alias(MAPPING.get(c, c)) for c in lines.columns],
                           F.lit("not a customer").alias("customer_id"))
    TB.save_table(renamed, "my_orders", theirs)
    return ours, theirs


def _segments(spark, where, recipe):
    gold, report = load_gold(spark, where, recipe)
    features, _ = build_recipe_features(feature_inputs(spark, where, recipe), recipe)
    result = segment(features, k=5, seed=42, n_init=2, stability_runs=0, recipe=recipe, **QUIET)
    segments, summary = build_outputs(features, result.assignments, "r1", recipe)
    return report, segments.drop("run_id").orderBy("customer_id").toPandas(), summary.toPandas()


def test_a_mapped_orders_table_gives_the_segments_of_the_same_rows_in_our_layout(spark, orders):
    ours, theirs = orders
    report, expected, expected_summary = _segments(spark, ours, "retail")
    mapped_report, got, got_summary = _segments(spark, theirs, str(MY_ORDERS))
    assert len(expected) > 300 and expected.segment_name.nunique() == 5
    assert got.equals(expected)  # every customer, every RFM column, the same segment id and name
    assert got_summary.equals(expected_summary)
    assert mapped_report.rows == report.rows  # counted under the recipe's table name
    assert mapped_report.checks[0].name == theirs.qualified("my_orders")


def test_a_mapped_column_that_is_missing_names_your_table_your_column_and_the_file(spark, orders, tmp_path):
    _, theirs = orders
    path = _recipe_file(tmp_path, MY_ORDERS.read_text().replace("quantity: qty", "quantity: units"))
    with pytest.raises(InputContractError) as error:
        load_gold(spark, theirs, str(path))
    message = str(error.value)
    assert f"input table {theirs.qualified('my_orders')} is missing column(s) units (the recipe's quantity)" in message
    assert f"(mapped by recipe file {path})" in message and "order_no string" in message


def test_a_feature_expression_that_does_not_parse_stops_the_load(spark, demo, tmp_path):
    path = _recipe_file(tmp_path, "extends: airline\nfeatures:\n  columns:\n    age: 'age +* 2'\n")
    with pytest.raises(InputContractError, match=rf"recipe file {path}: key features.columns.age: 'age \+\* 2' is not "
                                                 r"a SQL expression over kpi_customer_value's columns"):
        load_gold(spark, demo, str(path))


# ---------------------------------------------------------------------------------------------------
# A recipe seglib has never seen: one YAML file, no Python

SUBSCRIPTIONS = """\
describes: subscribers of a streaming service
key: subscriber_id
inputs:
  subscribers:
    key: subscriber_id
    non_negative: [monthly_fee, months_active, logins_90d]
    schema: {subscriber_id: long, plan: string, monthly_fee: double, months_active: int, logins_90d: int}
customers_table: subscribers
features:
  columns:
    fee: monthly_fee
    tenure: months_active
    logins_per_month: logins_90d / 3.0
  log: [fee, tenure, logins_per_month]
segments:
  - name: Devoted Fans
    profile: {fee: 1.2, tenure: 1.2, logins_per_month: 1.2}
  - name: Casual Viewers
    profile: {fee: -0.3, tenure: 0.3, logins_per_month: -0.3}
  - name: Fresh Trials
    profile: {fee: -1.0, tenure: -1.2, logins_per_month: 0.0}
traits:
  fee: [pays more, pays less]
  tenure: [longer subscribed, newer]
  logins_per_month: [watches more, watches less]
rank_feature: fee
profile_averages: {avg_fee: fee, avg_tenure: tenure}
summary: {avg_fee: [monthly_fee, 2], avg_tenure: [months_active, 1]}
overview: {count_by: plan}
insights:
  customer: subscriber_id
  revenue: monthly_fee
  orders: months_active
  recency: logins_90d
  breakdowns:
    - {name: segment_by_plan, column: plan, chart: stacked, title: Plan by segment, legend: plan}
"""


def test_a_recipe_the_code_has_never_seen_runs_every_stage(spark, where, tmp_path):
    path = _recipe_file(tmp_path, SUBSCRIPTIONS, "subscriptions.yml")
    rng = np.random.default_rng(3)
    planted = {"Devoted Fans": (120, 25.0, 40, 60), "Casual Viewers": (200, 9.0, 24, 6),
               "Fresh Trials": (150, 5.0, 2, 20)}
    rows, truth, n = [], {}, 0
    for name, (count, fee, months, logins) in planted.items():
        for _ in range(count):
            n += 1
            rows.append((n, "premium" if fee > 20 else "basic", float(fee * rng.uniform(0.85, 1.15)),
                         int(max(1, months * rng.uniform(0.8, 1.2))), int(logins * rng.uniform(0.7, 1.3))))
            truth[n] = name
    df = spark.createDataFrame(rows, "subscriber_id long, plan string, monthly_fee double, months_active int, "
                                     "logins_90d int")
    TB.save_table(df, "subscribers", where)
    recipe = str(path)
    gold, _ = load_gold(spark, where, recipe)
    assert dict(overview(gold, recipe).values.tolist()) == {"basic": 350, "premium": 120}
    features, report = build_recipe_features(feature_inputs(spark, where, recipe), recipe)
    assert report.rows_out == 470 and features.columns[:4] == ["customer_key", "fee", "tenure", "logins_per_month"]
    result = segment(features, k=3, seed=42, n_init=2, stability_runs=0, recipe=recipe, **QUIET)
    got = {r.customer_key: r.segment_name for r in result.assignments.collect()}
    accuracy = np.mean([got[c] == name for c, name in truth.items()])
    assert accuracy > 0.95, accuracy
    profile = profile_segments(features, result.assignments, recipe).toPandas()
    assert {"avg_fee", "avg_tenure"} <= set(profile.columns)
    segments, summary = build_outputs(gold["subscribers"], result.assignments, "r1", recipe)
    assert validate_outputs(gold["subscribers"], segments, summary, recipe)["customers"] == 470
    # Every column is commented: the file describes none, so a passed-through one names where it comes from
    assert uncommented(segments.schema) == [] and uncommented(summary.schema) == []
    comments = {f.name: f.metadata["comment"] for f in summary.schema.fields}
    assert comments["avg_fee"] == ("Mean of monthly_fee over the segment's customers, rounded to 2 decimals. "
                                   "monthly_fee: From input subscribers.monthly_fee.")
    assert summary.columns == ["segment", "segment_name", "customer_count", "avg_fee", "avg_tenure", "run_id"]
    assert segments.columns[:5] == ["subscriber_id", "plan", "monthly_fee", "months_active", "logins_90d"]
    found = insights(segments, recipe)
    assert set(found.distribution.segment_name) == set(planted)
    assert found.extras["segment_by_plan"].loc["Devoted Fans", "premium"] > 100
    assert "segment_by_plan" in found.figures
    from seglib import brief  # the report in default words, each card with the labelled default action
    assert "Devoted Fans" in brief.summary_html(found) and "customers" in brief.summary_html(found)
    assert brief.cards_html(found).count("The playbook has no action for this name") == 3


def test_an_edited_recipe_file_is_read_again(tmp_path):
    """A notebook session outlives edits to the user's recipe file: the next get sees the edit."""
    import os
    path = tmp_path / "edited.yml"
    path.write_text("extends: retail\ndescribes: first words\n")
    assert R.get(str(path)).describes == "first words"
    path.write_text("extends: retail\ndescribes: second words\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert R.get(str(path)).describes == "second words"


def test_retail_gold_tables_at_a_path_are_documented_for_delta_rs_readers(spark, tmp_path):
    """The retail recipe's gold tables written as Delta folders (target_path, as on OneLake): delta-rs reads
    the table descriptions and every column's comment, the customer attributes' from the recipe file,
    and they stay through a second publish."""
    from deltalake import DeltaTable
    inputs = TB.Location("shop_documented")
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {inputs.schema_name}")
    for table, df in retail_tables(spark, customers=300, seed=5).items():
        TB.save_table(df, table, inputs)
    where = TB.Location(inputs.schema, target_path=str(tmp_path / "Tables"))
    features, _ = build_recipe_features(feature_inputs(spark, where, "retail"), "retail")
    result = segment(features, k=4, seed=42, n_init=1, stability_runs=0, recipe="retail", **QUIET)
    tables = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY]
    for run_id in ("r1", "r2"):
        segments, summary = build_outputs(features, result.assignments, run_id, "retail")
        P.publish(spark, dict(zip(tables, (segments, summary))), where, log=lambda *a: None,
                  descriptions={t: table_description(t, "retail") for t in tables})
    for table in tables:
        dt = DeltaTable(where.path(table))
        assert dt.version() == 1 and dt.metadata().description == table_description(table, "retail")
        comments = {f.name: f.metadata.get("comment") for f in dt.schema().fields}
        assert [c for c, text in comments.items() if not (text or "").strip()] == [], table
    gold = {f.name: f.metadata["comment"] for f in DeltaTable(where.path(TB.GOLD_SEGMENTS)).schema().fields}
    assert gold["gender"] == "Customer's gender as recorded in retail_customers."
    assert gold["recency_days"].startswith("Days from the customer's last purchase line to as_of")
    assert "rounded to cents; currency of the source" in gold["monetary"]
