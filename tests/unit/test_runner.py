"""Runner helpers (no Spark)."""
from pathlib import Path

import pytest

from seglib import bundle as B
from seglib.errors import ParameterError
from seglib.local.runner import SEGMENTATION_JOB, _coerce, declared_parameters, job_notebooks, job_params, parse_params

BUNDLE = B.load(Path(__file__).resolve().parents[2])


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


def _notebook(path: Path, *cells: str) -> Path:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, str(path))
    return path


def _pid_alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _live_children() -> list[int]:
    """This process's child processes still running (Linux /proc; zombies do not count)."""
    import os
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split() if stat else []
        if fields and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_each_notebook_gets_a_fresh_kernel_with_its_imports_loaded_ahead(tmp_path):
    """Kernels are started ahead and preload what their notebook imports, but every notebook still has a
    process and a namespace of its own, and gets its parameters."""
    from seglib.local.runner import _execute
    record = tmp_path / "record.txt"
    first = _notebook(tmp_path / "a.ipynb", "n = 0",
                      f"import os, sys\nleaked = 'secret'\nopen({str(record)!r}, 'a').write(f'a {{os.getpid()}} {{n}}\\n')")
    second = _notebook(tmp_path / "b.ipynb", "n = 0",
                       # before this notebook imports anything: its late import is already loaded, unbound
                       "import sys as _s\nahead = all(m in _s.modules and m not in globals() for m in "
                       "('fractions', 'late_helper', 'helper_needs'))\n"
                       "alone = 'leaked' not in globals() and 'importlib' not in globals() and 'm' not in globals()",
                       f"import os\nopen({str(record)!r}, 'a').write(f'b {{os.getpid()}} {{n}} {{ahead}} {{alone}}\\n')",
                       "from fractions import Fraction\nimport late_helper")
    # A module can name what it imports only later, when called (seglib.tracking: mlflow).
    (tmp_path / "late_helper.py").write_text("__preload__ = ('helper_needs',)\n")
    (tmp_path / "helper_needs.py").write_text("")
    declared = {"a": {"n": "int"}, "b": {"n": "int"}}
    result = _execute([first, second], declared, {"n": "7"}, tmp_path / "out", log=lambda *a, **k: None)
    assert list(result.timings) == ["a", "b"]
    (a, pid_a, n_a), (b, pid_b, n_b, ahead, alone) = [line.split() for line in record.read_text().splitlines()]
    assert (a, b, n_a, n_b) == ("a", "b", "7", "7")
    assert pid_a != pid_b
    assert ahead == "True" and alone == "True"
    assert not _pid_alive(int(pid_a)) and not _pid_alive(int(pid_b))  # shut down once the run ends


def test_a_failing_notebook_stops_the_run_and_every_kernel(tmp_path):
    from seglib.local.runner import NotebookFailure, _execute
    pids = tmp_path / "pids.txt"
    cells = ["n = 0", f"import os\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')"]
    failing = _notebook(tmp_path / "a.ipynb", *cells, "raise ValueError('boom in a')")
    never = _notebook(tmp_path / "b.ipynb", *cells)
    before = set(_live_children())  # the suite's own Spark servers may be running beside this test
    with pytest.raises(NotebookFailure) as e:
        _execute([failing, never], {"a": {}, "b": {}}, {}, tmp_path / "out", log=lambda *a, **k: None)
    assert (e.value.notebook, e.value.ename, e.value.evalue) == ("a", "ValueError", "boom in a")
    assert not (tmp_path / "out" / "b.ipynb").exists()
    [pid] = pids.read_text().split()  # b's kernel was started ahead but never ran a cell
    assert not _pid_alive(int(pid))
    assert set(_live_children()) - before == set()  # b's kernel too


def test_what_seglib_modules_name_for_preloading_exists():
    """The runner's preload swallows import errors (the notebook's own import then fails visibly), so a
    misspelt __preload__ entry would only lose its seconds silently: check each is a real module."""
    import importlib.util
    from seglib import cluster, tracking
    for module in (cluster, tracking):
        for extra in module.__preload__:
            assert importlib.util.find_spec(extra) is not None, (module.__name__, extra)


def test_auto_session_is_connect_only_where_pyspark_can_be_a_connect_client(monkeypatch):
    import importlib.util

    import pyspark

    from seglib.local.runner import session_kind
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    assert session_kind("auto") == "connect"  # this venv: pyspark 4.1 with the connect extra
    monkeypatch.setattr(pyspark, "__version__", "3.5.5")  # a 3.5 pip package has no Connect server
    assert session_kind("auto") == "classic"
    monkeypatch.setattr(pyspark, "__version__", "4.0.1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    assert session_kind("auto") == "classic"  # pyspark without the connect extra
    monkeypatch.setenv("SPARK_REMOTE", "sc://localhost:15002")
    assert session_kind("auto") == "connect"  # someone else's server
    assert session_kind("classic") == "classic"
    with pytest.raises(ParameterError, match="--session must be one of"):
        session_kind("serverless")
