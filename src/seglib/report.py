"""report.html: executed notebooks (the run's 06_insights) as one page that opens offline.

The page shows markdown and outputs, not code: it is read by people who want the numbers and charts
(the insights notebook's executive summary and segment cards come first); the code is one click away in
the executed notebook beside it. nbconvert's lab template loads require.js, MathJax and mermaid from a
CDN; none of them is needed here (plotly.js is inline in the first chart, see
insights.use_offline_renderer) and a page that waits on a blocked CDN opens slowly offline, so the
template below drops them and adds the report's own styles (a readable width, a print stylesheet).
"""
from __future__ import annotations

import html
from pathlib import Path

INSIGHTS_NOTEBOOK = "06_insights.ipynb"

_TEMPLATE_NAME = "seglib_report.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style>{{ resources.seglib_css }}</style><script>{{ resources.seglib_js }}</script>{%- endblock extra_css -%}
"""
# A chart keeps the pixel width it was drawn at on screen, and a printed page is narrower: it would be cut
# at the page's edge. Each chart gets the zoom that fits it into PRINT_WIDTH_PX, used by the print styles
# only (the screen is unchanged). Set once the charts have their size.
PRINT_WIDTH_PX = 680  # A4 or Letter at 96 dpi, less the margins
PAGE_JS = """
window.addEventListener('load', function () {
  document.querySelectorAll('.js-plotly-plot').forEach(function (plot) {
    var width = plot.getBoundingClientRect().width;
    plot.style.setProperty('--print-zoom', width > %(width)d ? (%(width)d / width).toFixed(4) : '1');
  });
});
""" % {"width": PRINT_WIDTH_PX}
# The page around the notebook's outputs: a laptop-width column, sans-serif text, no empty prompt gutters;
# printed, the charts and cards stay whole and the colours print.
PAGE_CSS = """
body.jp-Notebook{max-width:1240px;margin:0 auto;padding:18px 28px 60px;
  font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2933}
.jp-InputPrompt,.jp-OutputPrompt{display:none!important}
.jp-Cell,.jp-OutputArea-output{padding-left:0!important;padding-right:0!important}
.jp-OutputArea-child{display:block}
.jp-RenderedHTMLCommon{font-size:15px;line-height:1.5;padding-right:0}
.jp-RenderedHTMLCommon table.seg-data{margin:.4em 0 1em;font-size:14px}
.jp-RenderedHTMLCommon h2{border-bottom:2px solid #e4e7eb;padding-bottom:.2em;margin-top:1.6em}
.seg-appendix td,.seg-appendix th{text-align:left!important}
@media print{
  body.jp-Notebook{max-width:none;padding:0}
  .jp-Cell{break-inside:avoid}
  .js-plotly-plot,.plotly-graph-div{break-inside:avoid}
  .js-plotly-plot{zoom:var(--print-zoom,1)}
  .modebar-container{display:none!important}
  .jp-OutputArea-output{overflow:visible!important}
  .jp-RenderedHTMLCommon table{font-size:10px!important}
  .jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{padding:2px 4px!important}
  h2{break-after:avoid}
}
"""
# Cells that only set the notebook up: the parameters (an appendix lists them) and cells tagged remove-cell.
_SKIP_TAGS = {"parameters", "injected-parameters", "remove-cell"}


def _notebooks(executed: list[Path] | Path) -> list[Path]:
    if isinstance(executed, (str, Path)) and Path(executed).is_dir():
        path = Path(executed) / INSIGHTS_NOTEBOOK
        if not path.is_file():
            raise FileNotFoundError(f"{executed} holds no {INSIGHTS_NOTEBOOK}; the report is built from it")
        return [path]
    paths = [Path(executed)] if isinstance(executed, (str, Path)) else [Path(p) for p in executed]
    if not paths:
        raise ValueError("write_report needs at least one executed notebook")
    return paths


def shown_parameters(params: dict) -> dict:
    """The parameters a reader may see: set ones, never secret-related ones (even their names) or the
    local-only ones."""
    from .params import LOCAL_ONLY, SECRET_RELATED
    return {k: v for k, v in sorted(params.items())
            if k not in SECRET_RELATED and k not in LOCAL_ONLY and v is not None and str(v).strip() != ""}


def _appendix(paths: list[Path], notebooks: list) -> str:
    params = {}
    for nb in notebooks:
        params.update(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in shown_parameters(params).items())
    names = ", ".join(html.escape(p.name) for p in paths)
    return ("<h2>Appendix: run parameters</h2>"
            + (f'<table class="seg-data seg-appendix" id="parameters">{rows}</table>' if rows else "<p>Defaults.</p>")
            + f"<p>Built from the executed notebook(s) {names} in <code>{html.escape(str(paths[0].parent))}</code>, "
              "which show the code.</p>")


def write_report(executed: list[Path] | Path, out: Path) -> Path:
    """One HTML page from executed notebooks (a list of .ipynb, one .ipynb, or a run folder: its
    06_insights), without code, ending with an appendix of the run's parameters. Returns *out*."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    paths = _notebooks(executed)
    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    report = nbformat.v4.new_notebook(metadata=notebooks[0].metadata)
    for path, nb in zip(paths, notebooks):
        if len(paths) > 1:
            report.cells.append(nbformat.v4.new_markdown_cell(f"## {path.stem}"))
        for cell in nb.cells:
            if _SKIP_TAGS & set(cell.metadata.get("tags", [])):
                continue
            if cell.cell_type == "code" and not cell.outputs:
                continue  # with inputs hidden it would be an empty block
            report.cells.append(cell)
    report.cells.append(nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": _appendix(paths, notebooks)})]))
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                            template_file=_TEMPLATE_NAME, exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    params = {}
    for nb in notebooks:
        params.update(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    title = f"Customer segments, run {params.get('run_id') or paths[0].parent.name}"
    body, _ = exporter.from_notebook_node(report, resources={"metadata": {"name": title}, "seglib_css": PAGE_CSS,
                                                                  "seglib_js": PAGE_JS})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out
