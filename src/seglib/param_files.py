"""The files made from the parameter table (`seglib.params.PARAMS`), so a parameter is described once:

- each notebook's `parameters` cell: the parameters its job tasks read, with their type, default and help;
- the descriptions of the bundle variables that carry a parameter (`databricks.yml`);
- the bundle variables in `.env.example` (every variable, with its default and description);
- the README's parameter table.

`seglib params` rewrites them; `seglib validate` and the tests fail while one of them is stale.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from . import bundle as B
from .params import PARAMS

README_BEGIN = "<!-- parameters: made by `seglib params` from src/seglib/params.py; edit them there -->"
README_END = "<!-- end of parameters -->"
ENV_BEGIN = "# made by `seglib params` from the variables in databricks.yml; edit them there"
ENV_END = "# end of the bundle variables"


def _notebooks(bundle: B.Bundle) -> dict[Path, set[str]]:
    """Each notebook a job runs -> the task keys that run it."""
    tasks: dict[Path, set[str]] = {}
    for job in bundle.resources("jobs"):
        for task in bundle.tasks(job):
            if task.notebook is not None:
                tasks.setdefault(task.notebook, set()).add(task.key)
    unknown = {t for p in PARAMS.values() for t in p.tasks} - {t for keys in tasks.values() for t in keys}
    if unknown:
        raise B.BundleError(f"seglib.params names tasks no job has: {', '.join(sorted(unknown))}")
    return tasks


def _literal(value) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parameters_cell(task_keys: set[str]) -> str:
    """The parameters cell of a notebook run by *task_keys*: every parameter one of them reads."""
    import nbformat
    from papermill.translators import PythonTranslator

    names = [name for name, p in PARAMS.items() if task_keys & set(p.tasks)]
    source = "\n".join(f"{name}: {PARAMS[name].kind} = {_literal(PARAMS[name].default)}  # {PARAMS[name].help}"
                       for name in names)
    # papermill skips a line it cannot parse (e.g. one whose help holds "="): it would not know that parameter.
    parsed = [p.name for p in PythonTranslator.inspect(nbformat.v4.new_code_cell(source))]
    for name in names:
        if name not in parsed:
            raise B.BundleError(f"seglib.params: papermill cannot read the line of parameter {name} "
                                f"({PARAMS[name].help!r}); its help must not hold '='")
    return source


def _numbers(notebooks: list[Path]) -> str:
    """01_load, 02_features, 03_cluster -> 01-03."""
    numbers = sorted(int(p.name[:2]) for p in notebooks)
    runs, start = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start:02d}" if start == a else f"{start:02d}-{a:02d}")
            start = b
    return ", ".join(runs)


def readme_table(bundle: B.Bundle) -> str:
    notebooks = _notebooks(bundle)
    job_defaults: dict[str, set[str]] = {}
    for job in bundle.resources("jobs"):
        for name, value in bundle.parameters(job).items():
            job_defaults.setdefault(name, set()).add(value)
    rows = ["| parameter | default | notebooks | meaning |", "|---|---|---|---|"]
    for name, p in PARAMS.items():
        default = f"`{_literal(p.default) if p.default == '' else p.default}`"
        others = sorted(job_defaults.get(name, set()) - {str(p.default)})
        if others:
            default += " (job: " + ", ".join(f"`{v}`" for v in others) + ")"
        readers = _numbers([nb for nb, keys in notebooks.items() if keys & set(p.tasks)])
        meaning = p.help + (f"; {p.more}" if p.more else "")
        rows.append(f"| `{name}` | {default} | {readers} | {meaning} |")
    return "\n".join(rows)


def _yaml_text(text: str) -> str:
    """*text* as a YAML scalar: plain when YAML reads it back unchanged, else double-quoted."""
    try:
        plain = yaml.safe_load(f"x: {text}") == {"x": text}
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def _bundle_descriptions(text: str) -> str:
    """databricks.yml with each parameter-carrying variable's description set to the parameter's help."""
    lines, variable, in_variables = text.splitlines(keepends=True), None, False
    for i, line in enumerate(lines):
        if not line.startswith(" ") and line.strip():
            in_variables = line.startswith("variables:")
        elif in_variables and line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            variable = line.strip()[:-1]
        elif in_variables and variable in PARAMS and line.startswith("    description:"):
            help_ = PARAMS[variable].help
            lines[i] = f"    description: {_yaml_text(help_)}\n"
    return "".join(lines)


def _between(text: str, begin: str, end: str, body: str, where: str) -> str:
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise B.BundleError(f"{where} must hold the lines {begin!r} and {end!r}, once each and in that order")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def _env_variables(bundle_text: str) -> str:
    variables = yaml.safe_load(bundle_text).get("variables") or {}
    lines = []
    for name, spec in variables.items():
        default = (spec or {}).get("default")
        assignment = f"BUNDLE_VAR_{name}={'' if default is None else default}"
        lines.append(f"{assignment:<38} # {(spec or {}).get('description', '')}")
    return "\n".join(lines)


def render(root: Path) -> dict[Path, str]:
    """The text each made file should have (files that are absent are left to other checks)."""
    import nbformat

    bundle = B.load(root)
    bundle.environment = False  # the repository's defaults, whatever BUNDLE_VAR_x this shell has
    files: dict[Path, str] = {}
    for notebook, keys in sorted(_notebooks(bundle).items()):
        if not notebook.is_file():
            continue
        nb = nbformat.read(str(notebook), as_version=nbformat.NO_CONVERT)
        cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if len(cells) != 1:
            raise B.BundleError(f"{notebook.name}: {len(cells)} cells tagged `parameters`, expected one")
        cells[0].source = parameters_cell(keys)
        text = nbformat.writes(nb)
        files[notebook] = text if text.endswith("\n") else text + "\n"  # as nbformat.write
    bundle_file = root / "databricks.yml"
    files[bundle_file] = _bundle_descriptions(bundle_file.read_text())
    env, readme = root / ".env.example", root / "README.md"
    if env.is_file():
        files[env] = _between(env.read_text(), ENV_BEGIN, ENV_END, _env_variables(files[bundle_file]), env.name)
    if readme.is_file():
        files[readme] = _between(readme.read_text(), README_BEGIN, README_END, readme_table(bundle), readme.name)
    return files


def stale(root: Path) -> list[str]:
    """Each made file that differs from what the parameter table says."""
    return [f"{path.relative_to(root)} is not what seglib.params describes: run `seglib params`"
            for path, text in render(root).items() if path.read_text() != text]


def write(root: Path) -> list[Path]:
    """Rewrite the stale files; returns them."""
    written = []
    for path, text in render(root).items():
        if path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written

