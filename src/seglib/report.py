"""report.html: executed notebooks (the run's 06_insights) as one page that opens offline.

The page shows markdown and outputs, not code: it is read by people who want the numbers and charts;
the code is one click away in the executed notebook beside it. nbconvert's lab template loads
require.js, MathJax and mermaid from a CDN; none of them is needed here (plotly.js is inline in the
first chart, see insights.use_offline_renderer) and a page that waits on a blocked CDN opens slowly
offline, so the template below drops them.
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
"""
# Cells that only set the notebook up; their code is hidden anyway and they print nothing a reader needs.
_SKIP_TAGS = {"parameters", "injected-parameters"}


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


def _header(paths: list[Path], notebooks: list) -> str:
    params = {}
    for nb in notebooks:
        params.update(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    run = params.get("run_id") or paths[0].parent.name
    lines = [f"# Segmentation report, run {run}", "",
             f"From {', '.join(f'`{p.name}`' for p in paths)} (executed notebooks in `{paths[0].parent}`).", ""]
    if params:
        lines += ["| parameter | value |", "|---|---|"]
        lines += [f"| {html.escape(str(k))} | {html.escape(str(v)).replace('|', '&#124;')} |"
                  for k, v in sorted(params.items())]
    return "\n".join(lines)


def write_report(executed: list[Path] | Path, out: Path) -> Path:
    """One HTML page from executed notebooks (a list of .ipynb, one .ipynb, or a run folder: its
    06_insights), with a header naming the run and its parameters. Returns *out*."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    paths = _notebooks(executed)
    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    report = nbformat.v4.new_notebook(metadata=notebooks[0].metadata)
    report.cells.append(nbformat.v4.new_markdown_cell(_header(paths, notebooks)))
    for path, nb in zip(paths, notebooks):
        if len(paths) > 1:
            report.cells.append(nbformat.v4.new_markdown_cell(f"## {path.stem}"))
        for cell in nb.cells:
            if _SKIP_TAGS & set(cell.metadata.get("tags", [])):
                continue
            if cell.cell_type == "code" and not cell.outputs:
                continue  # with inputs hidden it would be an empty block
            report.cells.append(cell)
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                            template_file=_TEMPLATE_NAME, exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    title = f"seglib report {paths[0].parent.name}"
    body, _ = exporter.from_notebook_node(report, resources={"metadata": {"name": title}})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out
