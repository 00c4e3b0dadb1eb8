"""Retail input data: the demo generator (seglib.retail_generate) and the UCI Online Retail importer.

tests/data/online_retail_sample.csv is hand-written in the UCI layout (27 lines): normal lines in both
date formats (2010-12-01 08:26:00 and the xlsx export's 12/1/2010 8:28), CustomerIDs as float strings
("17850.0") and one as an integer ("13047"), two C cancellations, a negative quantity without a C
(14911), three lines without a customer, a zero price (12647), a negative "Adjust bad debt" price with a
customer (12346), one unparseable value per column (date 2010-13-45, quantity "two", price "1,95",
CustomerID 17850.5), a padded line (" 536386 ") and a quoted description with a comma. The expected
counts below are worked out by hand from that file.
"""
import gzip
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.cli import main
from seglib.errors import InputContractError
from seglib.importers import import_retail, read_retail_csv, retail_report
from seglib.retail_generate import (CUSTOMER_ID_BASE, WINDOW_END, WINDOW_START, generate_retail_data,
                                    retail_behaviour, retail_tables)

SAMPLE = Path(__file__).parents[1] / "data" / "online_retail_sample.csv"
EXCLUDED = {"no_customer": 3, "bad_customer": 1, "no_invoice": 0, "bad_date": 1, "bad_quantity": 1,
            "bad_price": 1, "zero_price": 1, "negative_price": 1, "zero_quantity": 0}


def _same_schema(df, table):
    expected = TB.RETAIL_SCHEMAS[table]
    return [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in expected]


def _text(df):
    """invoice_ts as text: independent of the Python process's time zone."""
    return df.withColumn("invoice_ts", F.date_format("invoice_ts", "yyyy-MM-dd HH:mm:ss"))


@pytest.fixture(scope="module")
def imported(spark):
    lines = []
    report = import_retail(spark, str(SAMPLE), TB.Location("retail_uci"), log=lines.append)
    return spark.read.table(f"retail_uci.{TB.RETAIL_TRANSACTIONS}"), report, "\n".join(lines)


@pytest.fixture(scope="module")
def generated(spark):
    """The default demo (1,000 customers, seed 42), written once."""
    counts = generate_retail_data(spark, TB.Location("retail_demo"), log=lambda *a: None)
    tx = spark.read.table(f"retail_demo.{TB.RETAIL_TRANSACTIONS}")
    customers = spark.read.table(f"retail_demo.{TB.RETAIL_CUSTOMERS}")
    return tx, customers, counts


# --- the importer ---------------------------------------------------------------------------------

def test_import_counts_what_it_kept_and_excluded(imported):
    _, report, text = imported
    assert report.rows_read == 27 and report.rows_kept == 18
    assert report.excluded == EXCLUDED and sum(report.excluded.values()) == 27 - 18
    assert list(report.kept.values()) == [2, 1]  # C536379 and C536391; 536589 (-10, no C)
    assert (report.customers, report.invoices, report.cancellation_invoices, report.countries) == (7, 11, 2, 3)
    assert list(report.in_file.values()) == [3, 2, 3, 2, 2]  # no customer, C lines, qty < 0, price 0, price < 0
    assert report.written == {TB.RETAIL_TRANSACTIONS: 18}
    for expected in ["rows read: 27", "rows without CustomerID excluded: 3", "rows kept: 18",
                     "rows with UnitPrice 0 excluded (no revenue): 1",
                     "rows with UnitPrice < 0 excluded (adjustments, not purchases): 1",
                     "customers 7, invoices 11 (of which 2 cancellations), countries 3",
                     "invoice dates 2010-12-01 08:26:00 .. 2011-12-09 12:50:00",
                     "rows written: retail_transactions 18"]:
        assert expected in text, expected
    assert "rows without InvoiceNo" not in text  # reasons with no rows are not listed


def test_imported_rows_follow_the_recipe_schema(imported):
    tx, _, _ = imported
    assert _same_schema(tx, TB.RETAIL_TRANSACTIONS)
    rows = {(r.invoice_id, r.product_id): r for r in _text(tx).collect()}
    assert len(rows) == 18
    assert {r.customer_id for r in rows.values()} == {17850, 13047, 12583, 15311, 14911, 16029, 12680}
    assert rows[("536366", "22633")].invoice_ts == "2010-12-01 08:28:00"     # 12/1/2010 8:28
    assert rows[("581587", "22899")].invoice_ts == "2011-12-09 12:50:00"     # 12/9/2011 12:50
    assert rows[("536368", "22960")].customer_id == 13047                     # "13047", no ".0"
    padded = rows[("536386", "22961")]                                        # " 536386 ", "  22961 "
    assert (padded.customer_id, padded.quantity) == (16029, 4)
    assert rows[("C536391", "22727")].quantity == -24 and rows[("536589", "21777")].quantity == -10
    assert all(r.unit_price > 0 for r in rows.values())
    assert all(r.category is None and r.discount is None and r.channel is None for r in rows.values())
    assert rows[("536370", "POST")].country == "France"


def test_gz_input_and_bad_input(spark, where, tmp_path):
    gz = tmp_path / "online_retail.csv.gz"
    with SAMPLE.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    report = retail_report(read_retail_csv(spark, str(gz)), str(gz))
    assert (report.rows_read, report.rows_kept, report.excluded) == (27, 18, EXCLUDED)

    # Another date format: most dates do not parse, so nothing is written and the column is named.
    other = tmp_path / "dotted.csv"
    other.write_text(SAMPLE.read_text().replace("2010-12-01 ", "01.12.2010 "))
    with pytest.raises(InputContractError, match=r"column InvoiceDate: .* not dates .*'01\.12\.2010"):
        import_retail(spark, str(other), where, log=lambda *a: None)
    assert not spark.catalog.tableExists(where.qualified(TB.RETAIL_TRANSACTIONS))

    missing = tmp_path / "no_customer_column.csv"
    missing.write_text("InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,Country\n1,A,1,2010-12-01 08:00:00,1.0,UK\n")
    with pytest.raises(InputContractError, match="Description, CustomerID missing"):
        import_retail(spark, str(missing), where, log=lambda *a: None)


def test_cli_checks_before_starting_spark(capsys):
    assert main(["import-retail", "/nonexistent/online_retail.csv"]) == 1
    assert "file not found; expected the UCI Online Retail file" in capsys.readouterr().err
    assert main(["generate", "--recipe", "retail", "--schema", "no-dashes"]) == 1
    assert "schema must match" in capsys.readouterr().err


# --- the generator --------------------------------------------------------------------------------

def test_generated_tables_keep_the_contract(generated):
    tx, customers, counts = generated
    assert _same_schema(tx, TB.RETAIL_TRANSACTIONS) and _same_schema(customers, TB.RETAIL_CUSTOMERS)
    assert counts == {TB.RETAIL_TRANSACTIONS: tx.count(), TB.RETAIL_CUSTOMERS: 1000}
    c = customers.agg(F.count_distinct("customer_id").alias("ids"), F.min("customer_id").alias("lo"),
                      F.max("signup_date").alias("last_signup"), F.count_if(F.col("age").isNull()).alias("no_age"),
                      F.count_if(F.col("gender").isNull() | F.col("city").isNull()).alias("nulls")).first()
    assert (c.ids, c.lo, c.nulls) == (1000, CUSTOMER_ID_BASE + 1, 0)
    assert str(c.last_signup) <= WINDOW_END and c.no_age < 30
    cancel = F.col("invoice_id").startswith("C")
    t = tx.agg(
        F.count_if(F.col("customer_id").isNull()).alias("no_customer"),
        F.count_if(F.col("unit_price") <= 0).alias("bad_price"),
        F.count_if(cancel != (F.col("quantity") < 0)).alias("sign_mismatch"),  # negative exactly on C lines
        F.count_if(~F.col("discount").between(0, 0.5)).alias("bad_discount"),
        F.count_if(F.col("product_id").isNull() | F.col("category").isNull() | F.col("channel").isNull())
        .alias("nulls"),
        F.date_format(F.min("invoice_ts"), "yyyy-MM-dd").alias("first"),
        F.date_format(F.max("invoice_ts"), "yyyy-MM-dd").alias("last"),
        F.count_if(cancel).alias("cancelled"), F.count("*").alias("lines"),
        F.count_distinct(F.when(~cancel, F.col("invoice_id"))).alias("invoices"),
        F.count_distinct("customer_id").alias("buyers"),
    ).first()
    assert (t.no_customer, t.bad_price, t.sign_mismatch, t.bad_discount, t.nulls) == (0, 0, 0, 0, 0)
    assert WINDOW_START <= t.first and t.last <= WINDOW_END
    assert 0.01 < t.cancelled / t.lines < 0.05                          # a few percent
    assert t.lines / t.invoices > 2.5                                  # several lines per invoice
    assert 5 <= t.invoices / 1000 <= 7 and t.buyers == 1000            # ~6 invoices per customer, all buy
    assert tx.join(customers, "customer_id", "left_anti").count() == 0


def test_cancellations_mirror_an_earlier_line(generated):
    tx, _, _ = generated
    c = tx.where(F.col("invoice_id").startswith("C")).alias("c")
    o = tx.where(~F.col("invoice_id").startswith("C")).alias("o")
    mirrored = c.join(o, (F.col("c.invoice_id") == F.concat(F.lit("C"), F.col("o.invoice_id")))
                      & (F.col("c.product_id") == F.col("o.product_id"))
                      & (F.col("c.unit_price") == F.col("o.unit_price"))
                      & (F.col("c.customer_id") == F.col("o.customer_id"))
                      & (F.col("c.quantity") == -F.col("o.quantity"))
                      & (F.col("c.invoice_ts") >= F.col("o.invoice_ts")), "left_semi")
    assert mirrored.count() == c.count() > 0


def test_seasonality_nov_dec_peak_and_summer(generated):
    tx, _, _ = generated
    monthly = {(r.y, r.m): r.n for r in tx.where(~F.col("invoice_id").startswith("C"))
               .groupBy(F.year("invoice_ts").alias("y"), F.month("invoice_ts").alias("m")).count()
               .withColumnRenamed("count", "n").collect()}
    assert len(monthly) == 24
    for year in (2023, 2024):
        average = sum(n for (y, _), n in monthly.items() if y == year) / 12
        assert monthly[(year, 11)] > 1.2 * average and monthly[(year, 12)] > 1.2 * average, (year, monthly)
    summer = sum(n for (_, m), n in monthly.items() if m in (6, 7, 8)) / 6
    winter = sum(n for (_, m), n in monthly.items() if m in (1, 2)) / 4
    assert summer > 1.15 * winter


def test_behaviours_give_rfm_structure(spark, generated):
    """The latent behaviours show in recency, frequency and monetary value (what RFM and KMeans see)."""
    tx, _, _ = generated
    buys = tx.where(~F.col("invoice_id").startswith("C"))
    rfm = (buys.groupBy("customer_id").agg(
        F.count_distinct("invoice_id").alias("f"),
        F.datediff(F.lit(WINDOW_END), F.max("invoice_ts")).alias("r"),
        F.sum(F.col("quantity") * F.col("unit_price")).alias("m"))
        .join(retail_behaviour(spark), "customer_id"))
    med = {r.behaviour: r for r in rfm.groupBy("behaviour").agg(
        *[F.median(c).alias(c) for c in ("f", "r", "m")], F.max("f").alias("f_max")).collect()}
    assert med["one_time"].f_max == 1
    assert med["frequent_high_value"].f > med["regular"].f > med["fading"].f > med["lapsed"].f
    assert med["frequent_high_value"].m > 3 * med["regular"].m > 3 * med["one_time"].m
    assert med["lapsed"].r > med["fading"].r > 2 * med["regular"].r
    assert med["recent_joiner"].r < 60 and med["frequent_high_value"].r < 30


def test_same_seed_same_rows_whatever_the_partitioning(spark):
    a = retail_tables(spark, 300, seed=5)
    b = retail_tables(spark, 300, seed=5, partitions=7)
    c = retail_tables(spark, 300, seed=6)
    rows = lambda df: sorted(df.collect(), key=str)  # noqa: E731 - small: cheaper than exceptAll both ways
    for name in a:
        reference = rows(a[name])
        assert rows(b[name]) == reference, name
        assert rows(c[name]) != reference, name
    more = retail_tables(spark, 300, seed=5, transactions_per_customer=12)[TB.RETAIL_TRANSACTIONS]
    invoices = [df.select(F.count_distinct("invoice_id")).first()[0] for df in (a[TB.RETAIL_TRANSACTIONS], more)]
    assert 1.6 < invoices[1] / invoices[0] < 2.4, invoices  # about twice the default 6 per customer
    with pytest.raises(ValueError, match="customers must be >= 1"):
        retail_tables(spark, 0)
    with pytest.raises(ValueError, match="transactions_per_customer must be >= 1"):
        retail_tables(spark, 10, transactions_per_customer=0.5)
