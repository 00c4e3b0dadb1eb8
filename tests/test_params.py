"""Notebook parameters: widgets on Databricks, the parameters cell elsewhere; typed and checked."""
import pytest

from seglib.errors import ParameterError
from seglib.params import notebook_params


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
