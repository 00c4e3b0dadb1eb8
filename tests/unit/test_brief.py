"""The report's number formats and tables (seglib.brief): what a reader sees instead of raw floats."""
import math

import pandas as pd

from seglib import brief


def test_percentages():
    assert brief.pct(0.070124) == "7%" and brief.pct(0.5301) == "53%" and brief.pct(1) == "100%"
    assert brief.pct(0.0041) == "0.4%" and brief.pct(0.0712) == "7.1%" and brief.pct(0) == "0%"
    assert brief.pct(22.81) == "2,281%"  # an ROI
    assert brief.signed_pct(0.05) == "+5%" and brief.signed_pct(-0.05) == "−5%"


def test_money_counts_and_numbers_have_separators_and_no_scientific_notation():
    assert brief.money(7.294990e+06) == "7,294,990"
    assert brief.money(7.294990e+06, "EUR") == "EUR 7,294,990" and brief.money(2.5, "€") == "€2.50" and brief.money(89.46) == "89"
    assert brief.money(-1234.4, "EUR") == "−EUR 1,234" and brief.money(-0.001) == "0.00"
    assert brief.money(1e21, "$") == "$1,000,000,000,000,000,000,000"
    assert brief.count(62988.0) == "62,988" and brief.count(3) == "3"
    assert brief.number(111671.065882) == "111,671" and brief.number(12.345) == "12.3" and brief.number(3.14159) == "3.14"
    for missing in (None, float("nan"), math.inf, pd.NA):
        assert brief.pct(missing) == brief.money(missing, "EUR") == brief.count(missing) == brief.number(missing) == "–"


def test_one_colour_per_segment_and_grey_for_the_unsegmented():
    colors = brief.segment_colors(["A", "B", "Unsegmented (incomplete data)", "C", "A"])
    assert list(colors) == ["A", "B", "Unsegmented (incomplete data)", "C"]
    assert colors["Unsegmented (incomplete data)"] == brief.UNSEGMENTED_COLOR
    assert len({colors["A"], colors["B"], colors["C"], brief.UNSEGMENTED_COLOR}) == 4
    assert colors["C"] == brief.PALETTE[2]  # the grey takes no palette slot


def test_tables_show_no_index_and_each_column_in_its_format():
    df = pd.DataFrame({"segment": [0, 1], "segment_name": ["Top", "Rest"], "customers": [4417, 58571],
                       "share": [0.070124, 0.929876], "total_clv": [7.294990e+06, 1234.5], "avg_points": [111671.065882, 2.5],
                       "roi": [1.5, float("nan")]}, index=[10, 11])
    page = brief.table(df, "EUR").to_html()
    assert "row_heading" not in page and ">10<" not in page  # no index column
    assert ">Segment<" not in page  # the internal id is dropped; the name stays
    for shown in ("Segment name", "Customers", "Total CLV", "Average points", "4,417", "58,571", "7%", "93%",
                  "EUR 7,294,990", "EUR 1,234", "111,671", "2.50", "150%", "–"):
        assert shown in page, shown
    for raw in ("0.070124", "e+06", "111671.07", "nan"):
        assert raw not in page, raw
