"""The report a marketer reads: number formats, one colour per segment, the executive summary and a card
per segment (who they are, how they moved since the last run, what to do), as HTML the insights
notebook displays and report.html renders without code.

Everything here works on the small per-segment tables of ``seglib.insights.Insights``; nothing runs in
Spark. Words come from the recipe (``insights.words``: members and flights for airline, customers and
purchases for retail; ``traits`` for what sets a segment apart)."""
from __future__ import annotations

import html
import math

import pandas as pd

from . import recipes as R

# Colour-blind-safe qualitative colours (plotly's "Safe" palette), in segment-id order, so a segment has
# the same colour in every chart and on its card; segments beyond them cycle.
PALETTE = ("#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499", "#44AA99", "#999933",
           "#882255", "#661100", "#6699CC")
UNSEGMENTED_COLOR = "#888888"
DASH = "–"  # shown for a value that does not exist (no purchase, no earlier run), never "nan"/"None"

# Traits shown on a card: features at least this far from the average, in standard deviations.
TRAIT_MIN_Z = 0.3
TRAITS_SHOWN = 4
FINDINGS_MAX = 5

DEFAULT_WORDS = {"customer": "customer", "customers": "customers", "order": "purchase", "orders": "purchases",
                 "recency": "days since the last purchase", "revenue": "revenue"}


def recipe_of(result) -> R.Recipe:
    """The recipe of an Insights: the one it was computed with (a recipe file's too), else by name."""
    return getattr(result, "spec", None) or R.get(result.recipe)


def words(recipe: str | R.Recipe) -> dict[str, str]:
    """The recipe's nouns for its customers, purchases and recency (its insights.words)."""
    return {**DEFAULT_WORDS, **(R.get(recipe).insights.get("words") or {})}


# ---------------------------------------------------------------------------------------------------
# Number formats: what the reader sees, never a raw float.

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x)) or x is pd.NA or x is pd.NaT


def pct(x, digits: int | None = None) -> str:
    """0.0701 -> '7%'; below 10% one decimal ('0.4%', '7.0%' stays '7%')."""
    if _missing(x):
        return DASH
    value = 100 * float(x)
    if digits is None:
        digits = 1 if 0 < abs(value) < 10 and round(value, 1) != round(value) else 0
    return f"{value:,.{digits}f}%".replace("-", "−")


def count(x) -> str:
    return DASH if _missing(x) else f"{int(round(float(x))):,}"


def number(x, digits: int | None = None) -> str:
    """Separators, and decimals only where they say something: 111671.07 -> '111,671', 3.14159 -> '3.1'."""
    if _missing(x):
        return DASH
    x = float(x)
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def money(x, currency: str = "", digits: int | None = None) -> str:
    """An amount with separators and the run's currency: a code goes before with a space ('EUR 7,294,990'),
    a symbol without ('€12.50'); no currency, the number alone."""
    if _missing(x):
        return DASH
    x = float(x)
    if digits is None:
        digits = 0 if abs(x) >= 10 else 2  # cents only where they matter: a column of averages stays whole
    text = f"{abs(x):,.{digits}f}"
    sign = "−" if x < 0 and text.strip("0.,") else ""
    currency = (currency or "").strip()
    if not currency:
        return sign + text
    return f"{sign}{currency} {text}" if currency[-1].isalpha() else f"{sign}{currency}{text}"


def signed_pct(x) -> str:
    return DASH if _missing(x) else ("+" if x > 0 else "") + pct(x)


def segment_colors(names) -> dict[str, str]:
    """segment name -> colour, in the order given (segment-id order); the unsegmented grey."""
    out, i = {}, 0
    for name in names:
        if name in out:
            continue
        if str(name).startswith("Unsegmented"):
            out[name] = UNSEGMENTED_COLOR
            continue
        out[name] = PALETTE[i % len(PALETTE)]
        i += 1
    return out


# ---------------------------------------------------------------------------------------------------
# Tables as the reader sees them: no index, headers in words, each column in its format.

_MONEY_WORDS = ("revenue", "spend", "clv", "value", "cost", "monetary", "spent")
_PCT_WORDS = ("share", "roi", "uplift", "rate")
_COUNT_WORDS = ("customers", "count", "members")


def column_kind(column: str) -> str:
    c = str(column).lower()
    if c in ("segment", "segment_name", "action", "playbook_key") or c.startswith("segment_"):
        return "text"
    if any(w in c for w in _PCT_WORDS):
        return "pct"
    if c == "avg_order_value" or any(w in c for w in _MONEY_WORDS) or c.startswith("avg_spend") or c == "total_spend":
        return "money"
    if any(w in c for w in _COUNT_WORDS):
        return "count"
    return "number"


def header(column: str) -> str:
    text = str(column).replace("_", " ")
    text = text.replace("avg ", "average ").replace("clv", "CLV").replace("roi", "ROI")
    return text[:1].upper() + text[1:]


def table(df: pd.DataFrame, currency: str = "", drop=("segment",)):
    """A pandas Styler of *df* for display: no index, worded headers, percentages, money with the
    currency, counts and numbers with separators, '–' for a missing value."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    fmt = {"pct": pct, "money": lambda v: money(v, currency), "count": count, "number": number,
           "text": lambda v: DASH if _missing(v) else str(v)}
    formats = {c: fmt[column_kind(c)] for c in df.columns}
    text = [header(c) for c in df.columns if column_kind(c) == "text"]
    shown = df.rename(columns=header)
    left = [{"selector": f"th.col{i}", "props": "text-align: left"} for i, c in enumerate(shown.columns) if c in text]
    return (shown.style.format({header(c): f for c, f in formats.items()}, na_rep=DASH)
            .format_index(lambda v: str(v), axis=1).hide(axis="index").set_table_attributes('class="seg-data"')
            .set_properties(subset=text, **{"text-align": "left", "white-space": "normal"})
            .set_table_styles(left, overwrite=False))


def crosstab(df: pd.DataFrame, corner: str = ""):
    """A count cross-tab (segment x tier, R x F) with its row labels kept and counts with separators."""
    shown = df.copy()
    shown.index = shown.index.map(str)
    shown.columns = shown.columns.map(str)
    shown.index.name, shown.columns.name = corner or shown.index.name, None
    return shown.style.format(count).set_table_attributes('class="seg-data"')


# ---------------------------------------------------------------------------------------------------
# The executive summary

def segment_rows(result) -> pd.DataFrame:
    """The summary's table: per segment, customers, share, revenue, revenue share, revenue per customer
    and average CLV (segment-id order)."""
    m = result.revenue.merge(result.clv[["segment", "segment_name", "avg_clv", "total_clv"]], on=["segment", "segment_name"])
    m["share"] = m.customers / m.customers.sum()
    return m[["segment", "segment_name", "customers", "share", "revenue", "revenue_share", "revenue_per_customer",
              "avg_clv"]]


def _traits(result, name: str, recipe) -> list[tuple[str, float]]:
    """(words, z) of the features that set segment *name* apart, largest first."""
    if result.profile is None or name not in result.profile.index:
        return []
    z = result.profile.loc[name]
    if isinstance(z, pd.DataFrame):
        z = z.iloc[0]
    vocabulary = R.get(recipe).traits or {}
    out = []
    for feature, value in sorted(z.items(), key=lambda kv: -abs(kv[1]) if not _missing(kv[1]) else 0):
        if _missing(value) or abs(value) < TRAIT_MIN_Z:
            continue
        above, below = vocabulary.get(feature) or (f"higher {feature.replace('_', ' ')}",
                                                   f"lower {feature.replace('_', ' ')}")
        out.append((above if value > 0 else below, float(value)))
    return out[:TRAITS_SHOWN]


def _moves(result) -> pd.DataFrame | None:
    """This run's migration rows, or None when there is no earlier run to compare with."""
    mig = result.migration
    if mig is None or mig.empty or set(mig.change) <= {"new"}:
        return None
    return mig


def findings(result, currency: str = "") -> list[str]:
    """Three to five sentences from the data: where the revenue is, who is worth most, who is slipping,
    which campaign returns most, how many moved since the last run."""
    w, rows, c = words(recipe_of(result)), segment_rows(result), result.concentration
    named = rows[rows.segment >= 0] if (rows.segment >= 0).any() else rows
    out = []
    top = named.loc[named.revenue_share.idxmax()]
    out.append(f"{top.segment_name} are {pct(top.share)} of {w['customers']} and bring {pct(top.revenue_share)} "
               f"of {w['revenue']}.")
    out.append(f"The top {pct(c['top_share'])} of {w['customers']} ({count(c['top_customers'])}) bring "
               f"{pct(c['top_customers_revenue_share'])} of {w['revenue']}.")
    overall_clv = (rows.avg_clv * rows.customers).sum() / rows.customers.sum()
    best = named.loc[named.avg_clv.idxmax()]
    if best.segment_name != top.segment_name or len(named) == 1:
        clv_at = len(out)
        out.append(f"{best.segment_name} have the highest lifetime value: {money(best.avg_clv, currency)} per "
                   f"{w['customer']}, {number(best.avg_clv / overall_clv, 1)}× the average.")
    else:
        clv_at = len(out)
        out.append(f"A {w['customer']} of {best.segment_name} is worth {money(best.avg_clv, currency)} over their "
                   f"expected lifetime, {number(best.avg_clv / overall_clv if overall_clv else float('nan'), 1)}× "
                   f"the average {w['customer']}.")
    recency = _recency(result)
    if recency is not None:
        slipping = recency.loc[recency.idxmax()]
        name = recency.idxmax()
        r = rows.set_index("segment_name").loc[name]
        out.append(f"{name}: {count(r.customers)} {w['customers']} ({pct(r.share)}), on average {number(slipping, 0)} "
                   f"{w['recency']}, hold {pct(r.revenue_share)} of {w['revenue']}.")
    roi = result.roi[result.roi.segment >= 0] if (result.roi.segment >= 0).any() else result.roi
    if not roi.empty and roi.roi.notna().any():
        b = roi.loc[roi.roi.idxmax()]
        out.append(f"The best campaign return: “{b.action}” for {b.segment_name}, ROI {pct(b.roi)} "
                   f"({money(b.cost, currency)} for an assumed {signed_pct(b.uplift)} of their yearly "
                   f"{w['revenue']}).")
    moves = _moves(result)
    if moves is not None:
        both = moves[moves.change.isin(["stayed", "moved"])]
        moved = both[both.change == "moved"]
        total = int(both.customers.sum())
        n = int(moved.customers.sum())
        if total and not n:
            out.insert(2, f"Since the last run, every {w['customer']} in both runs kept their segment.")
            clv_at += 1
        elif total:
            text = (f"Since the last run, {count(n)} {w['customer'] if n == 1 else w['customers']} "
                    f"({pct(n / total)}) changed segment")
            if not moved.empty:
                m = moved.loc[moved.customers.idxmax()]
                text += f"; the largest move: {count(m.customers)} from {m.from_segment_name} to {m.to_segment_name}"
            out.insert(2, text + ".")
            clv_at += 1
    if len(out) > FINDINGS_MAX:
        del out[clv_at]  # the lifetime value is on every card; the action to take is not elsewhere in the summary
    return out[:FINDINGS_MAX]


def _recency(result) -> pd.Series | None:
    """Average recency (days) per segment name, from the performance table's source metrics."""
    perf = result.performance
    for column in perf.columns:
        if "recency" in column or "days_since" in column:
            return perf.set_index("segment_name")[column].astype(float)
    return None


CSS = """
.seg-report{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  color:#1f2933;line-height:1.45;max-width:1180px}
.seg-report h1{font-size:1.9em;margin:.2em 0 .1em}
.seg-report .meta{color:#52606d;margin:0 0 1em}
.seg-kpis{display:flex;flex-wrap:wrap;gap:12px;margin:0 0 1.2em}
.seg-kpi{flex:1 1 160px;border:1px solid #d9e2ec;border-radius:8px;padding:10px 14px;background:#f8fafc}
.seg-kpi .v{font-size:1.55em;font-weight:600}
.seg-kpi .l{color:#52606d;font-size:.9em}
table.seg-table,table.seg-data{border-collapse:collapse;font-size:.95em;margin:.4em 0 1em}
table.seg-table th,table.seg-table td,table.seg-data th,table.seg-data td{padding:5px 10px;border-bottom:1px solid #e4e7eb}
table.seg-table th,table.seg-data th{text-align:left;background:#f0f4f8;font-weight:600}
table.seg-table th:first-child,.jp-RenderedHTMLCommon table.seg-table th:first-child{text-align:left}
table.seg-table td.n,table.seg-data td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.seg-data td.col0,table.seg-table td.name{text-align:left}
.swatch{display:inline-block;width:.85em;height:.85em;border-radius:2px;margin-right:.45em;vertical-align:-.05em}
ul.seg-findings li{margin:.25em 0}
.seg-card{border:1px solid #d9e2ec;border-left:8px solid var(--seg-color);border-radius:8px;padding:12px 18px;
  margin:18px 0;background:#fff}
.seg-card h2{margin:.1em 0 .2em;font-size:1.45em}
.seg-card .lead{color:#323f4b;margin:.1em 0 .6em;font-size:1.05em}
.seg-card .cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:10px 26px}
.seg-card h3{font-size:1em;text-transform:uppercase;letter-spacing:.04em;color:#52606d;margin:.4em 0 .3em}
.seg-card ul{margin:0;padding-left:1.1em}
.seg-card .z{color:#52606d;font-size:.9em}
.seg-card .action{font-weight:600;margin:.1em 0 .4em}
.seg-card dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
.seg-card dt,.jp-RenderedHTMLCommon .seg-card dt{color:#52606d;font-weight:normal;white-space:nowrap;margin:0}
.jp-RenderedHTMLCommon .seg-card dd{margin:0}.seg-card dd{margin:0;font-variant-numeric:tabular-nums}
@media print{
  .seg-card{break-before:page;page-break-before:always;break-inside:avoid;border-left-width:8px;
    -webkit-print-color-adjust:exact;print-color-adjust:exact}
  .swatch{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{color}"></span>'


def summary_html(result, currency: str = "", run_time=None) -> str:
    """The report's first screen: run, date, totals, the segments in one table, the findings."""
    w, rows, c = words(recipe_of(result)), segment_rows(result), result.concentration
    colors = segment_colors(rows.segment_name)
    e = html.escape
    rec = recipe_of(result)
    run_time = getattr(result, "run_time", None) if run_time is None else run_time
    when = "" if run_time is None or _missing(run_time) else f" · {pd.Timestamp(run_time):%d %b %Y, %H:%M} UTC"
    kpis = [(count(c["customers"]), w["customers"].capitalize()),
            (money(c["total_revenue"], currency), f"{w['revenue'].capitalize()} ({result.assumptions['observation_years']:g} years)"),
            (count(len(rows)), "Segments"),
            (pct(c["top_customers_revenue_share"]), f"of {w['revenue']} from the top {pct(c['top_share'])}")]
    body = [f"<style>{CSS}</style>", '<div class="seg-report" id="executive-summary">',
            f"<h1>Customer segments: {e(rec.describes or rec.name)}</h1>",
            f'<p class="meta">Run {e(str(result.run_id or DASH))}{e(when)} · {e(result.recipe)} recipe</p>',
            '<div class="seg-kpis">', *[f'<div class="seg-kpi"><div class="v">{e(v)}</div><div class="l">{e(l)}</div></div>'
                                        for v, l in kpis], "</div>",
            "<h2>Segments</h2>", '<table class="seg-table" id="segment-table"><thead><tr>',
            *[f"<th>{e(h)}</th>" for h in ("Segment", w["customers"].capitalize(), f"Share of {w['customers']}",
                                            f"Share of {w['revenue']}", w["revenue"].capitalize(),
                                            f"{w['revenue'].capitalize()} per {w['customer']}",
                                            f"Lifetime value per {w['customer']}")],
            "</tr></thead><tbody>"]
    for r in rows.itertuples(index=False):
        body.append(f'<tr data-segment="{e(str(r.segment_name))}"><td class="name">{_swatch(colors[r.segment_name])}'
                    f'<a href="#segment-{r.segment}">{e(str(r.segment_name))}</a></td>'
                    f'<td class="n" data-col="customers">{count(r.customers)}</td>'
                    f'<td class="n" data-col="share">{pct(r.share)}</td>'
                    f'<td class="n" data-col="revenue_share">{pct(r.revenue_share)}</td>'
                    f'<td class="n" data-col="revenue">{e(money(r.revenue, currency))}</td>'
                    f'<td class="n" data-col="revenue_per_customer">{e(money(r.revenue_per_customer, currency))}</td>'
                    f'<td class="n" data-col="avg_clv">{e(money(r.avg_clv, currency))}</td></tr>')
    body += ["</tbody></table>", "<h2>Key findings</h2>", '<ul class="seg-findings">',
             *[f"<li>{e(f)}</li>" for f in findings(result, currency)], "</ul>", "</div>"]
    return "\n".join(body)


def _migration_text(result, name: str) -> str:
    w, moves = words(recipe_of(result)), _moves(result)
    if moves is None:
        return (f"This is the first run on these {w['customers']}: there is no earlier run to compare with."
                if result.migration is not None else "No earlier run recorded.")
    into = moves[moves.to_segment_name == name]
    out_of = moves[moves.from_segment_name == name]
    stayed = int(into[into.change == "stayed"].customers.sum())
    before = int(out_of.customers.sum())  # this segment's size in the previous run (stayed, moved, departed)
    joined = into[into.change == "moved"].groupby("from_segment_name").customers.sum().sort_values(ascending=False)
    new = int(into[into.change == "new"].customers.sum())
    left = out_of[out_of.change == "moved"].groupby("to_segment_name").customers.sum().sort_values(ascending=False)
    departed = int(out_of[out_of.change == "departed"].customers.sum())
    if not before:
        parts = [f"New this run: no {w['customers']} had this segment before."]
    else:
        parts = [f"{count(stayed)} of the {count(before)} {w['customers']} it had stayed ({pct(stayed / before)})."]
    if joined.sum():
        parts.append(f"{count(joined.sum())} joined from other segments (most from {joined.index[0]}: "
                     f"{count(joined.iloc[0])}).")
    if left.sum():
        parts.append(f"{count(left.sum())} moved to other segments (most to {left.index[0]}: {count(left.iloc[0])}).")
    if new:
        parts.append(f"{count(new)} are new {w['customers']}.")
    if departed:
        parts.append(f"{count(departed)} are no longer in the data.")
    return " ".join(parts)


def cards_html(result, currency: str = "") -> str:
    """A card per segment: size and value, the traits that set it apart, its moves since the last run,
    the playbook action with its assumptions and ROI."""
    w, rows = words(recipe_of(result)), segment_rows(result)
    colors = segment_colors(rows.segment_name)
    roi = result.roi.set_index("segment_name")
    metrics = result.performance.set_index("segment_name")
    e = html.escape
    body = [f"<style>{CSS}</style>", '<div class="seg-report" id="segment-cards">']
    for r in rows.itertuples(index=False):
        name = str(r.segment_name)
        traits = _traits(result, r.segment_name, recipe_of(result))
        who = ([f'<li>{e(t)} <span class="z">({"+" if z > 0 else "−"}{abs(z):.1f} SD)</span></li>' for t, z in traits]
               or [f"<li>Close to the average {w['customer']} on every feature.</li>"])
        averages = _averages(metrics.loc[name] if name in metrics.index else None, currency, w)
        a = roi.loc[name] if name in roi.index else None
        if isinstance(a, pd.DataFrame):
            a = a.iloc[0]
        todo = ['<p class="action">' + e(str(a.action)) + "</p>",
                "<dl>",
                f"<dt>Assumed uplift</dt><dd>{signed_pct(a.uplift)} of yearly {e(w['revenue'])} "
                f"({e(money(a.yearly_revenue, currency))})</dd>",
                f"<dt>Cost</dt><dd>{e(money(a.cost_per_customer, currency))} per {e(w['customer'])}, "
                f"{e(money(a.cost, currency))} in all</dd>",
                f"<dt>Expected return</dt><dd>{e(money(a.expected_incremental_revenue, currency))} more "
                f"{e(w['revenue'])} a year</dd>",
                f"<dt>ROI</dt><dd><strong>{pct(a.roi)}</strong></dd>", "</dl>"] if a is not None else ["<p>–</p>"]
        if a is not None and a.playbook_key is None or (a is not None and _missing(a.playbook_key)):
            todo.append("<p class=\"z\">The playbook has no action for this name: a generic default is shown.</p>")
        body += [f'<section class="seg-card" id="segment-{r.segment}" style="--seg-color:{colors[r.segment_name]}">',
                 f"<h2>{_swatch(colors[r.segment_name])}{e(name)}</h2>",
                 f'<p class="lead">{count(r.customers)} {e(w["customers"])} ({pct(r.share)}) · '
                 f"{pct(r.revenue_share)} of {e(w['revenue'])} · {e(money(r.revenue_per_customer, currency))} per "
                 f"{e(w['customer'])} · lifetime value {e(money(r.avg_clv, currency))}</p>",
                 '<div class="cols">',
                 f"<div><h3>Who they are</h3><ul>{''.join(who)}</ul>"
                 + (f'<p class="z">On average: {e(averages)}</p>' if averages else "") + "</div>",
                 f"<div><h3>Since the last run</h3><p>{e(_migration_text(result, r.segment_name))}</p></div>",
                 f"<div><h3>What to do</h3>{''.join(todo)}</div>",
                 "</div></section>"]
    body.append("</div>")
    return "\n".join(body)


def _averages(row, currency: str, w: dict) -> str:
    """'23 flights · 45,012 points · 35 days since their last flight' from a performance row."""
    if row is None:
        return ""
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    parts = []
    for column, value in row.items():
        if column in ("segment", "customers") or _missing(value):
            continue
        label = header(column).lower().replace("average ", "")
        kind = column_kind(column)
        if kind == "money" and column == "avg_order_value":  # totals and per-customer amounts are in the lead
            parts.append(f"{label} {money(value, currency)}")
        elif kind in ("number", "count"):
            if "recency" in column or "days_since" in column:
                label = w["recency"]
            elif column == "avg_frequency":
                label = w["orders"]
            parts.append(f"{number(value, 0 if abs(value) >= 10 else 1)} {label}")
    return " · ".join(parts)


class HTML:
    """Rich output for the notebook (text/html), without importing IPython here."""

    def __init__(self, text: str):
        self.text = text

    def _repr_html_(self) -> str:
        return self.text


def note(text: str) -> HTML:
    """A sentence in the report's text style (a print() would show as code)."""
    return HTML(f'<div class="seg-report"><p>{html.escape(text)}</p></div>')


def summary(result, currency: str = "", run_time=None) -> HTML:
    return HTML(summary_html(result, currency, run_time))


def cards(result, currency: str = "") -> HTML:
    return HTML(cards_html(result, currency))
