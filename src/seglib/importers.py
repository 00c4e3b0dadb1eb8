"""Importers: build the four Gold tables from a lab's source files.

``import_airline`` takes the Contoso lab's member file (flight.csv: 23 columns, one row per
frequent-flyer member) and, optionally, its transactions JSON (customer_transactions.json), and
applies the lab's Silver and Gold steps (DESIGN.md) with their gaps closed:

* every value is trimmed; blanks and the placeholders ``.`` / ``。`` become null (the lab turns only
  ``.`` in city, province and age into null, and then writes "Unknown" for a missing city or province);
* numbers are cast safely: a value that is not a number (or, for whole-number columns, not a whole
  number: ``31.0`` is fine, ``31.5`` is not) becomes null and is counted;
* dates are parsed with an explicit format (``M/d/yyyy``; the lab's ``to_date`` without a format
  turns every one of them into null) and must be real dates: ``2/30/2013`` or ``2014/2/29 0:00:00``
  becomes null and is counted, never an error, whatever ANSI mode and parser policy are;
* rows without a member number are dropped, and duplicates of a member number are dropped keeping
  the first row in the file (the lab's ``dropDuplicates`` keeps an arbitrary one);
* the KPI table is ``generate.kpi_customer_value``, the one derivation of the lab's KPI query.

Everything is DataFrame API (Spark Connect safe): read functions return string columns, the
``*_gold_tables`` functions are lazy, and ``import_*`` writes the tables and returns a report.
A retail importer plugs into the same pieces (``read_csv_strings``, ``clean_strings``,
``parse_int``/``parse_double``/``parse_date``, ``first_per_key``, ``write_gold``, ``ImportReport``).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import tables as TB
from .errors import InputContractError
from .generate import kpi_customer_value
from .tables import conform

# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

PLACEHOLDERS = (".", "\u3002")  # "." and its full-width form, which the real member file also has
_ROW = "_source_row"  # file order, for "keep the first row"
_SPACE = r"[\s\u00a0\u3000]"  # trim also removes tabs, no-break and full-width spaces

# Explicit date formats: the shape a value must have, and which regex groups hold year, month, day.
# The parsed date must have that year, month and day, so a lenient (legacy) parser cannot roll
# 2/30/2013 over into March.
DATE_FORMATS = {
    "M/d/yyyy": (r"^(\d{1,2})/(\d{1,2})/(\d{4})$", (3, 1, 2)),
    "yyyy-M-d": (r"^(\d{4})-(\d{1,2})-(\d{1,2})$", (1, 2, 3)),
    "yyyy/M/d": (r"^(\d{4})/(\d{1,2})/(\d{1,2})$", (1, 2, 3)),
}
_INT_MIN, _INT_MAX = -(2 ** 31), 2 ** 31 - 1


def clean_string(c: Column) -> Column:
    """Trimmed; blank or a placeholder becomes null."""
    t = F.regexp_replace(c, rf"^{_SPACE}+|{_SPACE}+$", "")
    return F.when((t == "") | t.isin(*PLACEHOLDERS), F.lit(None).cast("string")).otherwise(t)


def clean_strings(df: DataFrame, columns: list[str]) -> DataFrame:
    return df.select(*[clean_string(F.col(c)).alias(c) if c in columns else F.col(c) for c in df.columns])


def parse_int(c: Column) -> Column:
    """A whole number (``42``, ``42.0``, ``4.2e1``) in int range, else null."""
    d = c.try_cast("decimal(38,10)")
    return F.when((d == F.floor(d)) & d.between(_INT_MIN, _INT_MAX), d.try_cast("int"))


def parse_double(c: Column) -> Column:
    """A finite number, else null (NaN compares above every double, so the range excludes it too)."""
    d = c.try_cast("double")
    return F.when(d.between(-sys.float_info.max, sys.float_info.max), d)


def parse_date(c: Column, fmt: str = "M/d/yyyy") -> Column:
    """A real calendar date written in *fmt* (a key of DATE_FORMATS), else null; never an error."""
    pattern, (yi, mi, di) = DATE_FORMATS[fmt]
    d = F.try_to_date(c, fmt)
    part = lambda i: F.regexp_extract(c, pattern, i).try_cast("int")  # noqa: E731
    return F.when(c.rlike(pattern) & (F.year(d) == part(yi)) & (F.month(d) == part(mi))
                  & (F.dayofmonth(d) == part(di)), d)


def parse_date_any(c: Column, formats: tuple[str, ...]) -> Column:
    return F.coalesce(*[parse_date(c, f) for f in formats])


def invalid(raw: Column, parsed: Column) -> Column:
    """1 where a value was given but did not parse: what the report counts as nulled."""
    return F.when(raw.isNotNull() & parsed.isNull(), 1).otherwise(0)


def first_per_key(df: DataFrame, key: str) -> DataFrame:
    """One row per non-null *key*: the first in file order (the ``_ROW`` column)."""
    from pyspark.sql.window import Window
    w = Window.partitionBy(key).orderBy(F.col(_ROW))
    return df.withColumn("_rank", F.row_number().over(w)).where("_rank = 1").drop("_rank")


def with_source_order(df: DataFrame) -> DataFrame:
    """Number the rows of a freshly read file in file order. monotonically_increasing_id grows with
    the partition index and the position inside it, and a file's splits are read in offset order, so
    it is deterministic for a given file; it must be applied directly to the read, before any shuffle."""
    return df.withColumn(_ROW, F.monotonically_increasing_id())


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith(("dbfs:", "abfss:", "s3:", "gs:"))


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[{")


def check_local_input(path: str, what: str) -> None:
    """Fail fast (before Spark reads anything) when a local input file does not exist."""
    if _is_local(path) and not _has_glob(path) and not os.path.exists(path):
        raise InputContractError(f"{path}: file not found; expected {what}")
    if _is_local(path) and os.path.isdir(path) and not os.listdir(path):
        raise InputContractError(f"{path}: empty folder; expected {what}")


def _not_found(e: Exception) -> bool:
    return "PATH_NOT_FOUND" in str(e) or "Path does not exist" in str(e)


def _norm(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().casefold()


def _columns_text(columns) -> str:
    return ", ".join(columns)


def read_csv_strings(spark: SparkSession, path: str, required: tuple[str, ...], what: str) -> DataFrame:
    """A CSV with a header, every value a string exactly as written (so ``.`` survives), the
    *required* columns under their canonical names (matched trimmed and case-insensitively), in that
    order, plus ``_ROW``. A missing file or required column raises InputContractError."""
    check_local_input(path, what)
    try:
        header = spark.read.option("header", True).csv(path).columns
    except AnalysisException as e:
        if _not_found(e):
            raise InputContractError(f"{path}: file not found; expected {what}") from None
        raise
    if not header:
        raise InputContractError(f"{path}: no header row; expected {what} with columns {_columns_text(required)}")
    by_norm = {_norm(c): c for c in required}
    names, seen = [], set()
    for i, col in enumerate(header):
        canonical = by_norm.get(_norm(col))
        if canonical is None or canonical in seen:
            names.append(f"_extra_{i}")
        else:
            names.append(canonical)
            seen.add(canonical)
    missing = [c for c in required if c not in seen]
    if missing:
        raise InputContractError(
            f"{path}: column(s) {_columns_text(missing)} missing from the header; expected {what} with "
            f"columns {_columns_text(required)}; the header has: {_columns_text(header)}")
    # Positional schema of strings built from the file's own header: no inference, no casting.
    schema = T.StructType([T.StructField(n, T.StringType()) for n in names])
    df = (spark.read.schema(schema).option("header", True).option("enforceSchema", True)
          .option("mode", "PERMISSIVE").csv(path))
    return with_source_order(df).select(*required, _ROW)


def read_json_strings(spark: SparkSession, path: str, required: tuple[str, ...], what: str) -> DataFrame:
    """A JSON file (one array, as the lab writes it, or JSON lines), the *required* fields as strings
    (numbers keep their text) under their canonical names, plus ``_ROW``."""
    check_local_input(path, what)
    try:
        first = spark.read.text(path).where(F.trim("value") != "").select(F.trim("value").alias("v")).first()
    except AnalysisException as e:
        if _not_found(e):
            raise InputContractError(f"{path}: file not found; expected {what}") from None
        raise
    if first is None:
        raise InputContractError(f"{path}: empty file; expected {what} with fields {_columns_text(required)}")
    multi_line = first.v.startswith("[")
    found = spark.read.option("multiLine", multi_line).json(path).columns
    if found == ["_corrupt_record"]:
        raise InputContractError(f"{path}: not valid JSON; expected {what} with fields {_columns_text(required)}")
    by_norm = {_norm(c): c for c in found}
    missing = [c for c in required if _norm(c) not in by_norm]
    if missing:
        raise InputContractError(
            f"{path}: field(s) {_columns_text(missing)} missing; expected {what} with fields "
            f"{_columns_text(required)}; the file has: {_columns_text(c for c in found if c != '_corrupt_record')}")
    actual = [by_norm[_norm(c)] for c in required]
    schema = T.StructType([T.StructField(a, T.StringType()) for a in actual])
    df = spark.read.schema(schema).option("multiLine", multi_line).json(path)
    return with_source_order(df).select(*[F.col(f"`{a}`").alias(c) for a, c in zip(actual, required)], _ROW)


@dataclass
class SourceReport:
    """What happened to one input file's rows."""
    name: str                      # e.g. "members", "transactions"
    path: str
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)         # reason -> rows dropped
    invalid_dates: dict[str, int] = field(default_factory=dict)   # column -> values nulled
    invalid_values: dict[str, int] = field(default_factory=dict)  # column -> values nulled (numbers)
    date_values: dict[str, int] = field(default_factory=dict)     # column -> values present (dates)
    nulls: dict[str, int] = field(default_factory=dict)           # label -> null count in the output


@dataclass
class ImportReport:
    sources: list[SourceReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)  # table -> rows
    seconds: float = 0.0

    def source(self, name: str) -> SourceReport:
        return next(s for s in self.sources if s.name == name)

    def lines(self) -> list[str]:
        out = ["Import report"]
        for s in self.sources:
            out.append(f"  {s.name}: {s.path}")
            out.append(f"    rows read: {s.rows_read:,}")
            for reason, n in s.dropped.items():
                out.append(f"    {reason}: {n:,}")
            if s.invalid_dates:
                out.append("    invalid dates nulled: " + ", ".join(f"{c} {n:,}" for c, n in s.invalid_dates.items()))
            bad = {c: n for c, n in s.invalid_values.items() if n}
            out.append("    invalid numbers nulled: " + (", ".join(f"{c} {n:,}" for c, n in bad.items()) or "none"))
            for label, n in s.nulls.items():
                out.append(f"    {label}: {n:,}")
        out.extend(f"  {note}" for note in self.notes)
        out.append("  rows written: " + ", ".join(f"{t} {n:,}" for t, n in self.written.items()))
        out.append(f"  done in {self.seconds:.1f} s")
        return out


def _counts(df: DataFrame, exprs: dict[str, Column]) -> dict[str, int]:
    """Several counts in one pass: name -> sum of a 0/1 column."""
    row = df.agg(*[F.coalesce(F.sum(e), F.lit(0)).alias(f"c{i}") for i, e in enumerate(exprs.values())]).first()
    return {name: int(row[f"c{i}"]) for i, name in enumerate(exprs)}


def write_gold(spark: SparkSession, tables: dict[str, DataFrame], where: TB.Location,
               log=print) -> dict[str, int]:
    """Write the four Gold tables (Delta, overwrite, schema replaced); rows per table, read back."""
    frames = {name: conform(tables[name], TB.INPUT_SCHEMAS[name]) for name in TB.GOLD_INPUTS}
    return TB.write_tables(spark, frames, where, log=log)


# ---------------------------------------------------------------------------------------------
# The airline lab: flight.csv (+ customer_transactions.json)
# ---------------------------------------------------------------------------------------------

AIRLINE_COLUMNS = (
    "MEMBER_NO", "FFP_DATE", "FIRST_FLIGHT_DATE", "GENDER", "FFP_TIER", "WORK_CITY", "WORK_PROVINCE",
    "WORK_COUNTRY", "AGE", "LOAD_TIME", "FLIGHT_COUNT", "BP_SUM", "SUM_YR_1", "SUM_YR_2", "SEG_KM_SUM",
    "LAST_FLIGHT_DATE", "LAST_TO_END", "AVG_INTERVAL", "MAX_INTERVAL", "EXCHANGE_COUNT", "avg_discount",
    "Points_Sum", "Point_NotFlight",
)
AIRLINE_WHAT = "the airline member file (the lab's flight.csv, 23 columns)"
AIRLINE_DATE_FORMAT = "M/d/yyyy"
AIRLINE_DATES = ("FFP_DATE", "FIRST_FLIGHT_DATE", "LAST_FLIGHT_DATE", "LOAD_TIME")
AIRLINE_INTS = ("MEMBER_NO", "FFP_TIER", "AGE", "FLIGHT_COUNT", "BP_SUM", "SEG_KM_SUM", "LAST_TO_END",
                "MAX_INTERVAL", "EXCHANGE_COUNT", "Points_Sum", "Point_NotFlight")
AIRLINE_DOUBLES = ("SUM_YR_1", "SUM_YR_2", "AVG_INTERVAL", "avg_discount")

# Source column -> Gold column (DESIGN.md; the lab's Gold notebook)
_DIM_MAP = {"MEMBER_NO": "customer_key", "GENDER": "gender", "AGE": "age", "FFP_TIER": "loyalty_tier",
            "FFP_DATE": "loyalty_join_date", "FIRST_FLIGHT_DATE": "first_flight_date", "WORK_CITY": "city",
            "WORK_PROVINCE": "province", "WORK_COUNTRY": "country"}
_FLIGHTS_MAP = {"MEMBER_NO": "customer_key", "FLIGHT_COUNT": "total_flights", "BP_SUM": "base_points",
                "SUM_YR_1": "year_1_flights", "SUM_YR_2": "year_2_flights", "SEG_KM_SUM": "total_km_flown",
                "AVG_INTERVAL": "avg_flight_interval_days", "MAX_INTERVAL": "max_flight_interval_days",
                "LAST_TO_END": "days_since_last_flight", "EXCHANGE_COUNT": "exchange_count",
                "avg_discount": "avg_discount_rate", "Points_Sum": "total_loyalty_points",
                "Point_NotFlight": "non_flight_points", "LAST_FLIGHT_DATE": "last_flight_date"}

# The lab's customer_transactions.json: the fields its Gold layer uses (it also has customer_name, email)
TRANSACTION_FIELDS = ("transaction_id", "customer_id", "amount", "purchase_date", "status", "region",
                      "payment_method")
TRANSACTIONS_WHAT = "the lab's transactions JSON (customer_transactions.json)"
TRANSACTION_DATE_FORMATS = ("yyyy-M-d", "M/d/yyyy", "yyyy/M/d")  # the lab's three, digits 1 or 2 wide


def _airline_parsed(c: str) -> Column:
    col = F.col(c)
    if c in AIRLINE_DATES:
        return parse_date(col, AIRLINE_DATE_FORMAT)
    if c in AIRLINE_INTS:
        return parse_int(col)
    if c in AIRLINE_DOUBLES:
        return parse_double(col)
    return col


def read_airline_csv(spark: SparkSession, path: str) -> DataFrame:
    """The lab's member file (plain or gzipped CSV): the 23 columns as written, as strings."""
    return read_csv_strings(spark, path, AIRLINE_COLUMNS, AIRLINE_WHAT)


def read_lab_transactions(spark: SparkSession, path: str) -> DataFrame:
    """The lab's transactions JSON: TRANSACTION_FIELDS as strings."""
    return read_json_strings(spark, path, TRANSACTION_FIELDS, TRANSACTIONS_WHAT)


def _ordered(df: DataFrame) -> DataFrame:
    return df if _ROW in df.columns else with_source_order(df)


def airline_members(raw_df: DataFrame) -> DataFrame:
    """Silver: cleaned strings, one row per valid member number (the first in the file), plus the
    parsed member number as ``_key``. Still strings, so the report can count what fails to parse."""
    df = clean_strings(_ordered(raw_df), list(AIRLINE_COLUMNS))
    df = df.withColumn("_key", parse_int(F.col("MEMBER_NO"))).where(F.col("_key").isNotNull())
    return first_per_key(df, "_key")


def airline_silver(raw_df: DataFrame) -> DataFrame:
    """Silver, typed: the 23 columns with their types (dates as DateType), one row per member."""
    return airline_members(raw_df).select(*[_airline_parsed(c).alias(c) for c in AIRLINE_COLUMNS])


def lab_transactions_silver(tx_raw: DataFrame) -> DataFrame:
    """The lab's transaction cleaning: rows without a customer dropped, status lower case, region
    upper case, payment methods unified, amount and date parsed, duplicate transaction ids dropped
    (the first in the file is kept). A customer id that is not a member number gives a null key."""
    df = clean_strings(_ordered(tx_raw), list(TRANSACTION_FIELDS)).where(F.col("customer_id").isNotNull())
    pay = F.lower(F.col("payment_method"))
    df = df.select(
        "transaction_id",
        parse_int(F.col("customer_id")).alias("customer_key"),
        parse_date_any(F.col("purchase_date"), TRANSACTION_DATE_FORMATS).alias("transaction_date"),
        parse_double(F.col("amount")).alias("transaction_amount"),
        F.lower("status").alias("status"),
        F.upper("region").alias("region"),
        F.when(pay.like("%credit%card%"), "credit_card").when(pay.like("%debit%card%"), "debit_card")
         .when(pay.like("%paypal%"), "paypal").when(pay.like("%wire%transfer%"), "wire_transfer")
         .otherwise(pay).alias("payment_method"),
        _ROW,
    )
    with_id = first_per_key(df.where(F.col("transaction_id").isNotNull()), "transaction_id")
    return with_id.unionByName(df.where(F.col("transaction_id").isNull())).drop(_ROW)


def airline_gold_tables(raw_df: DataFrame, transactions_df: DataFrame | None = None) -> dict[str, DataFrame]:
    """The four Gold tables from the raw member file (and the raw transactions JSON), lazily.

    ``load_timestamp`` is the file's observation window end: the latest valid LOAD_TIME, at midnight
    (the lab uses the wall clock; this keeps reruns identical)."""
    spark = raw_df.sparkSession
    silver = airline_silver(raw_df)
    load_ts = silver.agg(F.max("LOAD_TIME").cast("timestamp").alias("load_timestamp"))
    members = silver.crossJoin(load_ts)
    dim = members.select(
        *[(F.date_format(F.col(src), AIRLINE_DATE_FORMAT) if src in AIRLINE_DATES else F.col(src)).alias(dst)
          for src, dst in _DIM_MAP.items()], "load_timestamp")
    flights = members.select(*[F.col(src).alias(dst) for src, dst in _FLIGHTS_MAP.items()], "load_timestamp")
    dim = conform(dim, TB.INPUT_SCHEMAS[TB.DIM_CUSTOMERS])
    flights = conform(flights, TB.INPUT_SCHEMAS[TB.FACT_FLIGHTS])
    if transactions_df is None:
        tx = spark.createDataFrame([], TB.INPUT_SCHEMAS[TB.FACT_TRANSACTIONS])
    else:
        tx = conform(lab_transactions_silver(transactions_df).crossJoin(load_ts),
                     TB.INPUT_SCHEMAS[TB.FACT_TRANSACTIONS])
    return {
        TB.DIM_CUSTOMERS: dim,
        TB.FACT_FLIGHTS: flights,
        TB.FACT_TRANSACTIONS: tx,
        TB.KPI_CUSTOMER_VALUE: kpi_customer_value(dim, flights, tx),
    }


def airline_member_report(raw_df: DataFrame, path: str = "") -> SourceReport:
    """Rows read, rows dropped (no member number, duplicates), values nulled, null ages: two passes."""
    raw = clean_strings(_ordered(raw_df), ["MEMBER_NO"]).withColumn("_key", parse_int(F.col("MEMBER_NO")))
    row = raw.agg(F.count(F.lit(1)).alias("n"), F.count("_key").alias("keyed"),
                  F.countDistinct("_key").alias("members")).first()
    members = airline_members(raw_df)
    typed = AIRLINE_DATES + AIRLINE_INTS + AIRLINE_DOUBLES
    checks = {c: invalid(F.col(c), _airline_parsed(c)) for c in typed}
    checks["_null_age"] = F.when(_airline_parsed("AGE").isNull(), 1).otherwise(0)
    checks.update({f"_present_{c}": F.when(F.col(c).isNotNull(), 1).otherwise(0) for c in AIRLINE_DATES})
    got = _counts(members, checks)
    return SourceReport(
        name="members", path=path, rows_read=row["n"],
        dropped={"rows without a valid MEMBER_NO dropped": row["n"] - row["keyed"],
                 "duplicate MEMBER_NO rows dropped (first row in the file kept)": row["keyed"] - row["members"]},
        invalid_dates={c: got[c] for c in AIRLINE_DATES},
        invalid_values={c: got[c] for c in typed if c not in AIRLINE_DATES},
        nulls={"null ages": got["_null_age"]},
        date_values={c: got[f"_present_{c}"] for c in AIRLINE_DATES},
    )


def check_date_format(report: SourceReport, members: DataFrame, fmt: str = AIRLINE_DATE_FORMAT) -> None:
    """A few bad dates are nulled and counted (the real file has 2014/2/29); a column where most values
    do not parse is in another format, and importing it would null them all: stop, naming it."""
    for c, present in report.date_values.items():
        bad = report.invalid_dates.get(c, 0)
        if present and bad * 2 > present:
            examples = [r[0] for r in members.where(invalid(F.col(c), _airline_parsed(c)) == 1)
                        .select(c).limit(3).collect()]
            raise InputContractError(
                f"{report.path}: column {c}: {bad:,} of {present:,} values are not dates in the {fmt} format "
                f"(e.g. {', '.join(repr(e) for e in examples)}); nothing was written")


def lab_transactions_report(tx_raw: DataFrame, members: DataFrame, path: str = "") -> SourceReport:
    """Rows read and dropped, dates and amounts nulled, customers that are not members."""
    df = clean_strings(_ordered(tx_raw), list(TRANSACTION_FIELDS))
    row = df.agg(F.count(F.lit(1)).alias("n"), F.count("customer_id").alias("with_customer")).first()
    kept = lab_transactions_silver(tx_raw)
    # Count parse failures on the rows that are kept: re-parse their cleaned strings by transaction id.
    strings = first_per_key(df.where(F.col("customer_id").isNotNull() & F.col("transaction_id").isNotNull()),
                            "transaction_id").unionByName(
        df.where(F.col("customer_id").isNotNull() & F.col("transaction_id").isNull()))
    got = _counts(strings, {
        "purchase_date": invalid(F.col("purchase_date"),
                                 parse_date_any(F.col("purchase_date"), TRANSACTION_DATE_FORMATS)),
        "amount": invalid(F.col("amount"), parse_double(F.col("amount"))),
        "customer_id": invalid(F.col("customer_id"), parse_int(F.col("customer_id"))),
    })
    n_kept = kept.count()
    unknown = kept.join(members.select(F.col("customer_key")), "customer_key", "left_anti").count()
    return SourceReport(
        name="transactions", path=path, rows_read=row["n"],
        dropped={"rows without a customer_id dropped": row["n"] - row["with_customer"],
                 "duplicate transaction_id rows dropped (first row in the file kept)":
                     row["with_customer"] - n_kept},
        invalid_dates={"purchase_date": got["purchase_date"]},
        invalid_values={"amount": got["amount"]},
        nulls={"customer ids that are not a member number (kept, customer_key null)": got["customer_id"],
               "transactions of customers not in the member file (incl. null keys)": unknown},
    )


def import_airline(spark: SparkSession, csv_path: str, where: TB.Location, transactions: str | None = None,
                   log=print) -> ImportReport:
    """Read the lab's member file (and transactions JSON), build the four Gold tables, write them to
    *where*, print progress and the report. Bad input raises InputContractError before any write."""
    start = time.perf_counter()
    check_local_input(csv_path, AIRLINE_WHAT)
    if transactions:
        check_local_input(transactions, TRANSACTIONS_WHAT)
    log(f"Reading {csv_path}")
    raw = read_airline_csv(spark, csv_path)
    tx_raw = None
    if transactions:
        log(f"Reading {transactions}")
        tx_raw = read_lab_transactions(spark, transactions)
    tables = airline_gold_tables(raw, tx_raw)
    log("Checking the rows")
    report = ImportReport()
    report.sources.append(airline_member_report(raw, csv_path))
    check_date_format(report.source("members"), airline_members(raw))
    if tx_raw is not None:
        report.sources.append(lab_transactions_report(tx_raw, tables[TB.DIM_CUSTOMERS], transactions))
    else:
        report.notes.append("transactions: none given (fact_transactions is empty; total_spent 0 for everyone)")
    log(f"Writing the Gold tables into {where.schema_name}")
    report.written = write_gold(spark, tables, where, log=log)
    report.seconds = time.perf_counter() - start
    for line in report.lines():
        log(line)
    return report


# ---------------------------------------------------------------------------------------------
# The UCI "Online Retail" file -> retail_transactions (the retail recipe)
# ---------------------------------------------------------------------------------------------
#
# One row per invoice line: InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
# CustomerID, Country. What is kept, and why:
#
# * rows without a CustomerID are excluded (RFM needs a customer; a quarter of the real file) and counted;
# * cancellations (InvoiceNo "C...", negative Quantity) are kept: they net against revenue downstream;
# * UnitPrice 0 is excluded: it adds no revenue, and an invoice made only of free lines (samples, manual
#   fixes) would count as a purchase; UnitPrice < 0 is excluded too ("Adjust bad debt" bookings are not
#   purchases); Quantity 0 is excluded (not a line of anything);
# * a value that is there but does not parse (a date, a number, a CustomerID that is not a whole number)
#   excludes its row, counted by column: never a silent null. Each excluded row is counted once, under
#   the first reason in RETAIL_EXCLUSIONS;
# * product_id is StockCode; category, discount and channel are null (the file has none);
# * retail_customers is not written: the file has no customer attributes, and the recipe treats that
#   table as optional. One left in the schema by an earlier import or demo is reported, not dropped.

RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                  "Country")
RETAIL_WHAT = "the UCI Online Retail file (8 columns: InvoiceNo ... Country)"
# InvoiceDate: the CSV export's ISO form or the original xlsx's US form (minutes only); seconds optional in
# both. Regex groups: year, month, day (their positions), then hour, minute, second.
RETAIL_TIMESTAMP_FORMATS = {
    "yyyy-MM-dd HH:mm:ss": (r"^(\d{4})-(\d{1,2})-(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?$", (1, 2, 3)),
    "M/d/yyyy H:mm": (r"^(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?$", (3, 1, 2)),
}
_LONG_MAX = 2 ** 63 - 1

# Exclusion reasons in the order they are checked (a row counts under the first that applies).
RETAIL_EXCLUSIONS = {
    "no_customer": "rows without CustomerID excluded",
    "bad_customer": "rows whose CustomerID is not a whole number excluded",
    "no_invoice": "rows without InvoiceNo excluded",
    "bad_date": "rows without a valid InvoiceDate excluded",
    "bad_quantity": "rows without a whole-number Quantity excluded",
    "bad_price": "rows without a numeric UnitPrice excluded",
    "zero_price": "rows with UnitPrice 0 excluded (no revenue)",
    "negative_price": "rows with UnitPrice < 0 excluded (adjustments, not purchases)",
    "zero_quantity": "rows with Quantity 0 excluded",
}


def parse_long(c: Column) -> Column:
    """A whole number (``17850``, ``17850.0``) in long range, else null."""
    d = c.try_cast("decimal(38,10)")
    return F.when((d == F.floor(d)) & d.between(-_LONG_MAX - 1, _LONG_MAX), d.try_cast("long"))


def parse_timestamp(c: Column, fmt: str) -> Column:
    """A real date and time written as *fmt* (a key of RETAIL_TIMESTAMP_FORMATS), else null; never an error
    (try_make_timestamp rejects 2/30 or 25:00 rather than rolling them over). A wall-clock time in the
    session time zone, as to_timestamp reads one."""
    pattern, (yi, mi, di) = RETAIL_TIMESTAMP_FORMATS[fmt]
    part = lambda i: F.regexp_extract(c, pattern, i).try_cast("int")  # noqa: E731
    seconds = F.coalesce(part(6), F.lit(0))  # "" when absent: try_cast gives null
    return F.when(c.rlike(pattern), F.try_make_timestamp(part(yi), part(mi), part(di), part(4), part(5), seconds))


def parse_retail_timestamp(c: Column) -> Column:
    return F.coalesce(*[parse_timestamp(c, f) for f in RETAIL_TIMESTAMP_FORMATS])


def read_retail_csv(spark: SparkSession, path: str) -> DataFrame:
    """The UCI Online Retail file (plain or gzipped CSV): its 8 columns as written, as strings."""
    return read_csv_strings(spark, path, RETAIL_COLUMNS, RETAIL_WHAT)


def _let(value: Column, body) -> Column:
    """``body(value)`` with *value* computed once per row. A one-element transform binds it to a lambda
    variable, which Spark neither inlines into every use nor compiles (higher-order functions are
    interpreted). Without it, the row filter pushed down through the parsing repeated every regex of
    every column several times, and the write's generated code outgrew the JVM's 64 KB method limit."""
    return F.element_at(F.transform(F.array(value), body), 1)


def retail_parsed(raw_df: DataFrame) -> DataFrame:
    """Every row, cleaned, with its parsed values (``_customer``, ``_ts``, ``_quantity``, ``_price``: the
    source names differ only in case) and ``_reason``: its exclusion (a RETAIL_EXCLUSIONS key), or null
    when it is kept."""
    used = [c for c in RETAIL_COLUMNS if c != "Description"]  # not written: not worth its regexes
    cleaned = F.struct(*[clean_string(F.col(c)).alias(c) for c in used])
    parsed = _let(cleaned, lambda r: F.struct(
        *[r[c].alias(c) for c in used],
        parse_long(r["CustomerID"]).alias("_customer"),
        parse_retail_timestamp(r["InvoiceDate"]).alias("_ts"),
        parse_int(r["Quantity"]).alias("_quantity"),
        parse_double(r["UnitPrice"]).alias("_price"),
    ))
    fields = [*used, "_customer", "_ts", "_quantity", "_price"]
    row = _let(parsed, lambda p: F.struct(*[p[c].alias(c) for c in fields], (
        F.when(p["CustomerID"].isNull(), "no_customer")
        .when(p["_customer"].isNull(), "bad_customer")
        .when(p["InvoiceNo"].isNull(), "no_invoice")
        .when(p["_ts"].isNull(), "bad_date")
        .when(p["_quantity"].isNull(), "bad_quantity")
        .when(p["_price"].isNull(), "bad_price")
        .when(p["_price"] == 0, "zero_price")
        .when(p["_price"] < 0, "negative_price")
        .when(p["_quantity"] == 0, "zero_quantity")).alias("_reason")))
    return raw_df.select(row.alias("_row")).select("_row.*")


def _kept_rows(parsed: DataFrame) -> DataFrame:
    """The rows without an exclusion reason. An explode of a 0- or 1-row array rather than where(): Spark
    pushes a where() down through the parsing and would parse every row twice (filter, then output)."""
    row = F.struct(*[F.col(c) for c in parsed.columns])
    return parsed.select(F.explode(F.filter(F.array(row), lambda r: r["_reason"].isNull())).alias("_row")) \
        .select("_row.*")


def retail_transactions_table(raw_df: DataFrame) -> DataFrame:
    """retail_transactions from the raw file, lazily: the kept rows in the recipe's schema."""
    kept = _kept_rows(retail_parsed(raw_df))
    return conform(kept.select(
        F.col("InvoiceNo").alias("invoice_id"), F.col("_customer").alias("customer_id"),
        F.col("_ts").alias("invoice_ts"), F.col("StockCode").alias("product_id"),
        F.lit(None).cast("string").alias("category"), F.col("_quantity").alias("quantity"),
        F.col("_price").alias("unit_price"),
        F.lit(None).cast("double").alias("discount"), F.col("Country").alias("country"),
        F.lit(None).cast("string").alias("channel"),
    ), TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS])


@dataclass
class RetailImportReport(ImportReport):
    """What import_retail did with the file's rows (``written``, ``notes``, ``seconds`` as ImportReport)."""
    path: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    excluded: dict[str, int] = field(default_factory=dict)  # RETAIL_EXCLUSIONS key -> rows
    kept: dict[str, int] = field(default_factory=dict)      # label -> rows among the kept ones
    in_file: dict[str, int] = field(default_factory=dict)   # label -> rows in the whole file, kept or not
    customers: int = 0
    invoices: int = 0
    cancellation_invoices: int = 0
    countries: int = 0
    first_ts: object = None                                 # earliest and latest kept invoice_ts
    last_ts: object = None
    dates_present: int = 0                                  # InvoiceDate values given, and those not parsed
    dates_bad: int = 0

    def lines(self) -> list[str]:
        out = ["Import report", f"  UCI Online Retail: {self.path}", f"    rows read: {self.rows_read:,}"]
        out.extend(f"    {RETAIL_EXCLUSIONS[k]}: {n:,}" for k, n in self.excluded.items() if n)
        out.append(f"    rows kept: {self.rows_kept:,}")
        out.extend(f"    {label}: {n:,}" for label, n in self.kept.items())
        out.append(f"    customers {self.customers:,}, invoices {self.invoices:,} "
                   f"(of which {self.cancellation_invoices:,} cancellations), countries {self.countries:,}")
        if self.first_ts is not None:
            out.append(f"    invoice dates {self.first_ts} .. {self.last_ts}")
        out.append("    in the whole file: " + ", ".join(f"{label} {n:,}" for label, n in self.in_file.items()))
        out.extend(f"  {note}" for note in self.notes)
        out.append("  rows written: " + ", ".join(f"{t} {n:,}" for t, n in self.written.items()))
        out.append(f"  done in {self.seconds:.1f} s")
        return out


def retail_report(raw_df: DataFrame, path: str = "") -> RetailImportReport:
    """Every count of the report in one pass over the file."""
    df = retail_parsed(raw_df)
    keep = F.col("_reason").isNull()
    is_c = F.coalesce(F.upper(F.col("InvoiceNo")).startswith("C"), F.lit(False))
    negative = F.coalesce(F.col("_quantity") < 0, F.lit(False))
    flags = {f"x_{k}": F.col("_reason") == k for k in RETAIL_EXCLUSIONS}
    flags.update({
        "k_c": keep & is_c, "k_neg_not_c": keep & negative & ~is_c,
        "f_c": is_c, "f_neg": negative,
        "f_zero": F.coalesce(F.col("_price") == 0, F.lit(False)),
        "f_negp": F.coalesce(F.col("_price") < 0, F.lit(False)),
        "f_no_customer": F.col("CustomerID").isNull(),
    })
    row = df.agg(
        F.count(F.lit(1)).alias("n"), F.count_if(keep).alias("kept"),
        *[F.count_if(e).alias(k) for k, e in flags.items()],
        F.countDistinct(F.when(keep, F.col("_customer"))).alias("customers"),
        F.countDistinct(F.when(keep, F.col("InvoiceNo"))).alias("invoices"),
        F.countDistinct(F.when(keep & is_c, F.col("InvoiceNo"))).alias("c_invoices"),
        F.countDistinct(F.when(keep, F.col("Country"))).alias("countries"),
        F.min(F.when(keep, F.col("_ts"))).alias("first"), F.max(F.when(keep, F.col("_ts"))).alias("last"),
        F.count("InvoiceDate").alias("dates_present"),
        F.count_if(F.col("InvoiceDate").isNotNull() & F.col("_ts").isNull()).alias("dates_bad"),
    ).first()
    report = RetailImportReport(
        path=path, rows_read=row["n"], rows_kept=row["kept"],
        excluded={k: row[f"x_{k}"] for k in RETAIL_EXCLUSIONS},
        kept={"cancellation lines kept (InvoiceNo C..., they net against revenue)": row["k_c"],
              "negative quantities kept without a C invoice (returns, netted too)": row["k_neg_not_c"]},
        in_file={"rows without CustomerID": row["f_no_customer"], "cancellation lines": row["f_c"],
                 "negative quantities": row["f_neg"], "UnitPrice 0": row["f_zero"], "UnitPrice < 0": row["f_negp"]},
        customers=row["customers"], invoices=row["invoices"], cancellation_invoices=row["c_invoices"],
        countries=row["countries"], first_ts=row["first"], last_ts=row["last"],
        dates_present=row["dates_present"], dates_bad=row["dates_bad"])
    return report


def check_retail_dates(report: RetailImportReport, raw_df: DataFrame) -> None:
    """A few bad InvoiceDate values are excluded and counted; when most do not parse the file is in
    another format and importing it would keep almost nothing: stop, naming the column."""
    present, bad = report.dates_present, report.dates_bad
    if present and bad * 2 > present:
        examples = [r[0] for r in retail_parsed(raw_df).where(F.col("InvoiceDate").isNotNull() & F.col("_ts").isNull())
                    .select("InvoiceDate").limit(3).collect()]
        raise InputContractError(
            f"{report.path}: column InvoiceDate: {bad:,} of {present:,} values are not dates in the formats "
            f"{' or '.join(RETAIL_TIMESTAMP_FORMATS)} (e.g. {', '.join(repr(e) for e in examples)}); "
            f"nothing was written")


def import_retail(spark: SparkSession, csv_path: str, where: TB.Location,
                  log=print) -> RetailImportReport:
    """Read the UCI Online Retail file (CSV or CSV.gz), write retail_transactions to *where*, print
    progress and the report. Bad input raises InputContractError before any write."""
    start = time.perf_counter()
    check_local_input(csv_path, RETAIL_WHAT)
    log(f"Reading {csv_path}")
    raw = read_retail_csv(spark, csv_path)
    log("Checking the rows")
    report = retail_report(raw, csv_path)
    check_retail_dates(report, raw)
    if report.rows_kept == 0:
        reasons = ", ".join(f"{RETAIL_EXCLUSIONS[k]} {n:,}" for k, n in report.excluded.items() if n) or "none"
        raise InputContractError(
            f"{csv_path}: no row can be imported into {TB.RETAIL_TRANSACTIONS} ({report.rows_read:,} rows read; "
            f"{reasons}); expected lines with a CustomerID, a date, a quantity and a positive UnitPrice; "
            f"nothing was written")
    if TB.table_version(spark, TB.RETAIL_CUSTOMERS, where) is not None:
        report.notes.append(
            f"note: {where.name(TB.RETAIL_CUSTOMERS)} exists and was left as it is; it "
            f"describes other customers than this file (which has no customer attributes): drop it, or "
            f"import into another schema")
    log(f"Writing {TB.RETAIL_TRANSACTIONS} into {where.schema_name}")
    report.written = TB.write_tables(spark, {TB.RETAIL_TRANSACTIONS: retail_transactions_table(raw)}, where, log=log)
    report.seconds = time.perf_counter() - start
    for line in report.lines():
        log(line)
    return report
