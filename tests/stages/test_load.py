import pytest
from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.errors import InputContractError, ParameterError
from seglib.load import load_gold, read_input


def test_load_gold_reads_casts_and_reports(spark, demo):
    gold, report = load_gold(spark, demo)
    assert set(gold) == {TB.DIM_CUSTOMERS, TB.FACT_FLIGHTS, TB.FACT_TRANSACTIONS, TB.KPI_CUSTOMER_VALUE}
    assert gold[TB.KPI_CUSTOMER_VALUE].schema == TB.INPUT_SCHEMAS[TB.KPI_CUSTOMER_VALUE]
    assert report.rows[TB.KPI_CUSTOMER_VALUE] == 3000 == gold[TB.KPI_CUSTOMER_VALUE].count()
    assert report.rows[TB.FACT_TRANSACTIONS] == gold[TB.FACT_TRANSACTIONS].count() > 3000
    # The generator draws ages like the real file's (up to 110): a few are implausible, reported, not fatal.
    out = gold[TB.KPI_CUSTOMER_VALUE].where("age < 2 OR age > 100").count()
    assert out > 0 and f"{demo.schema_name}.`kpi_customer_value`.age: {out} value(s) outside 2-100" in str(report)


def test_missing_table_names_it_and_what_was_expected(spark, where):
    with pytest.raises(InputContractError) as e:
        read_input(spark, TB.KPI_CUSTOMER_VALUE, where)
    msg = str(e.value)
    assert f"{where.schema_name}.`kpi_customer_value` does not exist" in msg
    assert "customer_status string" in msg and "dim_customers" in msg


def test_missing_column_names_it(spark, demo, where):
    kpi = spark.read.table(demo.qualified(TB.KPI_CUSTOMER_VALUE)).drop("days_since_last_flight")
    kpi.write.format("delta").saveAsTable(where.qualified(TB.KPI_CUSTOMER_VALUE))
    with pytest.raises(InputContractError, match=r"kpi_customer_value` is missing column\(s\) "
                                                 r"days_since_last_flight; expected columns: customer_key int"):
        read_input(spark, TB.KPI_CUSTOMER_VALUE, where)


def test_castable_types_are_accepted(spark, demo, where):
    kpi = spark.read.table(demo.qualified(TB.KPI_CUSTOMER_VALUE)).withColumn("customer_key", F.col("customer_key").cast("long"))
    kpi.write.format("delta").saveAsTable(where.qualified(TB.KPI_CUSTOMER_VALUE))
    assert read_input(spark, TB.KPI_CUSTOMER_VALUE, where).schema["customer_key"].dataType.simpleString() == "int"


@pytest.mark.parametrize("bad", ["a b", "x;drop", "`x`", "o'neil", ""])
def test_identifiers_are_checked(bad):
    with pytest.raises(ParameterError, match="must match"):
        TB.qualified("t", bad)
