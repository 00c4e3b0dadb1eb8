"""The deployable wheel (no JVM): what it requires, and the checks `seglib validate` runs on it."""
import re
import sys
from pathlib import Path

import pytest

from seglib import wheel as W

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return W.build(ROOT, tmp_path_factory.mktemp("dist"))


def test_the_wheel_requires_nothing_a_platform_brings_or_only_a_laptop_needs(built):
    names = {re.split(r"[ \[<>=!~;]", r, maxsplit=1)[0].lower() for r in W.requirements(built)}
    assert names == {"numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "plotly", "pyyaml", "jinja2"}
    assert not names & set(W.LOCAL_ONLY_DISTRIBUTIONS)


def test_resolving_the_wheel_pulls_in_no_local_package(built):
    assert W.pulled_in(Path(sys.executable), built) == []


def test_every_module_a_notebook_imports_is_found():
    modules = W.notebook_modules(ROOT / "notebooks")
    assert {"seglib", "seglib.load", "seglib.cluster", "seglib.write", "seglib.insights"} <= set(modules)
    assert "seglib.write.write_outputs" in modules  # names imported from a module are checked too


def test_the_import_check_sees_a_local_only_import():
    # The notebooks' modules import without the local extra and without seglib's local machinery.
    notebook_facing = W.notebook_modules(ROOT / "notebooks")
    assert W.import_problems(Path(sys.executable), notebook_facing) == []
    problems = W.import_problems(Path(sys.executable), ["seglib.local.runner", "seglib.cli", "seglib.load.no_such_name",
                                                        "seglib.recipes"])
    assert len(problems) == 3  # recipe files are read on a platform too: PyYAML is a dependency of the wheel
    assert "seglib.local.runner does not import without the local extra" in problems[0] and "seglib.local" in problems[0]
    assert "seglib.cli does not import" in problems[1] and "seglib.local" in problems[1]
    assert "no_such_name" in problems[2]
