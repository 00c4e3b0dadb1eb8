"""The deployable wheel, checked as a platform installs it.

A Databricks job task, a cluster library and a Fabric Environment install the seglib wheel *with its
dependencies* beside the platform's own Spark. So the check builds the wheel as the bundle's artifact
does, installs it into a venv that already holds a pyspark (a runtime of the matrix, see runtimes/),
and fails when that pyspark changed, `pip check` complains, or a module a notebook imports does not
import with the local extra's packages out of reach.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# What only a local run needs (the `local` and `runner` extras, and seglib's own local machinery): a
# notebook-facing module importing one of them would fail, or start laptop machinery, on a platform.
LOCAL_ONLY_PACKAGES = ("seglib.local", "delta", "papermill", "nbformat", "nbconvert", "nbclient", "ipykernel",
                       "jupyter_client", "deltalake", "databricks.sdk", "databricks.bundles")
# Distributions the wheel must not pull in, directly or through a dependency: a platform brings its own
# Spark and Delta, and the notebook machinery is a local run's.
LOCAL_ONLY_DISTRIBUTIONS = ("pyspark", "pyspark-client", "pyspark-connect", "delta-spark", "databricks-connect",
                            "papermill", "nbconvert", "nbformat", "nbclient", "ipykernel", "jupyter-client",
                            "databricks-bundles", "databricks-sdk", "deltalake")
# Distributions the platform brings and the wheel must leave as they are.
PLATFORM_DISTRIBUTIONS = ("pyspark", "delta-spark", "databricks-connect", "numpy", "pandas", "pyarrow", "pyyaml")


def build(root: Path, dest: Path) -> Path:
    """The wheel, built as databricks.yml's artifact builds it (no dependencies bundled)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("seglib-*.whl"):
        old.unlink()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest),
                           str(root)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the wheel does not build: {proc.stderr.strip()[-800:]}")
    return next(dest.glob("seglib-*.whl"))


def requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines without an extra marker: what pip installs with it."""
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def notebook_modules(notebooks: Path) -> list[str]:
    """The seglib modules (and names) the notebooks in *notebooks* import."""
    from .bundle import notebook_imports
    found = [m for path in sorted(Path(notebooks).glob("*.ipynb")) for m in notebook_imports(path)
             if m.split(".")[0] == "seglib"]
    return list(dict.fromkeys(found))


def _versions(python: Path, names=PLATFORM_DISTRIBUTIONS) -> dict[str, str | None]:
    code = ("import json, sys\nfrom importlib.metadata import version, PackageNotFoundError\nout = {}\n"
            "for n in sys.argv[1:]:\n    try: out[n] = version(n)\n    except PackageNotFoundError: out[n] = None\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                                     check=True).stdout)


# Imports *modules* in a process where the local-only packages cannot be imported, whether or not they
# are installed: "ok" or the first error per module.
_IMPORT_PROBE = """
import importlib, importlib.abc, json, sys
blocked = tuple(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r} (local extra only)", name=name)
        return None
sys.meta_path.insert(0, Block())
out = {}
for m in sys.argv[2:]:
    try:
        module, _, attr = m.rpartition(".")
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:  # `from seglib import tables` names a module; `from seglib.x import f` a name
            if e.name != m or not module:
                raise
            getattr(importlib.import_module(module), attr)
        out[m] = "ok"
    except Exception as e:
        out[m] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def import_problems(python: Path, modules: list[str]) -> list[str]:
    proc = subprocess.run([str(python), "-c", _IMPORT_PROBE, ",".join(LOCAL_ONLY_PACKAGES), *modules],
                          capture_output=True, text=True, cwd="/")
    if proc.returncode:
        return [f"the import check did not run: {proc.stderr.strip()[-500:]}"]
    return [f"{m} does not import without the local extra: {err}" for m, err in json.loads(proc.stdout).items()
            if err != "ok"]


def pulled_in(python: Path, wheel: Path) -> list[str]:
    """Local-only distributions that installing *wheel* into an empty environment would bring, directly or
    through its dependencies (pip resolves it without installing anything)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="seglib-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                               "--disable-pip-version-check", "--report", str(report), str(wheel)],
                              capture_output=True, text=True)
        if proc.returncode:
            return [f"pip cannot resolve {wheel.name}'s dependencies: {proc.stderr.strip()[-800:]}"]
        resolved = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    return [f"{wheel.name} pulls in {name}, which only a local run needs" for name in sorted(resolved)
            if name in LOCAL_ONLY_DISTRIBUTIONS]


def install(venv: Path, wheel: Path, modules: list[str], log=print) -> list[str]:
    """Install *wheel* with its dependencies into *venv* (which holds the platform's packages) and check
    it as a platform would: its Spark and libraries unchanged, `pip check` clean, the notebooks'
    modules importable. Returns the problems found (empty: fine)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return [f"no runtime venv at {venv} (`make runtimes` creates it)"]
    before = _versions(python)
    if not before.get("pyspark"):
        return [f"{venv} holds no pyspark: the check needs a venv with the platform's Spark"]
    # The same version number as an earlier build: reinstall the file itself, then resolve its dependencies.
    for args in (["--force-reinstall", "--no-deps"], []):
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args,
                               str(wheel)], capture_output=True, text=True)
        if proc.returncode:
            return [f"{wheel.name} does not install into {venv}: {proc.stderr.strip()[-800:]}"]
    problems = pulled_in(python, wheel)
    after = _versions(python)
    for name, version in before.items():
        if version and after.get(name) != version:
            problems.append(f"installing {wheel.name} changed the platform's {name} {version} to {after.get(name)}")
    if problems and (venv / ".installed").exists():
        (venv / ".installed").unlink()  # no longer the platform it stood for: `make runtimes` rebuilds it
    check = subprocess.run([str(python), "-m", "pip", "check", "--disable-pip-version-check"], capture_output=True,
                           text=True)
    if check.returncode:
        problems.append(f"pip check after installing {wheel.name}: {check.stdout.strip()[-800:]}")
    problems += import_problems(python, modules)
    if not problems:
        log(f"  {wheel.name} installs with its dependencies beside pyspark {before['pyspark']} in {venv}: "
            f"nothing of the platform changed, pip check clean, {len(modules)} notebook imports ok")
    return problems
