"""seglib import-airline: the lab's member file (+ transactions JSON) -> the four Gold tables.

tests/data/airline_members_dirty.csv is hand-written in the lab's 23-column layout with the dirt of the
real file: `.` and `。` placeholders, blank city and age, an age that is not a number, padded values,
invalid dates (2/30/2013, 13/1/2013, "garbage", and the real file's "2014/2/29  0:00:00"), a member
listed twice (" 1005", the first row must win) and a row without a member number. The expected values
below are worked out by hand from that file.
"""
import datetime as dt
import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from seglib import tables as TB
from seglib.errors import InputContractError
from seglib.importers import airline_gold_tables, import_airline, parse_date, parse_double, parse_int, read_airline_csv

DATA = Path(__file__).parents[1] / "data"
MEMBERS = DATA / "airline_members_dirty.csv"
TRANSACTIONS = DATA / "airline_transactions.json"
REPO = Path(__file__).resolve().parents[2]


def _rows(spark, where, table, key="customer_key"):
    df = spark.read.table(where.qualified(table))
    if "load_timestamp" in df.columns:  # compare as text: independent of the Python process's time zone
        df = df.withColumn("load_timestamp", F.date_format("load_timestamp", "yyyy-MM-dd HH:mm:ss"))
    return {r[key]: r.asDict() for r in df.collect()}


@pytest.fixture(scope="module")
def imported(spark):
    """The member file and the transactions JSON imported once (schema `airline_lab`)."""
    lines = []
    report = import_airline(spark, str(MEMBERS), TB.Location("airline_lab"), transactions=str(TRANSACTIONS),
                            log=lines.append)
    return TB.Location("airline_lab"), report, lines


def test_tables_have_exactly_the_gold_schemas(spark, imported):
    where, _, _ = imported
    for table in TB.GOLD_INPUTS:  # the airline recipe's tables (INPUT_SCHEMAS also holds retail's)
        expected = TB.INPUT_SCHEMAS[table]
        actual = spark.read.table(where.qualified(table)).schema
        assert [(f.name, f.dataType) for f in actual] == [(f.name, f.dataType) for f in expected], table


def test_report_counts_what_was_cleaned(imported):
    _, report, lines = imported
    m = report.source("members")
    assert m.rows_read == 10
    assert m.dropped == {"rows without a valid MEMBER_NO dropped": 1,
                         "duplicate MEMBER_NO rows dropped (first row in the file kept)": 1}
    # 1004 "garbage"; 1008 "13/1/2013"; 1003 "2/30/2013" and 1004 "2014/2/29  0:00:00"
    assert m.invalid_dates == {"FFP_DATE": 1, "FIRST_FLIGHT_DATE": 1, "LAST_FLIGHT_DATE": 2, "LOAD_TIME": 0}
    assert {c: n for c, n in m.invalid_values.items() if n} == {"AGE": 1}  # 1006 "forty"
    assert m.nulls == {"null ages": 3}  # 1002 blank, 1004 ".", 1006 "forty"
    t = report.source("transactions")
    assert t.rows_read == 10
    assert t.dropped == {"rows without a customer_id dropped": 1,  # T005
                         "duplicate transaction_id rows dropped (first row in the file kept)": 1}  # 2nd T001
    assert t.invalid_dates == {"purchase_date": 1} and t.invalid_values == {"amount": 1}  # T004
    assert t.nulls == {"customer ids that are not a member number (kept, customer_key null)": 1,  # T006
                       "transactions of customers not in the member file (incl. null keys)": 1}
    assert report.written == {TB.DIM_CUSTOMERS: 8, TB.FACT_FLIGHTS: 8, TB.FACT_TRANSACTIONS: 8,
                              TB.KPI_CUSTOMER_VALUE: 8}
    text = "\n".join(lines)
    for expected in ["rows read: 10", "rows without a valid MEMBER_NO dropped: 1",
                     "duplicate MEMBER_NO rows dropped (first row in the file kept): 1",
                     "invalid dates nulled: FFP_DATE 1, FIRST_FLIGHT_DATE 1, LAST_FLIGHT_DATE 2, LOAD_TIME 0",
                     "invalid numbers nulled: AGE 1", "null ages: 3", "invalid dates nulled: purchase_date 1",
                     "rows written: dim_customers 8, fact_flights 8, fact_transactions 8, kpi_customer_value 8"]:
        assert expected in text, expected


def test_dim_customers_rows(spark, imported):
    dim = _rows(spark, imported[0], TB.DIM_CUSTOMERS)
    assert sorted(dim) == [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]
    ts = "2014-03-31 00:00:00"  # LOAD_TIME, the window end
    assert dim[1001] == dict(customer_key=1001, gender="Male", age=31, loyalty_tier=6, loyalty_join_date="11/2/2006",
                             first_flight_date="12/24/2008", city=None, province="beijing", country="CN",
                             load_timestamp=ts)  # city "." -> null; age "31.0" -> 31
    assert dim[1002]["city"] is None and dim[1002]["age"] is None  # blank city, blank age
    # "  1003 ", " 3/5/2010 ", " Male ", "  Shenzhen  ", " . ", " 45.0 ": trimmed, placeholder -> null
    assert dim[1003] == dict(customer_key=1003, gender="Male", age=45, loyalty_tier=4, loyalty_join_date="3/5/2010",
                             first_flight_date="3/20/2010", city="Shenzhen", province=None, country="CN",
                             load_timestamp=ts)
    assert dim[1004]["loyalty_join_date"] is None and dim[1004]["first_flight_date"] == "1/15/2012"  # "garbage"
    assert dim[1004]["age"] is None  # "."
    assert dim[1006]["age"] is None  # "forty"
    assert dim[1008] == dict(customer_key=1008, gender=None, age=29, loyalty_tier=4, loyalty_join_date="4/4/2011",
                             first_flight_date=None, city=None, province="shanghai", country="CN",
                             load_timestamp=ts)  # blank gender, month 13, full-width placeholder
    assert dim[1005]["age"] == 28


def test_fact_flights_rows(spark, imported):
    flights = _rows(spark, imported[0], TB.FACT_FLIGHTS)
    assert flights[1001] == dict(
        customer_key=1001, total_flights=210, base_points=505308, year_1_flights=239560.0, year_2_flights=234188.0,
        total_km_flown=580717, avg_flight_interval_days=3.483253589, max_flight_interval_days=18,
        days_since_last_flight=1, exchange_count=34, avg_discount_rate=0.961639043, total_loyalty_points=619760,
        non_flight_points=50, last_flight_date=dt.date(2014, 3, 31), load_timestamp="2014-03-31 00:00:00")
    assert flights[1003]["last_flight_date"] is None  # 2/30/2013
    assert flights[1003]["year_2_flights"] == 7000.5 and flights[1003]["days_since_last_flight"] == 181
    assert flights[1004]["last_flight_date"] is None  # "2014/2/29  0:00:00"
    assert flights[1002]["last_flight_date"] == dt.date(2013, 12, 31)
    assert flights[1008]["last_flight_date"] == dt.date(2014, 1, 30)
    assert flights[1006]["year_1_flights"] is None and flights[1006]["year_2_flights"] == 5000.0  # blank SUM_YR_1
    # " 1005" is listed twice: the first row (3 flights) is kept, not the later one (99 flights)
    assert (flights[1005]["total_flights"], flights[1005]["total_km_flown"], flights[1005]["total_loyalty_points"]) \
        == (3, 2500, 1800)


def test_fact_transactions_rows(spark, imported):
    tx = _rows(spark, imported[0], TB.FACT_TRANSACTIONS, key="transaction_id")
    assert sorted(tx) == ["T001", "T002", "T003", "T004", "T006", "T007", "T008", "T009"]
    assert tx["T001"] == dict(transaction_id="T001", customer_key=1001, transaction_date=dt.date(2014, 1, 15),
                              transaction_amount=100.5, status="completed", region="NORTH",
                              payment_method="credit_card", load_timestamp="2014-03-31 00:00:00")  # first T001 kept
    # numeric customer id and string amount, MM/dd/yyyy date, padded status, blank region, "." payment
    assert (tx["T002"]["customer_key"], tx["T002"]["transaction_date"], tx["T002"]["transaction_amount"],
            tx["T002"]["status"], tx["T002"]["region"], tx["T002"]["payment_method"]) \
        == (1001, dt.date(2014, 1, 20), 49.5, "completed", None, None)
    assert tx["T003"]["transaction_date"] == dt.date(2014, 2, 1)  # yyyy/MM/dd
    assert (tx["T004"]["transaction_date"], tx["T004"]["transaction_amount"], tx["T004"]["payment_method"]) \
        == (None, None, "debit_card")  # 2/30/2014, "invalid"
    assert (tx["T006"]["customer_key"], tx["T006"]["region"], tx["T006"]["payment_method"]) \
        == (None, "EAST", "wire_transfer")  # "CUST-9"
    assert tx["T008"]["status"] == "completed" and tx["T009"]["payment_method"] == "alipay"


def test_kpi_rows_with_transactions(spark, imported):
    kpi = _rows(spark, imported[0], TB.KPI_CUSTOMER_VALUE)
    spend = {k: (r["total_spent"], r["transaction_count"]) for k, r in kpi.items()}
    # completed only: 1001 T001 100.5 + T002 49.5 (T003 pending); 1002 T004 (amount invalid: counted, no spend);
    # 1003 only a cancelled one; 1007 T008 12.3 + T009 7.7
    assert spend == {1001: (150.0, 2), 1002: (0.0, 1), 1003: (0.0, 0), 1004: (0.0, 0), 1005: (0.0, 0),
                     1006: (0.0, 0), 1007: (20.0, 2), 1008: (0.0, 0)}
    # days since last flight: 1, 90, 181, 32, 31, 365, 180, 60 (boundaries: 90 is Active, 180 At Risk)
    assert {k: r["customer_status"] for k, r in kpi.items()} == {
        1001: "Active", 1002: "Active", 1003: "Inactive", 1004: "Active", 1005: "Active", 1006: "Inactive",
        1007: "At Risk", 1008: "Active"}
    assert kpi[1007] == dict(customer_key=1007, gender="Female", age=52, loyalty_tier=5, province="CA",
                             total_flights=25, total_km_flown=70000, total_loyalty_points=61000,
                             days_since_last_flight=180, total_spent=20.0, transaction_count=2,
                             customer_status="At Risk")


def test_without_transactions_no_spend_and_deterministic(spark):
    tables = airline_gold_tables(read_airline_csv(spark, str(MEMBERS)))  # lazy: nothing is written
    again = airline_gold_tables(read_airline_csv(spark, str(MEMBERS)))
    assert tables[TB.FACT_TRANSACTIONS].count() == 0
    assert tables[TB.FACT_TRANSACTIONS].schema == TB.INPUT_SCHEMAS[TB.FACT_TRANSACTIONS]
    kpi = tables[TB.KPI_CUSTOMER_VALUE]
    assert {(r.total_spent, r.transaction_count) for r in kpi.collect()} == {(0.0, 0)} and kpi.count() == 8
    for name in (TB.DIM_CUSTOMERS, TB.FACT_FLIGHTS):
        a, b = (sorted(t[name].collect(), key=lambda r: r.customer_key) for t in (tables, again))
        assert a == b and len(a) == 8, name


def test_parsers_null_what_is_invalid_and_never_fail(spark):
    values = ["3/31/2014", "02/03/2013", "2/29/2012", "2/30/2013", "2/29/2014", "13/1/2013", "1/1/13", "garbage",
              "2014/2/29  0:00:00", "3/31/2014 0:00", None]
    expected = ["2014-03-31", "2013-02-03", "2012-02-29"] + [None] * 8
    df = spark.createDataFrame([(v,) for v in values], "s string")
    previous = spark.conf.get("spark.sql.legacy.timeParserPolicy", "CORRECTED")
    try:
        for policy in ("CORRECTED", "LEGACY"):  # the lenient legacy parser must not roll 2/30 into March
            spark.conf.set("spark.sql.legacy.timeParserPolicy", policy)
            got = [r[0] for r in df.select(F.date_format(parse_date(F.col("s")), "yyyy-MM-dd")).collect()]
            assert got == expected, policy
    finally:
        spark.conf.set("spark.sql.legacy.timeParserPolicy", previous)
    nums = ["31", "31.0", "4.2e1", "31.5", "abc", "NaN", "Infinity", "99999999999", None]
    df = spark.createDataFrame([(v,) for v in nums], "s string")
    got = [(r[0], r[1]) for r in df.select(parse_int(F.col("s")), parse_double(F.col("s"))).collect()]
    assert got == [(31, 31.0), (31, 31.0), (42, 42.0), (None, 31.5), (None, None), (None, None), (None, None),
                   (None, 99999999999.0), (None, None)]


def test_bad_input_names_the_file_and_the_column(spark, where, tmp_path):
    header, *rows = MEMBERS.read_text().splitlines()
    names = header.split(",")
    age = names.index("AGE")
    no_age = tmp_path / "no_age.csv"
    no_age.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != age)
                                for line in [header, *rows]) + "\n")
    expected = rf"{re.escape(str(no_age))}: column\(s\) AGE missing from the header; expected .*flight\.csv.*MEMBER_NO"
    with pytest.raises(InputContractError, match=expected):
        import_airline(spark, str(no_age), where, log=lambda *a: None)
    with pytest.raises(InputContractError, match=r"nope\.csv: file not found; expected the airline member file"):
        import_airline(spark, str(tmp_path / "nope.csv"), where, log=lambda *a: None)
    bad_json = tmp_path / "tx.json"
    bad_json.write_text('[{"transaction_id": "T1", "customer_id": "1001", "amount": 5}]')
    expected = (rf"{re.escape(str(bad_json))}: field\(s\) purchase_date, status, region, payment_method missing; "
                r"expected the lab's transactions JSON")
    with pytest.raises(InputContractError, match=expected):
        import_airline(spark, str(MEMBERS), where, transactions=str(bad_json), log=lambda *a: None)
    assert spark.sql(f"SHOW TABLES IN {where.schema}").count() == 0  # nothing written


def test_cli_imports_a_gzipped_file(tmp_path, published, published_spark):
    """The command as a user runs it, as a Spark Connect client of the published lakehouse's server."""
    gz = tmp_path / "flight.csv.gz"
    with open(MEMBERS, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    lakehouse = published[0]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **published_spark["env"]}
    cli = [sys.executable, "-m", "seglib.cli", "import-airline"]
    ok = subprocess.run([*cli, str(gz), "--lakehouse", str(lakehouse), "--schema", "airline"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    for expected in ["rows read: 10", "duplicate MEMBER_NO rows dropped (first row in the file kept): 1",
                     "invalid dates nulled: FFP_DATE 1, FIRST_FLIGHT_DATE 1, LAST_FLIGHT_DATE 2, LOAD_TIME 0",
                     "null ages: 3", "transactions: none given",
                     "rows written: dim_customers 8, fact_flights 8, fact_transactions 0, kpi_customer_value 8"]:
        assert expected in ok.stdout, expected
    from deltalake import DeltaTable  # read the result without a second JVM
    tables = lakehouse / "warehouse" / "airline.db"
    kpi = DeltaTable(str(tables / "kpi_customer_value")).to_pyarrow_table()
    assert sorted(kpi.column("customer_key").to_pylist()) == [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]
    assert set(kpi.column("total_spent").to_pylist()) == {0.0}
    assert DeltaTable(str(tables / "fact_transactions")).to_pyarrow_table().num_rows == 0

    missing = subprocess.run([*cli, str(tmp_path / "nope.csv.gz"), "--lakehouse", str(lakehouse)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode != 0
    assert "seglib: error: " in missing.stderr and "nope.csv.gz: file not found" in missing.stderr


def test_dates_in_another_format_stop_the_import_and_write_nothing(spark, imported, tmp_path, capsys):
    """A few bad dates are nulled and counted; a column in another format would be nulled entirely."""
    import pandas as pd
    from seglib.cli import main
    where, _, _ = imported
    members = pd.read_csv(MEMBERS, dtype=str, keep_default_na=False)
    members["LAST_FLIGHT_DATE"] = "31.03.2014"
    other = tmp_path / "members_dotted_dates.csv"
    members.to_csv(other, index=False)
    before = {t: TB.table_version(spark, t, where) for t in TB.GOLD_INPUTS}
    assert main(["import-airline", str(other), "--schema", where.schema]) == 1
    err = capsys.readouterr().err
    assert (f"seglib: error: {other}: column LAST_FLIGHT_DATE: 8 of 8 values are not dates in the M/d/yyyy format "
            f"(e.g. '31.03.2014', '31.03.2014', '31.03.2014'); nothing was written") in err
    assert {t: TB.table_version(spark, t, where) for t in TB.GOLD_INPUTS} == before
