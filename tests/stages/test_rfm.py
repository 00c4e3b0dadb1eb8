from datetime import date, datetime

import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from conftest import refuse_cache
from seglib import rfm as R
from seglib import tables as TB
from seglib.errors import InputContractError, ParameterError


# -- parameters (no JVM) -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,bins", [(4, 4), (5, 5), ("4", 4), (" 5 ", 5)])
def test_parse_rfm_bins(value, bins):
    assert R.parse_rfm_bins(value) == bins


@pytest.mark.parametrize("value", [3, 6, "", None, "four", 4.5, "4.0", True])
def test_bad_rfm_bins_names_the_parameter(value):
    with pytest.raises(ParameterError, match="rfm_bins"):
        R.parse_rfm_bins(value)


@pytest.mark.parametrize("value,day", [("", None), (None, None), ("  ", None), ("2024-04-01", date(2024, 4, 1)),
                                       (" 2011-12-10 ", date(2011, 12, 10)), (date(2024, 2, 29), date(2024, 2, 29))])
def test_parse_as_of(value, day):
    assert R.parse_as_of(value) == day


@pytest.mark.parametrize("value", ["2024-4-1", "01/04/2024", "2024-02-30", "tomorrow", 20240401,
                                   datetime(2024, 4, 1, 12)])
def test_bad_as_of_names_the_parameter(value):
    with pytest.raises(ParameterError, match="as_of"):
        R.parse_as_of(value)


@pytest.mark.parametrize("args,name", [((0, 1, 1, False, 4), "r_score"), ((5, 1, 1, False, 4), "r_score"),
                                       ((1, "3", 1, False, 5), "f_score"), ((1, 1, 6, False, 5), "m_score"),
                                       ((1, 1, 1, 1, 5), "one_purchase"), ((1, 1, 1, False, 3), "rfm_bins")])
def test_rule_segment_bad_arguments_name_the_parameter(args, name):
    with pytest.raises(ParameterError, match=name):
        R.rule_segment(*args)


def test_customer_rfm_bad_as_of_is_a_parameter_error(spark):
    tx = spark.createDataFrame([], TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS])
    with pytest.raises(ParameterError, match="as_of"):
        R.customer_rfm(tx, "2024-04-01")
    with pytest.raises(ParameterError, match="rfm_bins"):
        R.rfm_scores(tx, 3)


# -- the rule table (no JVM) ---------------------------------------------------------------------------

@pytest.mark.parametrize("bins", R.RFM_BINS)
def test_every_combination_matches_exactly_one_rule(bins):
    combos = R.all_score_combinations(bins)
    assert len(combos) == 2 * bins ** 3
    for combo in combos:
        found = R.matching_rules(*combo, bins)
        assert len(found) == 1, (combo, found)
        assert R.rule_segment(*combo, bins) in R.RFM_SEGMENTS


@pytest.mark.parametrize("bins", R.RFM_BINS)
def test_rule_order_does_not_matter(bins):
    """First match wins over any order of the table gives the same segment: the rules are exclusive."""
    orders = [R.RFM_RULES[::-1]] + [R.RFM_RULES[i:] + R.RFM_RULES[:i] for i in range(1, len(R.RFM_RULES))]
    for combo in R.all_score_combinations(bins):
        expected = R.rule_segment(*combo, bins)
        for order in orders:
            assert next(rule.segment for rule in order if rule.matches(*combo, bins)) == expected, combo


@pytest.mark.parametrize("bins", R.RFM_BINS)
def test_every_segment_is_reachable(bins):
    assert {R.rule_segment(*c, bins) for c in R.all_score_combinations(bins)} == set(R.RFM_SEGMENTS)


def test_segment_names():
    assert R.RFM_SEGMENTS == ("Champions", "Loyal", "Regular", "New Customers", "At Risk", "Churned")


@pytest.mark.parametrize("bins", R.RFM_BINS)
def test_segments_mean_what_they_say(bins):
    """The brief's meanings, checked on every combination (high = top two scores, low = bottom two)."""
    def high(s):
        return s >= bins - 1

    def low(s):
        return s <= 2

    for r, f, m, one in R.all_score_combinations(bins):
        seg = R.rule_segment(r, f, m, one, bins)
        if seg == R.NEW_CUSTOMERS:
            assert one and high(r)
        if seg == R.CHAMPIONS:
            assert high(r) and high(f) and high(m) and not one
        if seg == R.LOYAL:
            assert not low(r) and high(f) and not one
        if seg == R.AT_RISK:
            assert low(r) and (high(f) or high(m))
        if seg == R.CHURNED:
            assert low(r) and low(f) and not high(m)
        # and the other way round
        if one and high(r):
            assert seg == R.NEW_CUSTOMERS
        if not one and high(r) and high(f) and high(m):
            assert seg == R.CHAMPIONS
        if low(r) and (high(f) or high(m)):
            assert seg == R.AT_RISK
        if low(r) and low(f) and not high(m):
            assert seg == R.CHURNED


@pytest.mark.parametrize("bins", R.RFM_BINS)
@pytest.mark.parametrize("r,f,m,one,segment", [
    ("b", "b", "b", False, R.CHAMPIONS),
    ("b-1", "b-1", "b-1", False, R.CHAMPIONS),
    (1, 1, 1, False, R.CHURNED),
    (2, 2, 2, True, R.CHURNED),
    ("b", 1, 1, True, R.NEW_CUSTOMERS),
    ("b", "b", "b", True, R.NEW_CUSTOMERS),     # one purchase is new, however it scores
    (1, "b", "b", False, R.AT_RISK),
    (1, "b", 1, False, R.AT_RISK),              # used to buy often
    (2, 1, "b", True, R.AT_RISK),               # one big purchase, long ago
    ("b", "b", 1, False, R.LOYAL),
    ("b-1", "b", 2, False, R.LOYAL),
    ("b", 1, "b", False, R.REGULAR),            # recent repeat buyer, not often
    ("b", 2, 2, False, R.REGULAR),
])
def test_rule_intent(bins, r, f, m, one, segment):
    def score(x):
        return {"b": bins, "b-1": bins - 1}.get(x, x)
    assert R.rule_segment(score(r), score(f), score(m), one, bins) == segment


@pytest.mark.parametrize("r,f,m,one,segment", [
    (3, 5, 5, False, R.LOYAL),                  # middle recency but frequent
    (3, 1, 1, True, R.REGULAR),                 # one purchase, neither recent nor old
    (3, 3, 3, False, R.REGULAR),
    (1, 3, 3, False, R.REGULAR),                # old, middling: not churned (not low F), not at risk
    (1, 3, 5, False, R.AT_RISK),
])
def test_rule_intent_middle_band_bins_5(r, f, m, one, segment):
    assert R.rule_segment(r, f, m, one, 5) == segment


# -- RFM from transactions (Spark) ---------------------------------------------------------------------

def _line(invoice, customer, day, quantity, price):
    ts = None if day is None else datetime.fromisoformat(day + " 12:00:00")  # midday: no time-zone edge
    return (invoice, customer, ts, "P1", "cat", quantity, price, 0.0, "UK", "web")


LINES = [
    _line("A1", 1, "2024-01-10", 2, 5.0),       # customer 1: invoice A1 = 13.50
    _line("A1", 1, "2024-01-10", 1, 3.5),
    _line("A2", 1, "2024-03-01", 1, 20.0),      # invoice A2 = 20.00 + a free line
    _line("A2", 1, "2024-03-01", 1, 0.0),
    _line("CA2", 1, "2024-03-05", -1, 20.0),    # cancels A2's 20.00: nets, is not a purchase
    _line("A3", 1, None, 1, 100.0),             # no timestamp: left out
    _line("B1", 2, "2024-03-30", 3, 0.1),       # customer 2: one purchase, 0.30 (0.30000000000000004 in double)
    _line("CB9", 3, "2024-02-15", -2, 4.0),     # customer 3: only a cancellation, -8.00
    _line("D1", 4, "2024-03-20", 2, 10.0),      # customer 4: one purchase returned in full by a
    _line("D2", 4, "2024-03-25", -2, 10.0),     # negative quantity without a C invoice
    _line("X1", None, "2024-03-31", 1, 9.99),   # no customer: left out, but it is the last transaction
    _line("A9", None, "2024-01-05", 1, -5.0),   # no customer, negative price (a bad-debt adjustment)
]


@pytest.fixture(scope="module")
def transactions(spark):
    return spark.createDataFrame(LINES, TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS])


def _rows(df):
    return {r["customer_id"]: tuple(r[c] for c in R.RFM_COLUMNS[1:]) for r in df.collect()}


def test_customer_rfm_by_hand(transactions):
    as_of = R.default_as_of(transactions)
    assert as_of == date(2024, 4, 1)  # X1 on 2024-03-31 is the last line, customer or not
    rfm = R.customer_rfm(transactions)  # the default as_of
    assert dict(rfm.dtypes) == {"customer_id": "bigint", "recency_days": "int", "frequency": "bigint",
                                "monetary": "double", "first_purchase": "date", "last_purchase": "date"}
    d = date.fromisoformat
    assert _rows(rfm) == {
        # recency from A2 (2024-03-01: 31 days), not the later cancellation; A1 + A2 - CA2 = 13.50 + 20 - 20
        1: (31, 2, 13.5, d("2024-01-10"), d("2024-03-01")),
        2: (2, 1, 0.3, d("2024-03-30"), d("2024-03-30")),
        # only a cancellation: frequency 0, dated by it (2024-02-15 -> 14 + 1 + 31 days)
        3: (46, 0, -8.0, d("2024-02-15"), d("2024-02-15")),
        4: (12, 1, 0.0, d("2024-03-20"), d("2024-03-20")),
    }
    report = R.rfm_report(transactions, as_of)
    assert report == R.RfmReport(as_of=as_of, rows=12, rows_without_customer=2, rows_without_date=1,
                                 rows_after_as_of=0, cancellation_rows=3, zero_price_rows=1, negative_price_rows=1,
                                 customers=4, customers_only_cancellations=1, customers_net_revenue_not_positive=2)
    assert "4 customers from 12 invoice lines" in report.lines()[0]


def test_as_of_leaves_later_lines_out(transactions):
    as_of = date(2024, 3, 15)
    assert _rows(R.customer_rfm(transactions, as_of)) == {
        1: (14, 2, 13.5, date(2024, 1, 10), date(2024, 3, 1)),
        3: (29, 0, -8.0, date(2024, 2, 15), date(2024, 2, 15)),
    }
    report = R.rfm_report(transactions, as_of)
    assert (report.rows_after_as_of, report.customers, report.customers_only_cancellations,
            report.customers_net_revenue_not_positive) == (4, 2, 1, 1)  # B1, D1, D2, X1 are later


@pytest.mark.parametrize("as_of,no_cache", [(None, False), (date(2024, 3, 15), False), (None, True)])
def test_rfm_and_report_from_one_grouping_equal_the_two_apart(transactions, as_of, no_cache, monkeypatch):
    """What the features step uses: one cached grouping gives the same rows and report as the two calls;
    so does the grouping computed twice where the compute has no cache (Databricks serverless)."""
    if no_cache:
        monkeypatch.setattr(type(transactions), "cache", refuse_cache)
    rfm, report = R.customer_rfm_and_report(transactions, as_of)
    assert _rows(rfm) == _rows(R.customer_rfm(transactions, as_of))
    assert report == R.rfm_report(transactions, as_of)
    assert report.as_of == (as_of or date(2024, 4, 1))


def test_missing_column_names_the_table(spark):
    tx = spark.createDataFrame([("A1", 1)], "invoice_id string, customer_id long")
    with pytest.raises(InputContractError, match=r"retail_transactions.*invoice_ts, quantity, unit_price"):
        R.customer_rfm(tx, date(2024, 1, 1))
    with pytest.raises(InputContractError, match=r"scored customer RFM.*r_score"):
        R.segment_rfm(tx, 4)


def test_default_as_of_of_an_empty_table(spark):
    with pytest.raises(InputContractError, match="retail_transactions.*invoice_ts"):
        R.default_as_of(spark.createDataFrame([], TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS]))


# -- scores (Spark) ------------------------------------------------------------------------------------

RFM_DDL = "customer_id long, recency_days int, frequency long, monetary double"


def test_scores_ties_by_hand(spark):
    # bins 4, n = 5: score = min(4, 1 + floor(4 * below / 4)) = min(4, 1 + below)
    rfm = spark.createDataFrame([(1, 5, 1, 10.0), (2, 5, 1, 20.0), (3, 30, 2, 20.0), (4, 100, 5, 20.0),
                                 (5, 100, 5, 50.0)], RFM_DDL)
    # below: R counts customers with more days; F and M those with less
    assert R.rfm_cut_points(rfm, 4) == {"r_score": [30, 30, 5], "f_score": [2, 2, 5], "m_score": [20.0, 50.0, 50.0]}
    got = {r["customer_id"]: (r["r_score"], r["f_score"], r["m_score"], r["rfm_segment"])
           for r in R.segment_rfm(R.rfm_scores(rfm, 4), 4).collect()}
    assert got == {
        1: (4, 1, 1, R.NEW_CUSTOMERS),  # recency 5: 3 below; one purchase, recent
        2: (4, 1, 2, R.NEW_CUSTOMERS),  # monetary 20 tied three ways: 1 below each
        3: (3, 3, 2, R.LOYAL),          # recent (H), frequent (H), monetary L
        4: (1, 4, 2, R.AT_RISK),        # recency 100 tied: 0 below; frequency 5 tied: 3 below
        5: (1, 4, 4, R.AT_RISK),        # monetary 50: 4 below, capped at 4
    }


def test_scores_are_percent_rank_quantiles(spark):
    """The cut-point CASE gives exactly least(bins, 1 + floor(bins * percent_rank())), ties and all."""
    rows = [(i, (i * 7) % 13, i % 4, float((i * 37) % 11 - 3) * 2.5) for i in range(60)]
    rfm = spark.createDataFrame(rows, RFM_DDL)
    for bins in R.RFM_BINS:
        def expected(col):
            return F.least(F.lit(bins), 1 + F.floor(bins * F.percent_rank().over(Window.orderBy(col)))).cast("int")
        got = R.rfm_scores(rfm, bins).select(
            "customer_id", "r_score", "f_score", "m_score",
            expected(-F.col("recency_days")).alias("r"), expected("frequency").alias("f"),
            expected("monetary").alias("m")).collect()
        assert len(got) == 60
        assert all((r.r_score, r.f_score, r.m_score) == (r.r, r.f, r.m) for r in got), bins
        assert {r.r_score for r in got} == set(range(1, bins + 1))  # the data spreads over every score
    one = R.rfm_scores(spark.createDataFrame([(1, 3, 2, 9.0)], RFM_DDL), 5).first()
    assert (one.r_score, one.f_score, one.m_score) == (1, 1, 1)  # percent_rank of a lone row is 0


def test_spark_segments_agree_with_python_on_every_combination(spark):
    combos = [(bins, r, f, m, 1 if one else 2) for bins in R.RFM_BINS
              for r, f, m, one in R.all_score_combinations(bins)]
    df = spark.createDataFrame(combos, "bins int, r_score int, f_score int, m_score int, frequency long")
    got = df.select("*", F.when(F.col("bins") == 4, R.rfm_segment_column(4))
                    .otherwise(R.rfm_segment_column(5)).alias("segment")).collect()
    assert len(got) == len(combos)
    for row in got:
        assert row.segment == R.rule_segment(row.r_score, row.f_score, row.m_score, row.frequency == 1,
                                             row.bins), row


# -- the lazy forms a declarative pipeline uses (no job while the plan is built) ------------------------

@pytest.mark.parametrize("as_of", [None, date(2024, 3, 15)])
def test_lazy_customer_rfm_equals_customer_rfm(transactions, as_of):
    lazy = R.customer_rfm_lazy(transactions, as_of)
    assert lazy.columns == list(R.RFM_COLUMNS)
    assert dict(lazy.dtypes) == dict(R.customer_rfm(transactions, as_of).dtypes)
    assert _rows(lazy) == _rows(R.customer_rfm(transactions, as_of))


def test_lazy_customer_rfm_of_a_table_without_dates_has_no_customers(spark):
    lines = [_line("A1", 1, None, 1, 2.0)]
    assert R.customer_rfm_lazy(spark.createDataFrame(lines, TB.RETAIL_SCHEMAS[TB.RETAIL_TRANSACTIONS])).count() == 0


def test_rank_scores_equal_the_cut_point_scores(spark, transactions):
    """Same scores, ties included, on the hand-made ties, on 60 spread rows and on one customer."""
    hand = [(1, 5, 1, 10.0), (2, 5, 1, 20.0), (3, 30, 2, 20.0), (4, 100, 5, 20.0), (5, 100, 5, 50.0)]
    spread = [(i, (i * 7) % 13, i % 4, float((i * 37) % 11 - 3) * 2.5) for i in range(60)]
    for rows in (hand, spread, [(1, 3, 2, 9.0)]):
        rfm = spark.createDataFrame(rows, RFM_DDL)
        for bins in R.RFM_BINS:
            cut = {r.customer_id: (r.r_score, r.f_score, r.m_score) for r in R.rfm_scores(rfm, bins).collect()}
            ranked = R.rank_scores(rfm, bins)
            assert dict(ranked.dtypes)["r_score"] == "int"
            assert {r.customer_id: (r.r_score, r.f_score, r.m_score) for r in ranked.collect()} == cut, bins
    with pytest.raises(ParameterError, match="rfm_bins"):
        R.rank_scores(spark.createDataFrame(hand, RFM_DDL), 3)
