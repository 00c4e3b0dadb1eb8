"""The notebooks as files (no Spark): each carries the same set-up cell that finds seglib and the kernel
metadata Microsoft Fabric's import reads, and none is committed with outputs. The set-up cell is run as it
is in the JSON, in a Python where seglib is not importable, from the places a notebook runs."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SET_UP = "-find-seglib"  # the set-up cell's id: <notebook number>-find-seglib

# What a notebook Fabric exports carries, so an imported one opens as a PySpark notebook; the kernelspec stays
# Jupyter's python3, which papermill and Jupyter run it with.
FABRIC = {"kernel_info": {"name": "synapse_pyspark"},
          "microsoft": {"language": "python", "language_group": "synapse_pyspark"},
          "language_info": {"name": "python"},
          "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}


def _set_up_cell(path: Path) -> str:
    cells = [c for c in json.loads(path.read_text())["cells"] if c.get("id", "").endswith(SET_UP)]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells with id *{SET_UP}"
    return "".join(cells[0]["source"])


def test_every_notebook_has_the_same_set_up_cell_and_fabric_metadata():
    assert len(NOTEBOOKS) == 7
    cells = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        for key, value in FABRIC.items():
            assert nb.metadata.get(key) == value, f"{path.name}: metadata {key} is {nb.metadata.get(key)!r}"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"
        # parameters, then the set-up cell, then the cell that reads the parameters
        assert "parameters" in code[0].metadata.get("tags", []) and code[1].id.endswith(SET_UP), path.name
        assert "seglib.setup(globals())" in code[2].source, path.name
        cells[path.name] = _set_up_cell(path)
        assert 'os.path.join(os.getcwd(), "..", "src")' not in "".join(c.source for c in code), path.name
    assert len(set(cells.values())) == 1, "the set-up cells differ: " + ", ".join(cells)


# Runs the set-up cell (stdin) as a notebook would, in a Python started with -I -S: no site-packages (the
# venv's editable seglib), no PYTHONPATH, no working directory on sys.path. Prints where seglib came from.
RUN_CELL = r"""
import importlib.util, json, sys, types
options = json.loads(sys.argv[1])
if importlib.util.find_spec("seglib") is not None:
    sys.exit("seglib is importable before the cell runs: the test proves nothing")
namespace = {"__name__": "__main__"}
if options.get("databricks_path"):  # what a Databricks notebook's dbutils says about it
    path = options["databricks_path"]
    context = types.SimpleNamespace(notebookPath=lambda: types.SimpleNamespace(get=lambda: path))
    notebook = types.SimpleNamespace(getContext=lambda: context)
    namespace["dbutils"] = types.SimpleNamespace(notebook=types.SimpleNamespace(
        entry_point=types.SimpleNamespace(getDbutils=lambda: types.SimpleNamespace(notebook=lambda: notebook))))
if options.get("jupyter_session"):  # ipykernel's __session__: the notebook's path, from the Jupyter server
    namespace["__session__"] = options["jupyter_session"]
try:
    exec(compile(sys.stdin.read(), "<set-up cell>", "exec"), namespace)
except ImportError as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
else:
    print(json.dumps({"seglib": namespace["seglib"].__file__}))
"""


def run_set_up_cell(cwd: Path, **options) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", RUN_CELL, json.dumps(options)], cwd=cwd,
                          input=_set_up_cell(NOTEBOOKS[1]), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def clone(tmp_path):
    """Another copy of the repository: its notebooks/ folder and a src/seglib of its own."""
    (tmp_path / "clone" / "notebooks").mkdir(parents=True)
    (tmp_path / "clone" / "src" / "seglib").mkdir(parents=True)
    (tmp_path / "clone" / "src" / "seglib" / "__init__.py").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return tmp_path / "clone", elsewhere


@pytest.mark.parametrize("cwd", ["notebooks", "."])
def test_without_the_wheel_the_set_up_cell_finds_the_repository_src(cwd):
    """Jupyter or papermill in notebooks/, or a job whose working directory is the repository root."""
    assert run_set_up_cell(ROOT / cwd) == {"seglib": str(ROOT / "src" / "seglib" / "__init__.py")}


def test_without_the_wheel_nor_the_repository_it_says_what_to_do(clone):
    """Fabric, or a working directory outside the repository: an ImportError that says to install the wheel."""
    _, elsewhere = clone
    error = run_set_up_cell(elsewhere)["error"]
    assert error.startswith(f"ImportError: seglib is not installed and no src/seglib was found above {elsewhere}: "
                            "install the seglib wheel (Fabric: a custom library of the notebook's Environment; "
                            "Databricks: the job's environment or a cluster library), or open the notebook from "
                            "the seglib repository"), error


def test_on_databricks_it_looks_above_the_notebooks_workspace_folder(clone):
    """Databricks names the notebook's workspace path (without /Workspace, where its files are); the
    working directory of a job task may be anywhere."""
    repository, elsewhere = clone
    found = run_set_up_cell(elsewhere, databricks_path=f"/Workspace/..{repository}/notebooks/01_load")
    assert found == {"seglib": str(repository / "src" / "seglib" / "__init__.py")}
    error = run_set_up_cell(elsewhere, databricks_path="/Users/someone@example.com/seglib/notebooks/01_load")["error"]
    assert f"found above /Workspace/Users/someone@example.com/seglib/notebooks or {elsewhere}:" in error, error


def test_in_jupyter_it_looks_above_the_notebooks_folder(clone):
    repository, elsewhere = clone
    found = run_set_up_cell(elsewhere, jupyter_session=str(repository / "notebooks" / "05_write.ipynb"))
    assert found == {"seglib": str(repository / "src" / "seglib" / "__init__.py")}
