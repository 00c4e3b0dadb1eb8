"""report.html as a person sees it: opened in headless Chromium (the system's, `make browser`) with the
network cut, then read from the screen (innerText, drawn charts), never from the HTML source.

Used by test_airline_job and test_retail_job on the reports of their runs (no run of its own)."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

WIDTH, HEIGHT = 1400, 900  # a laptop screen
DRAW_TIMEOUT = 60  # seconds for every chart to draw (the machine may be busy)


def _binaries() -> tuple[str, str] | None:
    chromium = os.environ.get("SEGLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("SEGLIB_CHROMEDRIVER") or shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def browser():
    """A headless Chromium at 1400 x 900 that can reach nothing on the network. Missing browser: a failure on
    CI (CI=true), where `make test` installs it, a skip elsewhere."""
    found = _binaries()
    if found is None:
        message = "chromium and chromedriver not found: `make browser` installs them (apt-get chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("selenium is missing: it is in seglib's test extra")
        pytest.skip("selenium is missing: pip install -e '.[test]'")
    chromium, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WIDTH},{HEIGHT}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
                "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The given driver path: Selenium Manager would otherwise try to download one.
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


_CHARTS_STATE = """
const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
return plots.map(p => ({
  drawn: !!p.querySelector('svg.main-svg') && Array.isArray(p._fullData) && p._fullData.length > 0
         && p.getBoundingClientRect().width > 100 && p.getBoundingClientRect().height > 100,
  marks: p.querySelectorAll('.trace, .sankey-node, .hm, image, .bars .point').length,
  title: (p.querySelector('.gtitle') || {}).textContent || ''
}));
"""

_SUMMARY = """
return Array.from(document.querySelectorAll('#segment-table tbody tr')).map(tr => {
  const row = {segment: tr.getAttribute('data-segment'), name_text: tr.cells[0].innerText.trim()};
  tr.querySelectorAll('td[data-col]').forEach(td => row[td.getAttribute('data-col')] = td.innerText.trim());
  return row;
});
"""


class Page:
    """What the browser shows of one report: its text, its charts, its summary table, its console."""

    def __init__(self, driver, path: Path):
        self.driver, self.path = driver, Path(path)
        driver.get(self.path.resolve().as_uri())
        deadline = time.time() + DRAW_TIMEOUT
        self.scripts = driver.execute_script(
            "return Array.from(document.scripts).filter(s => s.textContent.includes('Plotly.newPlot')).length")
        while True:
            self.charts = driver.execute_script(_CHARTS_STATE)
            if (len(self.charts) >= self.scripts and all(c["drawn"] for c in self.charts)) or time.time() > deadline:
                break
            time.sleep(0.5)
        self.text = driver.execute_script("return document.body.innerText")
        self.summary = driver.execute_script(_SUMMARY)
        self.requests = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => n.startsWith('http'))")
        self.console = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, out: Path, selector: str | None = None) -> Path:
        """The first screen (no selector) or one element, as a PNG."""
        from selenium.webdriver.common.by import By
        out = Path(out)
        if selector is None:
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.driver.save_screenshot(str(out))
        else:
            element = self.driver.find_element(By.CSS_SELECTOR, selector)
            self.driver.execute_script("arguments[0].scrollIntoView()", element)
            element.screenshot(str(out))
        return out


def number(text: str) -> float:
    """The number in a formatted cell: 'EUR 7,294,990' -> 7294990.0, '7.0%' -> 7.0, '−12' -> -12.0."""
    cleaned = text.replace("−", "-").replace(",", "")
    match = re.search(r"-?\d+(?:\.\d+)?", cleaned)
    assert match, f"no number in {text!r}"
    return float(match.group())


def tolerance(text: str) -> float:
    """Half a unit of the last digit shown: '7%' -> 0.5, '7.1%' -> 0.05, '1,234' -> 0.5."""
    digits = text.replace(",", "").split(".")
    decimals = len(re.match(r"\d*", digits[1]).group()) if len(digits) > 1 else 0
    return 0.5 * 10 ** -decimals + 1e-9


# Words that only show when a value was never formatted for a reader.
RAW = re.compile(r"\d[eE][+-]\d|\bnan\b|\bNaN\b|\bNone\b|\bundefined\b|\bNaT\b|\binf\b")


def read_report(path: Path) -> Page:
    driver = browser()
    try:
        return Page(driver, path)
    except BaseException:
        driver.quit()
        raise


def check_report(page: Page, gold, revenue: str, summary_counts: dict, currency: str = ""):
    """The checks both e2e modules make on their run's report; *gold* is gold_customer_segments_ml (pandas),
    *revenue* its recipe's revenue column, *summary_counts* gold_segment_summary's customers per segment."""
    assert not page.requests, f"the report fetched {page.requests}"
    assert not page.console, f"JavaScript errors: {page.console}"
    # Every chart drew (an svg with its data), and there is one per chart script.
    assert page.scripts >= 5 and len(page.charts) == page.scripts, (page.scripts, page.charts)
    undrawn = [c["title"] for c in page.charts if not c["drawn"] or c["marks"] == 0]
    assert not undrawn, f"charts that did not draw: {undrawn}"
    raw = RAW.findall(page.text)
    assert not raw, f"unformatted values on screen: {sorted(set(raw))}"
    for secret in ("secret_scope", "client_secret_key", "client_id_key", "tenant_id_key"):
        assert secret not in page.text
    # The executive summary comes first and its figures are the gold table's.
    assert page.text.index("Key findings") < page.text.index("The segments, one by one")
    counts = gold.groupby("segment_name").size()
    revenues = gold.groupby("segment_name")[revenue].sum()
    total = float(gold[revenue].sum())
    assert sorted(r["segment"] for r in page.summary) == sorted(counts.index)
    assert counts.to_dict() == summary_counts  # the two gold tables agree, so the page matches both
    for row in page.summary:
        name = row["segment"]
        assert row["customers"] == f"{int(counts[name]):,}", (name, row)
        share = 100 * counts[name] / len(gold)
        assert abs(number(row["share"]) - share) <= tolerance(row["share"]), (name, row["share"], share)
        rshare = 100 * revenues[name] / total
        assert abs(number(row["revenue_share"]) - rshare) <= tolerance(row["revenue_share"]), (name, rshare)
        assert abs(number(row["revenue"]) - revenues[name]) <= tolerance(row["revenue"]), (name, row["revenue"])
        if currency:
            assert row["revenue"].startswith(currency), row["revenue"]
    assert f"{len(gold):,}" in page.text.split("Segments")[0]  # the customer count among the headline figures
    # A card per segment, each with its action.
    for name in counts.index:
        assert page.driver.execute_script(
            "return Array.from(document.querySelectorAll('.seg-card h2')).some(h => h.innerText.trim() === arguments[0])",
            name), f"no card for {name}"
    assert page.text.count("What to do".upper()) + page.text.count("What to do") >= len(counts)
    check_print(page, len(counts))


def check_print(page: Page, segments: int):
    """Printed (Chromium's print to PDF, the print styles): a page break before each segment's card, and
    every chart zoomed to fit the page's width."""
    import base64

    from selenium.webdriver.common.print_page_options import PrintOptions

    from seglib.report import PRINT_WIDTH_PX
    pdf = base64.b64decode(page.driver.print_page(PrintOptions()))
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert pages >= segments + 1, f"{pages} printed pages for {segments} segment cards, each on a page of its own"
    printed = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => p.getBoundingClientRect().width"
        " * parseFloat(p.style.getPropertyValue('--print-zoom') || '1'))")
    assert printed and all(w <= PRINT_WIDTH_PX + 1 for w in printed), printed
