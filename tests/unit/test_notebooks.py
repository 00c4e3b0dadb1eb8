"""The notebooks as files (no Spark): each carries the same three-line set-up cell and the kernel metadata
Microsoft Fabric's import reads, and none is committed with outputs. The set-up cell's import is run as it is
in the JSON, in a Python where seglib is not importable, from the places a notebook runs."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SET_UP = "-set-up"  # the set-up cell's id: <notebook number>-set-up

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


def test_every_notebook_has_the_same_three_line_set_up_cell_and_fabric_metadata():
    assert len(NOTEBOOKS) == 7
    cells = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
        for key, value in FABRIC.items():
            assert nb.metadata.get(key) == value, f"{path.name}: metadata {key} is {nb.metadata.get(key)!r}"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{path.name} has outputs"
        # the parameters, then the set-up cell: seglib, its parameters, Spark and where the tables live
        assert "parameters" in code[0].metadata.get("tags", []) and code[1].id.endswith(SET_UP), path.name
        cells[path.name] = _set_up_cell(path)
        assert len(cells[path.name].splitlines()) <= 3, cells[path.name]
        assert cells[path.name].splitlines()[-1].startswith("params, spark, where = setup(globals())"), path.name
    assert len(set(cells.values())) == 1, "the set-up cells differ: " + ", ".join(cells)


# Runs the set-up cell's import (its lines up to `from seglib import ...`, read from stdin) as a notebook
# would, in a Python started with -I -S: no site-packages (the venv's editable seglib), no PYTHONPATH, no
# working directory on sys.path. An "installed" seglib, when given, stands where site-packages would: on
# sys.path before the cell runs. Prints which seglib was imported, or the error.
RUN_CELL = r"""
import importlib.util, json, sys
installed = json.loads(sys.argv[1])
if installed:
    sys.path.insert(0, installed)
elif importlib.util.find_spec("seglib") is not None:
    sys.exit("seglib is importable before the cell runs: the test proves nothing")
try:
    exec(compile(sys.stdin.read(), "<set-up cell>", "exec"), {"__name__": "__main__"})
except ImportError as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
else:
    import os
    print(json.dumps({"seglib": os.path.realpath(sys.modules["seglib"].__file__)}))
"""


def run_set_up_import(cwd: Path, installed: Path | None = None) -> dict:
    lines = _set_up_cell(NOTEBOOKS[1]).splitlines()
    imports = "\n".join(lines[:next(i for i, line in enumerate(lines) if line.startswith("from seglib")) + 1])
    imports = imports.replace("from seglib import setup, tables as TB", "import seglib")  # no pyspark here
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", RUN_CELL, json.dumps(str(installed or ""))],
                          cwd=cwd, input=imports, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("cwd", ["notebooks", "."])
def test_without_the_wheel_the_set_up_cell_uses_the_repository_src(cwd):
    """Databricks (Runtime 14+, serverless), Jupyter and VS Code run a notebook in its folder; a job may
    run it from the repository root."""
    assert run_set_up_import(ROOT / cwd) == {"seglib": str(ROOT / "src" / "seglib" / "__init__.py")}


def test_an_installed_wheel_wins_over_the_repository_src(tmp_path):
    """A job's environment installs the wheel: the cell must not shadow it with the clone's src/."""
    (tmp_path / "site" / "seglib").mkdir(parents=True)
    (tmp_path / "site" / "seglib" / "__init__.py").write_text("")
    found = run_set_up_import(ROOT / "notebooks", installed=tmp_path / "site")
    assert found == {"seglib": str(tmp_path / "site" / "seglib" / "__init__.py")}


def test_without_the_wheel_nor_the_repository_the_import_fails(tmp_path):
    """Fabric without the Environment's wheel, or a copy of a notebook alone: seglib is not there."""
    assert run_set_up_import(tmp_path) == {"error": "ModuleNotFoundError: No module named 'seglib'"}
