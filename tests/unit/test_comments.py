"""Every gold column of every recipe has a comment, every table seglib writes a description (no JVM: the
comments are data; tests/stages/test_write.py and test_recipes.py read them back from written tables)."""
import pytest

from seglib import comments as C
from seglib import recipes as R
from seglib import tables as TB
from seglib.migration import MIGRATION_COLUMNS
from seglib.write import RUNS_SCHEMA

RECIPES = ["airline", "retail", "recipes/my_orders.yml"]


def _gold_columns(table: str, rec: R.Recipe) -> list[str]:
    """The columns the write step gives *table* under *rec* (write.build_outputs, migration, the run log)."""
    rfm = rec.build == "rfm"
    if table == TB.GOLD_SEGMENTS:
        base = [*TB.RETAIL_RFM_COLUMNS, *rec.attributes] if rfm else rec.schema(rec.customers_table).fieldNames()
        return [*base, *TB.GOLD_SEGMENT_COLUMNS]
    if table == TB.GOLD_SUMMARY:
        return TB.RETAIL_SUMMARY_COLUMNS if rfm else ["segment", "segment_name", "customer_count", *rec.summary, "run_id"]
    if table == TB.GOLD_MIGRATION:
        return MIGRATION_COLUMNS
    return [part.split()[0] for part in RUNS_SCHEMA.replace("map<string,string>", "map").replace(
        "map<string,double>", "map").replace("map<string,long>", "map").split(", ")]


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("table", C.GOLD_TABLES)
def test_every_gold_column_has_a_comment(recipe, table):
    rec = R.get(recipe)
    comments = C.column_comments(table, rec)
    columns = _gold_columns(table, rec)
    assert [c for c in columns if not (comments.get(c) or "").strip()] == []
    assert C.table_description(table, rec).strip()


def test_the_airline_summary_says_what_it_averages_and_in_which_units():
    comments = C.column_comments(TB.GOLD_SUMMARY, "airline")
    assert comments["avg_revenue"].startswith("Mean of total_spent over the segment's customers, rounded to 2 decimals")
    assert "completed purchases" in comments["avg_revenue"] and "currency of the source" in comments["avg_revenue"]
    assert "rounded to a whole number" in comments["avg_points"]


def test_a_user_recipe_passes_through_columns_described_by_where_they_come_from():
    comments = C.column_comments(TB.GOLD_SEGMENTS, "recipes/my_orders.yml")
    assert comments["customer_id"].startswith("Customer identifier (input my_orders.client)")
    assert comments["country"] == R.get("retail").tables[TB.RETAIL_CUSTOMERS].descriptions["country"]
    spec = R.get("recipes/my_orders.yml").tables[TB.RETAIL_TRANSACTIONS]
    assert spec.description("quantity") == "From input my_orders.qty (the recipe's quantity)."
    assert spec.description("category") == "From input my_orders.category."


def test_every_written_table_has_a_description_and_the_handover_tables_say_they_are_internal():
    for table in TB.WRITTEN_TABLES:
        assert (C.table_description(table) or "").strip(), table
    for table in TB.HANDOVER_TABLES:
        assert C.table_description(table).startswith("Internal to seglib: scratch handover between its notebooks")
        assert "Not for reports" in C.table_description(table)
    assert C.table_description(TB.KPI_CUSTOMER_VALUE) is None  # an input: the user's table, not ours


@pytest.mark.parametrize("descriptions, message", [
    ("{order_total: money}", "key inputs.retail_customers.descriptions.order_total: expected a column of retail_customers"),
    ("{age: '  '}", "key inputs.retail_customers.descriptions.age: expected a non-empty text"),
    ("[age]", "key inputs.retail_customers.descriptions: expected a mapping of column -> what it is"),
])
def test_a_bad_description_names_the_file_and_the_key(tmp_path, descriptions, message):
    path = tmp_path / "theirs.yml"
    path.write_text(f"extends: retail\ninputs:\n  retail_customers:\n    descriptions: {descriptions}\n")
    with pytest.raises(R.RecipeError, match="recipe file .*theirs.yml: " + message.replace("(", r"\(")):
        R.get(str(path))


def test_a_recipe_extending_another_adds_and_rewords_descriptions(tmp_path):
    path = tmp_path / "theirs.yml"
    path.write_text("extends: retail\ninputs:\n  retail_customers:\n    descriptions:\n      age: Age at signup, in years.\n")
    spec = R.get(str(path)).tables[TB.RETAIL_CUSTOMERS]
    assert spec.descriptions["age"] == "Age at signup, in years."
    assert spec.descriptions["city"] == "Customer's city, from retail_customers."
