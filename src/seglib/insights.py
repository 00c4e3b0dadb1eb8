"""Business insights on gold_customer_segments_ml, for both recipes: who is in each segment, where the
revenue is, what a customer is worth (CLV) and what a campaign per segment would return (ROI).

Every aggregation runs in Spark; only per-segment results (a few rows each) come to pandas, so a gold
table of 10M customers costs five aggregation passes, never a collect of customers. ``insights`` is the
one call the 06_insights notebook makes; the functions below it are what it is built from.

CLV (per customer, then averaged per segment)::

    CLV = average order value x purchases per year x gross margin x expected lifetime
    average order value  = max(revenue, 0) / purchases          (0 when no purchase)
    purchases per year   = purchases / observation_years        (the same window for every customer)
    expected lifetime    = 1 / (1 - retention_rate) years       (geometric retention: a customer stays
                                                                  another year with probability r)

Purchases per year divide by one window for everyone, never by a customer's own tenure: with tenure, a
customer who bought once last week has a tiny tenure and so a huge "frequency", which ranked one-time
buyers above Champions in the Databricks accelerator. Here, for the same order value, CLV grows with the
number of purchases, so a one-purchase customer never outranks a Champion.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import recipes as R
from .recipes import Action
from .errors import InputContractError, ParameterError

@dataclass(frozen=True)
class _Columns:
    customer: str
    revenue: str
    orders: str      # purchases: transactions (airline) or distinct invoices (retail)
    recency: str     # days since the last flight / purchase
    extra: tuple[str, ...]


def _columns(rec: R.Recipe) -> _Columns:
    """The gold columns the recipe's insights read (its ``insights`` block)."""
    i = rec.insights
    extra = [*(i.get("averages") or {}).values(), *[c for g in i.get("grids") or [] for c in (g["rows"], g["columns"])],
             *[b["column"] for b in i.get("breakdowns") or []]]
    try:
        return _Columns(i["customer"], i["revenue"], i["orders"], i["recency"], tuple(dict.fromkeys(extra)))
    except KeyError as e:
        raise ParameterError(f"recipe {rec.name} ({rec.source}) has no insights.{e.args[0]}: the insights notebook "
                             f"needs insights.customer, revenue, orders and recency") from None


# Defaults of the notebook's and the job's parameters (params.PARAMS checks them).
GROSS_MARGIN = 0.3       # share of revenue kept as gross profit
RETENTION_RATE = 0.6     # yearly probability a customer stays: expected lifetime 2.5 years
OBSERVATION_YEARS = 2.0  # the years gold revenue and purchase counts cover (the lab's and Online Retail II's two)
TOP_SHARE = 0.2          # "top 20% of customers" in the revenue concentration


# ---------------------------------------------------------------------------------------------------
# ROI playbook: the recipe's (its `playbook`), one action per segment name.

# Segments with a name the playbook does not know still get a row, marked as this default.
DEFAULT_ACTION = Action("Generic newsletter (default: no action defined for this segment name)", 2.0, 0.02)


def _normal(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", str(name)).strip().casefold()


def match_action(name: str | None, playbook: dict[str, Action]) -> tuple[str | None, Action]:
    """(the playbook key used, its action) for a segment name; (None, DEFAULT_ACTION) when unknown.

    Case, spaces and hyphens do not matter; an extra cluster's qualifier (naming: "Occasional
    Travelers (more flights)", "... #2") falls back to its base name, whose action applies."""
    if name is None:
        return None, DEFAULT_ACTION
    by_normal = {_normal(k): k for k in playbook}
    for candidate in (name, re.sub(r"\s*(\(.*\)|#\d+)\s*$", "", str(name))):
        key = by_normal.get(_normal(candidate))
        if key is not None:
            return key, playbook[key]
    return None, DEFAULT_ACTION


# ---------------------------------------------------------------------------------------------------

def check_assumptions(gross_margin: float, retention_rate: float, observation_years: float,
                      top_share: float = TOP_SHARE) -> None:
    for name, value in (("gross_margin", gross_margin), ("retention_rate", retention_rate),
                        ("top_share", top_share)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ParameterError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    if not (isinstance(observation_years, (int, float)) and observation_years > 0):
        raise ParameterError(f"observation_years must be a number > 0, got {observation_years!r}")


def expected_lifetime(retention_rate: float) -> float:
    """Years a customer is expected to stay when each year they stay with probability r: 1 / (1 - r)."""
    return 1.0 / (1.0 - retention_rate)


def clv_formula(gross_margin: float, retention_rate: float, observation_years: float) -> str:
    return (f"CLV = avg order value × purchases/year × gross margin {gross_margin:g} × expected lifetime "
            f"{expected_lifetime(retention_rate):.2f} y (= 1/(1 − retention {retention_rate:g})); "
            f"purchases/year = purchases / {observation_years:g} y observed")


def _require(segments: DataFrame, recipe: str | R.Recipe) -> _Columns:
    rec = R.get(recipe)
    cols = _columns(rec)
    needed = [cols.customer, cols.revenue, cols.orders, cols.recency, *cols.extra, "segment", "segment_name"]
    missing = [c for c in needed if c not in segments.columns]
    if missing:
        raise InputContractError(f"gold_customer_segments_ml ({rec.name} recipe) lacks column(s) {', '.join(missing)}; "
                                 f"it has {', '.join(segments.columns)}")
    return cols


def customer_values(segments: DataFrame, recipe: str, gross_margin: float = GROSS_MARGIN,
                    retention_rate: float = RETENTION_RATE,
                    observation_years: float = OBSERVATION_YEARS) -> DataFrame:
    """One row per customer: customer, segment, revenue, orders, recency, aov, purchases_per_year, clv, the
    recipe's extra columns (lazy; nothing runs until an aggregation)."""
    check_assumptions(gross_margin, retention_rate, observation_years)
    cols = _require(segments, recipe)
    revenue = F.coalesce(F.col(cols.revenue).cast("double"), F.lit(0.0))  # no purchase recorded = 0
    orders = F.coalesce(F.col(cols.orders).cast("double"), F.lit(0.0))
    df = segments.select(F.col(cols.customer).alias("customer"), "segment", "segment_name", revenue.alias("revenue"), orders.alias("orders"),
                         F.col(cols.recency).cast("double").alias("recency"), *cols.extra,
                         *(["run_id"] if "run_id" in segments.columns else []))
    # A customer whose returns exceed their purchases is worth nothing, not a negative amount.
    aov = F.when(F.col("orders") > 0, F.greatest(F.col("revenue"), F.lit(0.0)) / F.col("orders"))
    per_year = F.col("orders") / F.lit(float(observation_years))
    clv = aov * per_year * F.lit(float(gross_margin)) * F.lit(expected_lifetime(retention_rate))
    return (df.withColumn("aov", aov).withColumn("purchases_per_year", per_year)
            .withColumn("clv", F.coalesce(clv, F.lit(0.0))))


def segment_metrics(values: DataFrame, recipe: str) -> pd.DataFrame:
    """Per segment, in one Spark aggregation: customers, revenue, orders, averages and CLV (k rows)."""
    extra = [F.avg(column).alias(name) for name, column in (R.get(recipe).insights.get("averages") or {}).items()]
    run = ([F.min("run_id").alias("run_min"), F.max("run_id").alias("run_max")] if "run_id" in values.columns
           else [F.lit(None).cast("string").alias("run_min"), F.lit(None).cast("string").alias("run_max")])
    pdf = (values.groupBy("segment", "segment_name")
           .agg(F.count(F.lit(1)).alias("customers"), F.sum("revenue").alias("revenue"),
                F.sum("orders").alias("orders"), F.avg("orders").alias("avg_frequency"),
                F.avg("recency").alias("avg_recency_days"), F.avg("clv").alias("avg_clv"),
                F.sum("clv").alias("total_clv"), *extra, *run)
           .orderBy(F.col("segment").asc_nulls_last(), "segment_name").toPandas())
    if pdf.empty:
        raise InputContractError("gold_customer_segments_ml has no customers: nothing to report on")
    pdf["customers"] = pdf.customers.astype("int64")
    return pdf


def distribution(metrics: pd.DataFrame) -> pd.DataFrame:
    out = metrics[["segment", "segment_name", "customers"]].copy()
    out["share"] = out.customers / out.customers.sum()
    return out


def revenue_distribution(metrics: pd.DataFrame) -> pd.DataFrame:
    out = metrics[["segment", "segment_name", "customers", "revenue"]].copy()
    total = out.revenue.sum()
    out["revenue_share"] = out.revenue / total if total else float("nan")
    out["revenue_per_customer"] = out.revenue / out.customers
    return out


def revenue_concentration(values: DataFrame, metrics: pd.DataFrame, top_share: float = TOP_SHARE,
                          accuracy: int = 100_000) -> dict:
    """Share of revenue from the top segment and from the top *top_share* of customers.

    The top customers are the n - ceil((1 - top_share) * n) with the highest revenue. Spark gives the
    revenue cut at rank ceil((1 - top_share) * n) (percentile_approx: exact on small tables, within
    n/accuracy ranks on large ones); the top group is everyone above the cut plus, for ties at the cut,
    as many customers at the cut's revenue as fill it."""
    n, total = int(metrics.customers.sum()), float(metrics.revenue.sum())
    p = 1.0 - top_share
    top_n = n - math.ceil(p * n)  # the same double arithmetic as Spark's rank, so both agree on n
    cut = values.agg(F.percentile_approx("revenue", F.lit(p), F.lit(accuracy)).alias("cut")).first()["cut"]
    above = values.where(F.col("revenue") > F.lit(cut)).agg(F.count(F.lit(1)).alias("n"),
                                                            F.sum("revenue").alias("revenue")).first()
    top_revenue = (above["revenue"] or 0.0) + (top_n - above["n"]) * cut
    best = metrics.loc[metrics.revenue.idxmax()]
    return {"customers": n, "total_revenue": total,
            "top_segment": best.segment_name, "top_segment_revenue_share": best.revenue / total if total else float("nan"),
            "top_share": top_share, "top_customers": top_n, "revenue_cut": float(cut),
            "top_customers_revenue_share": top_revenue / total if total else float("nan")}


def performance(metrics: pd.DataFrame, recipe: str | R.Recipe) -> pd.DataFrame:
    """The segment performance table, in the recipe's terms (its insights.performance)."""
    m = metrics.copy()
    m["avg_order_value"] = m.revenue / m.orders.where(m.orders > 0)
    m["revenue_per_customer"] = m.revenue / m.customers
    spec = R.get(recipe).insights.get("performance") or {}
    columns = spec.get("columns") or ["segment", "segment_name", "customers", "revenue", "revenue_per_customer",
                                      "avg_order_value", "avg_frequency", "avg_recency_days"]
    return m[columns].rename(columns=spec.get("rename") or {})


def clv_by_segment(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[["segment", "segment_name", "customers", "avg_clv", "total_clv"]].copy()


def roi_scenarios(metrics: pd.DataFrame, playbook: dict[str, Action],
                  observation_years: float = OBSERVATION_YEARS) -> pd.DataFrame:
    """One row per segment present, with the playbook's action for its name (or the labelled default).

    yearly revenue           = segment revenue / observation_years
    expected incremental rev = uplift x yearly revenue
    cost                     = customers x cost per customer
    ROI                      = (incremental revenue - cost) / cost"""
    rows = []
    for m in metrics.itertuples(index=False):
        key, action = match_action(m.segment_name, playbook)
        yearly = m.revenue / observation_years
        incremental, cost = action.uplift * yearly, m.customers * action.cost_per_customer
        rows.append({"segment": m.segment, "segment_name": m.segment_name, "playbook_key": key,
                     "action": action.action, "customers": m.customers, "yearly_revenue": yearly,
                     "uplift": action.uplift, "expected_incremental_revenue": incremental,
                     "cost_per_customer": action.cost_per_customer, "cost": cost,
                     "roi": (incremental - cost) / cost})
    return pd.DataFrame(rows)


def _crosstab(counts: pd.DataFrame, rows: str, columns: str, row_order=None, column_order=None) -> pd.DataFrame:
    table = counts.pivot_table(index=rows, columns=columns, values="customers", aggfunc="sum", fill_value=0)
    if row_order is not None:
        table = table.reindex(index=[r for r in row_order if r in table.index])
    if column_order is not None:
        known = [c for c in column_order if c in table.columns]
        table = table.reindex(columns=known + sorted(c for c in table.columns if c not in known))
    return table.astype("int64")


def recipe_extras(values: DataFrame, metrics: pd.DataFrame, recipe: str | R.Recipe) -> dict[str, pd.DataFrame]:
    """The recipe's breakdowns (segment x a column: loyalty tier, customer status, RFM segment) and score
    grids (R x F). One Spark aggregation to the finest small grid, pivoted in pandas."""
    spec = R.get(recipe).insights
    breakdowns, grids = spec.get("breakdowns") or [], spec.get("grids") or []
    by = list(dict.fromkeys(["segment_name", *[b["column"] for b in breakdowns],
                             *[c for g in grids for c in (g["rows"], g["columns"])]]))
    if len(by) == 1:
        return {}
    counts = values.groupBy(*by).agg(F.count(F.lit(1)).alias("customers")).toPandas()
    order = metrics.segment_name.tolist()
    out = {}
    for b in breakdowns:
        column = counts[b["column"]]
        if b.get("label"):
            column = column.astype("Int64").astype(str).map(lambda v, f=b["label"]: f.format(v))
        shown = counts.assign(**{b["column"]: column.fillna("(none)")})
        out[b["name"]] = _crosstab(shown, "segment_name", b["column"], order, b.get("order"))
    for g in grids:
        out[g["name"]] = (_crosstab(counts, g["rows"], g["columns"]).sort_index(ascending=False)
                          .sort_index(axis=1))
    return out


# ---------------------------------------------------------------------------------------------------
# Figures

def _colors(names) -> list[str]:
    from .brief import segment_colors
    names = [str(n) for n in names]
    colors = segment_colors(names)
    return [colors[n] for n in names]


def _money_axis(label: str, currency: str) -> str:
    return f"{label} ({currency})" if currency else label


def _bar(table: pd.DataFrame, y: str, title: str, text=None, yaxis: str | None = None, tickformat: str = ",",
         hover: str = "%{y:,.0f}"):
    import plotly.graph_objects as go
    names = table.segment_name.astype(str)
    fig = go.Figure(go.Bar(x=names, y=table[y], name=y, text=text, marker_color=_colors(names),
                           textposition="outside" if text is not None else None,
                           hovertemplate="%{x}: " + hover + "<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="segment", yaxis_title=yaxis or y, yaxis_tickformat=tickformat,
                      showlegend=False)
    return fig


def _shares(result: "Insights"):
    """Share of customers beside share of revenue, one colour per segment: where the value sits."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    from .brief import pct, recipe_of, words
    w = words(recipe_of(result))
    m = result.revenue.merge(result.distribution[["segment", "share"]], on="segment")
    names = m.segment_name.astype(str)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=(f"Share of {w['customers']}", f"Share of {w['revenue']}"))
    for col, column in ((1, "share"), (2, "revenue_share")):
        fig.add_trace(go.Bar(y=names, x=m[column], orientation="h", marker_color=_colors(names), showlegend=False,
                             text=[pct(v) for v in m[column]],
                             textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(tickformat=".0%", row=1, col=col, rangemode="tozero")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"Segment sizes and {w['revenue']} share", height=120 + 48 * len(m), margin={"l": 10})
    return fig


def _profile_bars(profile: pd.DataFrame, customers: str = "customers"):
    """Each segment's feature z-scores side by side (one colour per segment)."""
    import plotly.graph_objects as go
    features = [_label(c) for c in profile.columns]
    colors = _colors(profile.index)
    fig = go.Figure([go.Bar(x=features, y=row.values, name=str(name), marker_color=color,
                            hovertemplate=f"{name}<br>%{{x}}: %{{y:+.2f}} SD<extra></extra>")
                     for (name, row), color in zip(profile.iterrows(), colors)])
    fig.update_layout(barmode="group", title=f"Who they are: each feature's segment mean against all {customers}, "
                      "in standard deviations", yaxis_title="standard deviations from the average",
                      yaxis_tickformat="+.1f", legend_title="segment")
    return fig


def _migration_sankey(migration: pd.DataFrame, order: list[str]):
    """Previous run's segments (left) to this run's (right), links coloured by where they go."""
    import plotly.graph_objects as go
    from .brief import segment_colors
    from .migration import DEPARTED, NEW
    m = migration.assign(src=migration.from_segment_name.fillna(NEW), dst=migration.to_segment_name.fillna(DEPARTED))
    m = m[m.customers > 0]
    colors = segment_colors([*order, *sorted(set(m.src) | set(m.dst))])
    colors[NEW] = colors[DEPARTED] = "#bbbbbb"
    left = [n for n in [*order, *sorted(set(m.src))] if n in set(m.src)]
    left = list(dict.fromkeys(left))
    right = list(dict.fromkeys(n for n in [*order, *sorted(set(m.dst))] if n in set(m.dst)))
    nodes = [*left, *right]

    def rgba(hex_color: str, alpha: float) -> str:
        h = hex_color.lstrip("#")
        return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"
    fig = go.Figure(go.Sankey(
        arrangement="fixed",
        node={"label": [f"{n} (before)" for n in left] + [f"{n} (now)" for n in right], "pad": 14,
              "color": [colors[n] for n in nodes], "hovertemplate": "%{label}: %{value:,} customers<extra></extra>"},
        link={"source": [left.index(s) for s in m.src], "target": [len(left) + right.index(d) for d in m.dst],
              "value": m.customers.astype(int).tolist(), "color": [rgba(colors[d], 0.45) for d in m.dst],
              "hovertemplate": "%{source.label} → %{target.label}: %{value:,}<extra></extra>"}))
    fig.update_layout(title="Movement between segments since the last run", height=120 + 60 * max(len(left), len(right)))
    return fig


def _heatmap(table: pd.DataFrame, title: str, x: str, y: str, scale: str = "Blues", midpoint: float | None = None):
    import plotly.express as px
    fig = px.imshow(table, text_auto=True, color_continuous_scale=scale, aspect="auto",
                    color_continuous_midpoint=midpoint,
                    labels={"x": x, "y": y, "color": "customers" if midpoint is None else "z-score"}, title=title)
    fig.update_xaxes(side="top")
    return fig


def _stacked(table: pd.DataFrame, title: str, legend: str):
    """Segments along x, a category (tier, status) per stack: the categories in shades of one grey-blue, so
    they are never mistaken for the segments' colours."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale
    shades = sample_colorscale("Blues", [0.35 + 0.6 * i / max(len(table.columns) - 1, 1) for i in range(len(table.columns))])
    fig = go.Figure([go.Bar(x=table.index.astype(str), y=table[c], name=str(c), marker_color=shade)
                     for c, shade in zip(table.columns, shades)])
    fig.update_layout(barmode="stack", title=title, xaxis_title="segment", yaxis_title="customers",
                      legend_title=legend, yaxis_tickformat=",")
    return fig


def _label(column: str) -> str:
    """An axis title from a column name: r_score -> R score."""
    text = column.replace("_", " ")
    return text[:1].upper() + text[1:]


def figures(result: "Insights", recipe: str | R.Recipe | None = None) -> dict:
    from .brief import pct
    a, c, cur = result.assumptions, result.concentration, result.currency
    figs = {
        "shares": _shares(result),
        "distribution": _bar(result.distribution, "customers", "Customers per segment",
                             text=[pct(s) for s in result.distribution.share], yaxis="customers"),
        "revenue": _bar(result.revenue, "revenue",
                        f"Revenue per segment: top segment ({c['top_segment']}) "
                        f"{c['top_segment_revenue_share']:.1%}, top {c['top_share']:.0%} of customers "
                        f"{c['top_customers_revenue_share']:.1%} of revenue",
                        text=[pct(s) for s in result.revenue.revenue_share], yaxis=_money_axis("revenue", cur)),
        "clv": _bar(result.clv, "avg_clv", f"Average CLV per customer<br><sup>{result.formula}</sup>",
                    yaxis=_money_axis("average CLV", cur)),
        "roi": _bar(result.roi, "roi",
                    f"Campaign ROI per segment = (incremental revenue − cost) / cost<br><sup>incremental "
                    f"revenue = uplift × revenue / {a['observation_years']:g} y; playbook assumptions</sup>",
                    text=[pct(r) for r in result.roi.roi], yaxis="ROI", tickformat=".0%", hover="%{y:.0%}"),
    }
    if result.profile is not None and not result.profile.empty:
        from .brief import recipe_of, words
        figs["profile"] = _profile_bars(result.profile, words(recipe_of(result))["customers"])
    if result.migration is not None and not result.migration.empty and not set(result.migration.change) <= {"new"}:
        figs["migration"] = _migration_sankey(result.migration, result.distribution.segment_name.astype(str).tolist())
    spec = R.get(recipe or recipe_of(result)).insights
    for b in spec.get("breakdowns") or []:
        table = result.extras[b["name"]]
        title = b.get("title") or f"{b['column']} by segment"
        legend = b.get("legend") or b["column"]
        figs[b["name"]] = (_heatmap(table, title, legend, "cluster") if b.get("chart") == "heatmap"
                           else _stacked(table, title, legend))
    for g in spec.get("grids") or []:
        grid = result.extras[g["name"]].copy()
        grid.index, grid.columns = grid.index.map(str), grid.columns.map(str)  # scores as labels: no 1.5 ticks
        figs[g["name"]] = _heatmap(grid, g.get("title") or f"{g['rows']} × {g['columns']}",
                                   _label(g["columns"]), _label(g["rows"]))
    return figs


# ---------------------------------------------------------------------------------------------------

@dataclass
class Insights:
    recipe: str
    run_id: str | None
    assumptions: dict
    formula: str
    distribution: pd.DataFrame
    revenue: pd.DataFrame
    concentration: dict
    performance: pd.DataFrame
    clv: pd.DataFrame
    roi: pd.DataFrame
    extras: dict[str, pd.DataFrame]
    profile: pd.DataFrame | None = None  # segment x feature z-scores (the profile step's), when given
    migration: pd.DataFrame | None = None  # this run's gold_segment_migration rows, when given
    currency: str = ""  # shown with amounts in the report; empty: plain numbers
    run_time: object = None  # when the run was logged (gold_segmentation_runs), when known
    spec: R.Recipe | None = None  # the recipe itself (a recipe file's name alone does not find it again)
    figures: dict = field(default_factory=dict)

    def headline(self) -> str:
        """The few numbers a reader wants first, as text."""
        c, a = self.concentration, self.assumptions
        return "\n".join([
            f"run {self.run_id or '(unknown)'}, {self.recipe} recipe: {c['customers']:,} customers in "
            f"{len(self.distribution)} segments, revenue {c['total_revenue']:,.2f}",
            f"revenue concentration: the top segment ({c['top_segment']}) brings {c['top_segment_revenue_share']:.1%}; "
            f"the top {c['top_share']:.0%} of customers ({c['top_customers']:,}) bring "
            f"{c['top_customers_revenue_share']:.1%}",
            self.formula,
            f"assumptions: gross margin {a['gross_margin']:g}, retention {a['retention_rate']:g} "
            f"(expected lifetime {a['expected_lifetime_years']:.2f} years), observation window "
            f"{a['observation_years']:g} years; ROI actions and costs: the recipe's playbook",
        ])


def segment_profiles(profile: DataFrame, run_segments: pd.DataFrame) -> pd.DataFrame:
    """The profile step's z-scores (seg_profile) as segment name x feature, for the segments of the
    run the gold table holds (k rows)."""
    pdf = profile.toPandas()
    z = [c for c in pdf.columns if c.startswith("z_")]
    pdf = pdf[pdf.segment_name.isin(set(run_segments.segment_name))].sort_values("segment")
    return pdf.set_index("segment_name")[z].rename(columns=lambda c: c[2:])


def _this_run(table: DataFrame, run_ids: list[str]) -> DataFrame:
    """The rows of the gold table's run(s): the migration and run log also hold earlier runs' rows."""
    return table.where(F.col("run_id").isin(run_ids)) if run_ids and "run_id" in table.columns else table


def insights(segments: DataFrame, recipe: str, gross_margin: float = GROSS_MARGIN,
             retention_rate: float = RETENTION_RATE, observation_years: float = OBSERVATION_YEARS,
             top_share: float = TOP_SHARE, playbook: dict[str, Action] | None = None,
             profile: DataFrame | None = None, migration: DataFrame | None = None,
             runs: DataFrame | None = None, currency: str = "") -> Insights:
    """Every table and figure of the insights notebook from gold_customer_segments_ml (either recipe) and,
    when given, the profile step's seg_profile (each segment's feature z-scores), gold_segment_migration
    (who moved since the last run) and gold_segmentation_runs (when this run was logged)."""
    check_assumptions(gross_margin, retention_rate, observation_years, top_share)
    recipe = R.get(recipe)
    values = customer_values(segments, recipe, gross_margin, retention_rate, observation_years)
    metrics = segment_metrics(values, recipe)
    runs_of_gold = sorted({r for r in (*metrics.run_min, *metrics.run_max) if r is not None and r == r})
    result = Insights(
        recipe=recipe.name, run_id=", ".join(runs_of_gold) or None,
        assumptions={"gross_margin": gross_margin, "retention_rate": retention_rate,
                     "expected_lifetime_years": expected_lifetime(retention_rate),
                     "observation_years": observation_years, "top_share": top_share},
        formula=clv_formula(gross_margin, retention_rate, observation_years),
        distribution=distribution(metrics), revenue=revenue_distribution(metrics),
        concentration=revenue_concentration(values, metrics, top_share), performance=performance(metrics, recipe),
        clv=clv_by_segment(metrics), roi=roi_scenarios(metrics, recipe.playbook if playbook is None else playbook, observation_years),
        extras=recipe_extras(values, metrics, recipe),
        profile=None if profile is None else segment_profiles(profile, metrics),
        currency=(currency or "").strip(), spec=recipe)
    if migration is not None:
        result.migration = _this_run(migration, runs_of_gold).toPandas()
    if runs is not None and runs_of_gold:
        logged = _this_run(runs, runs_of_gold).agg(F.max("run_time").alias("t")).first()["t"]
        result.run_time = logged
    result.figures = figures(result, recipe)
    return result


# ---------------------------------------------------------------------------------------------------
# Charts that render offline in report.html

OFFLINE_RENDERER = "seglib_offline"


def _inline_renderer():
    from plotly.io import to_html
    from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

    class InlineRenderer(MimetypeRenderer):
        """text/html carrying plotly.js inline in the kernel's first figure (later figures reuse the
        window.Plotly it defines), no MathJax from a CDN; plus plotly's JSON for editors that draw it.
        nbconvert's HTML ignores application/vnd.plotly.v1+json (it has no JS to draw it with)."""

        def __init__(self):
            self.state = {"plotlyjs_sent": False}  # shared: plotly renders with a shallow copy per figure

        def to_mimebundle(self, fig_dict):
            bundle = PlotlyRenderer().to_mimebundle(dict(fig_dict))
            bundle["text/html"] = to_html(fig_dict, include_plotlyjs=not self.state["plotlyjs_sent"],
                                          include_mathjax=False, full_html=False, default_width="100%",
                                          default_height=525, validate=False)
            self.state["plotlyjs_sent"] = True
            return bundle

    return InlineRenderer()


def use_offline_renderer() -> str:
    """Make fig.show() emit self-contained HTML (plotly.js inline once per kernel), so executed notebooks
    and report.html show their charts without network. Plotly's own default in a papermill kernel
    emits only application/vnd.plotly.v1+json, which nbconvert's HTML cannot draw. On Databricks its
    renderer is kept: there each output is a separate frame, so the JS would be missing from all but one.
    Returns the renderer now in use."""
    import plotly.io as pio
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return pio.renderers.default
    if OFFLINE_RENDERER not in pio.renderers:
        pio.renderers[OFFLINE_RENDERER] = _inline_renderer()
    pio.renderers.default = OFFLINE_RENDERER
    return OFFLINE_RENDERER
