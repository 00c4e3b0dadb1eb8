"""The runtime matrix's rows (test_runtimes): each row is a venv that `make runtimes` makes from
runtimes/<row>.txt, the platform's pyspark, Delta and libraries. The seglib wheel goes on top with its
dependencies, as a cluster library or a Fabric Environment installs it; then the notebooks run one after
another with papermill on a classic Spark session (no Spark Connect server). A job's notebooks share one
kernel and its Spark, as the tasks of a Databricks job cluster share the cluster's (row_kernel.py; each
starts from an empty namespace); on the oldest runtime a `mode=score` refresh goes through `seglib run`,
which starts a kernel and a Spark per notebook, as a Fabric pipeline's notebook activities do.

The rows are built from the session's start (conftest's runtime_rows), beside the rest of the suite: a
row is a chain of subprocesses (pip, then a kernel and a JVM per job or per notebook) that mostly waits
on JVM starts, so on two cores it costs the suite far less there than after it.
"""
import json
import os
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from conftest import DEMO_CUSTOMERS, ONE_RUN_JVM
from deltalake import DeltaTable

from seglib import bundle as B
from seglib import tables as TB
from seglib import wheel as W
from seglib.local.runner import SEGMENTATION_JOB, declared_parameters, job_notebooks, job_params, notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
ROWS = sorted(p.stem for p in (ROOT / "runtimes").glob("*.txt"))
# The environment as the session began: the rows build in threads beside tests that set variables
# (BUNDLE_VAR_x, fault injection, HOME) for a moment, which must not reach a row.
START_ENV = dict(os.environ)
# The default run's parameters (conftest.DEMO_PARAMS; MLflow is off there and absent here).
FIT = {"n_init": "2", "stability_runs": "1", "mlflow_tracking": "off"}
RETAIL_CUSTOMERS, RETAIL_SEED = 800, 5  # test_retail_job's run
# The row that also runs notebooks each in a kernel and Spark of its own: the score through `seglib run`
# and the fail-safe cases (test_runtimes).
OLDEST = "spark35"
GOLD = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY, TB.GOLD_MIGRATION, TB.GOLD_RUNS]


def start(names: list[str], tmp_path_factory) -> tuple[dict[str, Future], threading.Event]:
    """The rows *names*, building in threads: row name -> its future Row (raising what stopped it), and
    the event that, once set, stops them at their next notebook."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(len(names) + 1, thread_name_prefix="runtime-row")
    wheel = pool.submit(W.build, ROOT, tmp_path_factory.mktemp("wheel"))
    futures = {name: pool.submit(build, name, tmp_path_factory.mktemp(name), wheel, stop) for name in names}
    pool.shutdown(wait=False)
    return futures, stop


class Row:
    """One runtime's venv, with a lakehouse of its own; runs notebooks there with papermill."""

    def __init__(self, name: str, root: Path, stop: threading.Event | None = None):
        self.name, self.root, self.stop = name, root, stop or threading.Event()
        self.venv = ROOT / ".runtimes" / name
        self.python = self.venv / "bin" / "python"
        self.lakehouse = root / "lakehouse"
        self.timings: dict[str, float] = {}
        self.bundle = B.load(ROOT, env=START_ENV)

    def notebook(self, stem: str, params: dict, env: dict | None = None, label: str = "") -> subprocess.CompletedProcess:
        self.check_running()
        path, values = self.parameterised(stem, params)
        out = self.root / "runs" / (label or "run") / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / f"{stem}.json").write_text(json.dumps(values))
        start = time.perf_counter()
        proc = subprocess.run([str(self.python), "-m", "papermill", str(path), str(out), "-f",
                               str(out.parent / f"{stem}.json"), "-k", "python3", "--cwd", str(out.parent),
                               "--no-progress-bar"], capture_output=True, text=True, timeout=1200,
                              env={**self.env(), **(env or {})})
        self.timings[f"{label}/{stem}"] = time.perf_counter() - start
        return proc

    def parameterised(self, stem: str, params: dict) -> tuple[Path, dict]:
        """The notebook *stem* and the values of the parameters it declares, on this row's lakehouse."""
        path = ROOT / "notebooks" / f"{stem}.ipynb"
        return path, notebook_parameters({**params, "lakehouse": str(self.lakehouse)}, declared_parameters(path))

    def check_running(self) -> None:
        if self.stop.is_set():
            raise RuntimeError(f"{self.name}: the test session ended before this row was built")

    def env(self) -> dict:
        """Nothing of the test process's Spark (Connect server address, token) or source tree leaks in: the
        kernel imports seglib from the installed wheel and starts its own Spark."""
        keep = {k: v for k, v in START_ENV.items()
                if not k.startswith(("SPARK_", "PYSPARK_", "SEGLIB_", "JUPYTER", "PYTHONPATH", "VIRTUAL_ENV"))}
        return {**keep, "PATH": f"{self.venv / 'bin'}:{START_ENV['PATH']}", "SEGLIB_SERVER_IDLE": "0", **ONE_RUN_JVM}

    def job_steps(self, label: str, overrides: dict) -> list[tuple[str, dict, str]]:
        """The segmentation job's notebooks in task order, as (notebook, parameters, label) steps."""
        params = job_params(self.bundle, SEGMENTATION_JOB, overrides, str(self.lakehouse))
        params["run_id"] = label
        return [(path.stem, params, label) for path in job_notebooks(self.bundle, SEGMENTATION_JOB)]

    def in_one_kernel(self, steps: list[tuple[str, dict, str]]) -> None:
        """Notebook steps one after another in one kernel (row_kernel.py), so on one Spark; stops at the
        first failure with its error."""
        self.check_running()
        runs = self.root / "runs"
        plan = {"cwd": str(runs), "notebooks": []}
        for stem, params, label in steps:
            path, values = self.parameterised(stem, params)
            plan["notebooks"].append({"input": str(path), "output": str(runs / label / path.name), "parameters": values})
            (runs / label).mkdir(parents=True, exist_ok=True)
        plan_file = runs / f"plan-{len(self.timings)}.json"
        plan_file.write_text(json.dumps(plan, indent=1))
        start = time.perf_counter()
        proc = subprocess.run([str(self.python), str(Path(__file__).with_name("row_kernel.py")), str(plan_file)],
                              capture_output=True, text=True, timeout=3000, env=self.env())
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        for d in done:
            out = Path(d["output"])
            self.timings[f"{out.parent.name}/{out.stem}"] = d["seconds"]
        self.timings[f"kernel {plan_file.stem}"] = time.perf_counter() - start
        assert proc.returncode == 0, f"{self.name}: {plan_file} failed:\n{proc.stderr[-4000:]}"

    def table(self, schema: str, table: str) -> DeltaTable:
        return DeltaTable(str(self.lakehouse / "warehouse" / f"{schema}.db" / table))

    def summary(self) -> str:
        return (f"[{self.name}] {self.elapsed:.0f} s for {len(self.timings)} notebook runs: "
                + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items()))


def build(name: str, root: Path, wheel: Future, stop: threading.Event) -> Row:
    """One row: the wheel installed with its dependencies, then the notebooks of the demo, a fit, a
    `mode=score` refresh and the retail recipe, one after another."""
    row = Row(name, root, stop)
    wheel = wheel.result()
    assert row.python.exists(), (f"the {row.name} runtime is missing: `make runtimes` creates {row.venv} from "
                                 f"runtimes/{row.name}.txt")
    row.install_problems = W.install(row.venv, wheel, W.notebook_modules(ROOT / "notebooks"), log=lambda *a: None)
    assert not row.install_problems, row.install_problems
    started = time.perf_counter()
    demo = {"schema": "contoso", "recipe": "airline", "customers": DEMO_CUSTOMERS, "seed": 42}
    row.in_one_kernel([("00_generate_demo_data", demo, "demo"), *row.job_steps("fit", {"schema": "contoso", **FIT})])
    row.fit = {t: row.table("contoso", t).to_pandas() for t in GOLD}
    score = {"schema": "contoso", **FIT, "mode": "score"}
    if row.name == OLDEST:
        row.score = seglib_run(row, wheel, score)
    retail = {"schema": "shop", "recipe": "retail", "customers": RETAIL_CUSTOMERS, "seed": RETAIL_SEED}
    row.in_one_kernel([*([] if row.name == OLDEST else row.job_steps("score", score)),
                       ("00_generate_demo_data", retail, "retail-demo"),
                       *row.job_steps("retail", {"schema": "shop", "recipe": "retail", **FIT})])
    row.elapsed = time.perf_counter() - started
    return row


def seglib_run(row: Row, wheel: Path, params: dict) -> subprocess.CompletedProcess:
    """The `mode=score` refresh through `seglib run` (the runner extra beside the platform's Spark): on
    these runtimes it falls back to a classic session per notebook by itself."""
    row.check_running()
    extra = subprocess.run([str(row.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            f"{wheel}[runner]"], capture_output=True, text=True)
    assert extra.returncode == 0, extra.stderr[-3000:]
    start = time.perf_counter()
    proc = subprocess.run([str(row.venv / "bin" / "seglib"), "run", "--lakehouse", str(row.lakehouse),
                           "--schema", params["schema"], "--output", str(row.root / "runs" / "score"),
                           "--bundle", str(ROOT), *[f"--param={k}={v}" for k, v in params.items() if k != "schema"]],
                          capture_output=True, text=True, timeout=3000, cwd=row.root,
                          env={**row.env(), "PYTHONUNBUFFERED": "1"})
    row.timings["score/seglib run"] = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
