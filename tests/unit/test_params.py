"""Notebook parameters: widgets on Databricks, the parameters cell elsewhere; typed and checked."""
import shutil
from pathlib import Path

import pytest

from seglib.bundle import BundleError
from seglib.errors import ParameterError
from seglib import param_files
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


ROOT = Path(__file__).resolve().parents[2]
# The repository as `seglib validate` reads it (the files made from seglib.params among them)
REPOSITORY = ["databricks.yml", ".env.example", "README.md", "resources", "notebooks", "dashboards", "recipes", "pipelines"]


def test_every_default_is_a_valid_value():
    for name, p in PARAMS.items():
        p.parse(p.default)  # raises ParameterError, naming the parameter, on a bad default
        assert p.kind in {"str", "int", "float"}, name


def test_the_files_made_from_the_parameter_table_are_current():
    """The notebooks' parameters cells, the variables' descriptions, .env.example and the README's table."""
    assert param_files.stale(ROOT) == []


def test_a_help_text_papermill_cannot_read_is_refused(monkeypatch):
    """papermill skips a parameters line whose comment holds "=": the parameter would go unseen."""
    import dataclasses
    monkeypatch.setitem(PARAMS, "k", dataclasses.replace(PARAMS["k"], help="k=auto sweeps"))
    with pytest.raises(BundleError, match="papermill cannot read the line of parameter k"):
        param_files.render(ROOT)


@pytest.fixture
def repository(tmp_path):
    for name in REPOSITORY:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    return tmp_path


def test_a_hand_edit_is_found_and_seglib_params_puts_the_table_back(repository):
    edits = {"notebooks/03_cluster.ipynb": ('k: str = \\"5\\"', 'k: str = \\"6\\"'),
             "databricks.yml": ("description: number of segments", "description: how many segments"),
             ".env.example": ("BUNDLE_VAR_k=5  ", "BUNDLE_VAR_k=6  "),
             "README.md": ("| `k` | `5` | 03 |", "| `k` | `6` | 03 |")}
    for name, (old, new) in edits.items():
        text = (repository / name).read_text()
        assert old in text, (name, old)
        (repository / name).write_text(text.replace(old, new, 1))
    assert sorted(p.split(" ")[0] for p in param_files.stale(repository)) == sorted(edits)
    assert sorted(str(p.relative_to(repository)) for p in param_files.write(repository)) == sorted(edits)
    for name in edits:
        assert (repository / name).read_text() == (ROOT / name).read_text(), name
    assert param_files.stale(repository) == []


def test_a_parameter_is_described_once_and_reaches_every_file(repository, monkeypatch):
    """Changing a row of PARAMS changes the notebooks that read it, the variable, .env.example and the README;
    a task that reads it gets it in its notebook's parameters cell."""
    import dataclasses
    import papermill as pm
    k = dataclasses.replace(PARAMS["k"], help="how many segments", tasks=("cluster", "profile"))
    monkeypatch.setitem(PARAMS, "k", k)
    written = {str(p.relative_to(repository)) for p in param_files.write(repository)}
    assert written == {"notebooks/03_cluster.ipynb", "notebooks/04_profile.ipynb", "databricks.yml", ".env.example",
                       "README.md"}
    for notebook in ("03_cluster", "04_profile"):
        declared = pm.inspect_notebook(str(repository / "notebooks" / f"{notebook}.ipynb"))["k"]
        assert (declared["inferred_type_name"], declared["default"], declared["help"]) == \
            ("str", '"5"', "how many segments")
    assert "  k:\n    description: how many segments\n" in (repository / "databricks.yml").read_text()
    assert "BUNDLE_VAR_k=5                         # how many segments\n" in (repository / ".env.example").read_text()
    assert "| `k` | `5` | 03-04 | how many segments |" in (repository / "README.md").read_text()
    # the job passes k, but profile's notebook now reads it too: nothing else to change in the job YAML
    from seglib.validate import check
    assert check(repository) == []
