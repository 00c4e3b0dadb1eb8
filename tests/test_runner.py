"""Runner helpers (no Spark)."""
from pathlib import Path

import pytest

from seglib import bundle as B
from seglib.errors import ParameterError
from seglib.runner import SEGMENTATION_JOB, _coerce, declared_parameters, job_notebooks, job_params, parse_params

BUNDLE = B.load(Path(__file__).resolve().parents[1])


def test_parse_params():
    assert parse_params(["k=7", "null_policy=drop", "model_path=a=b"]) == {
        "k": "7", "null_policy": "drop", "model_path": "a=b"}
    with pytest.raises(ParameterError, match="key=value"):
        parse_params(["k"])


def test_coerce_follows_the_notebook_default_type():
    assert _coerce("7", "int") == 7
    assert _coerce("five", "int") == "five"  # left for seglib's own validation to reject by name
    assert _coerce("007", "str") == "007"


def test_every_pipeline_notebook_declares_a_tagged_parameters_cell():
    paths = job_notebooks(BUNDLE, SEGMENTATION_JOB)
    assert [p.stem for p in paths] == ["01_load", "02_features", "03_cluster", "04_profile", "05_write", "06_insights"]
    for path in paths:
        assert {"catalog", "schema", "lakehouse"} <= set(declared_parameters(path))
    assert declared_parameters(paths[2])["k"] == "str"  # a number or auto


def test_local_parameters_are_the_job_defaults_then_the_users():
    params = job_params(BUNDLE, SEGMENTATION_JOB, {"k": "7"}, "/tmp/lh")
    assert params["k"] == "7" and params["seed"] == "42" and params["null_policy"] == "impute"
    assert params["catalog"] == "" and params["lakehouse"] == "/tmp/lh"  # one local catalog
    with pytest.raises(ParameterError, match="unknown parameter.*kk for job segmentation"):
        job_params(BUNDLE, SEGMENTATION_JOB, {"kk": "7"}, "/tmp/lh")


def test_notebooks_are_committed_without_outputs():
    import nbformat
    for path in (BUNDLE.root / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize("command", ["generate", "demo"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_customers_must_be_a_positive_count(command, value, capsys):
    from seglib.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--customers", value])
    assert f"argument --customers: must be a whole number >= 1, got '{value}'" in capsys.readouterr().err
