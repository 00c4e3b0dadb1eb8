"""Runner helpers (no Spark)."""
import pytest

from seglib.errors import ParameterError
from seglib.runner import PIPELINE, _coerce, declared_parameters, notebooks_dir, parse_params


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
    for name in PIPELINE:
        declared = declared_parameters(notebooks_dir() / f"{name}.ipynb")
        assert {"catalog", "schema", "lakehouse"} <= set(declared)
    assert declared_parameters(notebooks_dir() / "03_cluster.ipynb")["k"] == "int"


def test_notebooks_are_committed_without_outputs():
    import nbformat
    for path in notebooks_dir().glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
