"""Notebook parameters: widgets on Databricks, the parameters cell elsewhere; typed and checked."""
import ast
import itertools
import re
from pathlib import Path

import pytest

from seglib.errors import ParameterError
from seglib.params import PARAMS, notebook_params


class Widgets:
    """What dbutils.widgets does for a job run: job parameters are the widgets' values."""
    def __init__(self, job_values):
        self.job_values, self.created = job_values, {}

    def text(self, name, default):
        self.created[name] = default

    def get(self, name):
        return self.job_values.get(name, self.created[name])


class DbUtils:
    def __init__(self, job_values):
        self.widgets = Widgets(job_values)


def cell(**values):
    """A notebook namespace after its parameters cell ran."""
    return {"catalog": "", "schema": "contoso", "lakehouse": ".lakehouse", "k": 5, "seed": 42, **values}


def test_papermill_or_fabric_values_are_typed_and_written_back():
    ns = cell(k="7")  # a value injected as text
    assert notebook_params(ns) == {"catalog": "", "schema": "contoso", "lakehouse": ".lakehouse", "k": 7, "seed": 42}
    assert ns["k"] == 7


def test_databricks_widgets_declared_with_defaults_and_job_values_win():
    dbutils = DbUtils({"k": "6", "catalog": "main"})
    ns = cell(dbutils=dbutils)
    values = notebook_params(ns)
    assert dbutils.widgets.created == {"catalog": "", "schema": "contoso", "k": "5", "seed": "42"}  # no lakehouse
    assert values["k"] == 6 and values["catalog"] == "main" and values["schema"] == "contoso"
    assert ns["k"] == 6
    auto = notebook_params(cell(k="Auto", mode="score", k_range=" 4 - 6", run_id="123-abc"))
    assert auto["k"] == "auto" and auto["mode"] == "score" and auto["k_range"] == "4-6" and auto["run_id"] == "123-abc"


@pytest.mark.parametrize("name,value,message", [
    ("k", "0", "k must be a whole number >= 2 or auto, got '0'"),
    ("k", "1", "k must be a whole number >= 2 or auto"),
    ("k", "five", "k must be a whole number >= 2 or auto, got 'five'"),
    ("k_range", "8-3", "k_range must look like 3-8"),
    ("mode", "refit", "mode must be one of fit, score, got 'refit'"),
    ("n_init", "0", "n_init must be a whole number >= 1"),
    ("stability_runs", "-1", "stability_runs must be a whole number >= 0"),
    ("run_id", "a b;c", "run_id must be empty or match"),
    ("schema", "contoso; DROP TABLE x", r"schema must match \[A-Za-z0-9_\]\+"),
    ("catalog", "ma`in", "catalog must match"),
    ("schema", "", "schema must match"),
    ("null_policy", "zero", "null_policy must be one of impute, drop, got 'zero'"),
    ("feature_transform", "sqrt", "feature_transform must be one of log1p, none"),
])
def test_bad_values_name_the_parameter(name, value, message):
    with pytest.raises(ParameterError, match=message):
        notebook_params(cell(**{name: value, "null_policy": "impute", "feature_transform": "log1p"}
                             | {name: value}))


def test_only_declared_parameters_are_touched():
    ns = {"schema": "s1", "other": "x"}
    assert notebook_params(ns) == {"schema": "s1"}
    assert ns["other"] == "x"


def _readme_parameter_table() -> dict[str, str]:
    """The README's parameter table: name -> the default it states, for rows stating plain defaults."""
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = lines.index("| parameter | default | meaning |") + 2
    table = {}
    for line in itertools.takewhile(lambda s: s.startswith("|"), lines[start:]):
        cells = line.split("|")
        names = re.findall(r"`([a-z_]+)`", cells[1])
        defaults = re.findall(r"`([^`]*)`", cells[2])
        for i, name in enumerate(names):
            # "job: `{{job.run_id}}`" is not a notebook default; `""` stands for the empty text.
            table[name] = None if cells[2].strip().startswith("job:") else defaults[i].replace('""', "")
    return table


def test_the_readme_documents_every_parameter_with_the_notebooks_default():
    """PARAMS is the list of parameters: the README names each of them (in its table, or in the section
    on OneLake paths and secrets), its table names no other, and states the notebooks' defaults."""
    import papermill as pm
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = _readme_parameter_table()
    assert set(table) <= set(PARAMS), set(table) - set(PARAMS)
    assert [name for name in PARAMS if f"`{name}`" not in readme] == []
    defaults = {}
    for notebook in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for name, p in pm.inspect_notebook(str(notebook)).items():
            defaults.setdefault(name, set()).add(str(ast.literal_eval(p["default"])))
    assert all(len(values) == 1 for values in defaults.values()), defaults  # one default per parameter
    stated = {name: value for name, value in table.items() if value is not None}
    assert stated and {name: defaults[name].copy().pop() for name in stated} == stated
