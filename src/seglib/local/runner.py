"""Run the notebooks headless with papermill, in order, against a local lakehouse.

Each notebook runs in its own kernel (a separate process, as each task is on Databricks); they hand
data over through Delta tables. The kernels share one local Spark: a Spark Connect server the runner
starts for the run and keeps for the next one, or the one the lakehouse already keeps (unless
SPARK_REMOTE already names one; see seglib.local.server). The next notebook's kernel starts, and
imports what its notebook imports, while the current notebook runs. Executed notebooks, kernel logs and
the server's log are kept under runs/<run-id>/.
"""
from __future__ import annotations

import ast
import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import bundle as B
from .. import tables as TB
from ..errors import ConcurrentRunError, ParameterError
from ..params import LOCAL_ONLY, PARAMS
from .server import _TOKEN_ENV, shared_local_spark
from .spark import table_folder

SEGMENTATION_JOB = "segmentation"  # resources/segmentation.job.yml
DEMO_DATA_JOB = "demo_data"        # resources/demo_data.job.yml
# Locally there is one catalog (the session's); a job's Unity Catalog default does not apply.
LOCAL_DEFAULTS = {"catalog": ""}


# How the notebooks of a local run get Spark. connect: one Spark Connect server for the run, every kernel
# its client (as Databricks serverless); classic: each kernel starts its own Spark and stops it before
# the next notebook (as a Fabric or classic-cluster notebook, and the only way on a Spark 3.5 runtime,
# whose pip package has no Connect server); auto: connect where this Python can (Spark 4 with the
# Connect client's grpc), else classic.
SESSIONS = ("auto", "connect", "classic")


def session_kind(requested: str = "auto") -> str:
    if requested not in SESSIONS:
        raise ParameterError(f"--session must be one of {', '.join(SESSIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if os.environ.get("SPARK_REMOTE"):
        return "connect"
    import importlib.util
    import pyspark
    connect = int(pyspark.__version__.split(".")[0]) >= 4 and importlib.util.find_spec("grpc") is not None
    return "connect" if connect else "classic"


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param takes key=value, got {pair!r}")
        params[key.strip()] = value
    return params


def _coerce(value, type_name: str | None):
    """Command-line strings to the type of the notebook's default (int k stays int)."""
    if not isinstance(value, str) or type_name in (None, "str", "None"):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # seglib validates it in the notebook and says what it expected
    return parsed if type(parsed).__name__ == type_name else value


def declared_parameters(notebook: Path) -> dict[str, str | None]:
    import papermill as pm
    return {name: p["inferred_type_name"] for name, p in pm.inspect_notebook(str(notebook)).items()}


def notebook_parameters(params: dict, declared: dict[str, str | None]) -> dict:
    """The run's parameters that a notebook declares, typed like its defaults: what papermill injects."""
    return {k: _coerce(v, declared[k]) for k, v in params.items() if k in declared}


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Kernel and JVM chatter goes to a log beside the executed notebook, not the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclass
class NotebookFailure(Exception):
    notebook: str
    output: Path
    cell: int | None
    ename: str
    evalue: str

    def __str__(self):
        where = f"cell {self.cell}" if self.cell is not None else "start-up"
        return (f"{self.notebook} failed at {where}: {self.ename}: {self.evalue}\n"
                f"  executed notebook: {self.output}\n  kernel log: {self.output.with_suffix('.log')}")


@dataclass
class RunResult:
    run_dir: Path
    timings: dict[str, float] = field(default_factory=dict)


def job_notebooks(bundle: B.Bundle, job: str, start_at: str | None = None) -> list[Path]:
    """The job's notebooks in task order; every task of a locally runnable job must be a notebook.
    *start_at*: a task key; the tasks before it are skipped (their handover tables are reused, as a
    Databricks repair run reuses the successful tasks' results)."""
    tasks = bundle.tasks(job)
    if start_at:
        keys = [t.key for t in tasks]
        if start_at not in keys:
            raise ParameterError(f"--from {start_at}: job {job} has tasks {', '.join(keys)}")
        tasks = tasks[keys.index(start_at):]
    paths = []
    for task in tasks:
        if task.notebook is None:
            raise B.BundleError(f"job {job}: task {task.key} is not a notebook task; it cannot run locally")
        paths.append(task.notebook)
    return paths


def job_params(bundle: B.Bundle, job: str, overrides: dict[str, str], lakehouse: str) -> dict[str, str]:
    """The job's parameter defaults (from its YAML), local defaults, then the user's --param values."""
    defaults = bundle.parameters(job)
    unknown = sorted(set(overrides) - set(defaults) - LOCAL_ONLY)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)} for job {job}; "
                             f"it takes: {', '.join(sorted(defaults))}")
    return {**defaults, **{k: v for k, v in LOCAL_DEFAULTS.items() if k in defaults}, "lakehouse": lakehouse,
            **overrides}


def run_job(bundle: B.Bundle, job: str, overrides: dict[str, str], lakehouse: str, output_dir: Path,
            log=print, start_at: str | None = None, session: str = "connect") -> RunResult:
    """Run one job of the bundle locally: its notebook tasks in dependency order, with its parameters."""
    result = run_notebooks(job_notebooks(bundle, job, start_at), job_params(bundle, job, overrides, lakehouse),
                           output_dir, log=log, session=session)
    if job == SEGMENTATION_JOB:
        write_run_report(result, log=log)
    return result


# report.html: the executed insights notebook as a page that opens offline, beside the notebooks.
INSIGHTS = "06_insights"


def write_run_report(result: RunResult, log=print) -> Path | None:
    """report.html in the run folder when the insights notebook ran (and so succeeded); else None."""
    if INSIGHTS not in result.timings:
        return None
    from ..report import write_report
    path = write_report(result.run_dir / f"{INSIGHTS}.ipynb", result.run_dir / "report.html")
    log(f"report: {path}")
    return path


# Databricks dynamic value references in job parameters, and their local meaning.
def dynamic_values(params: dict, output_dir: Path) -> dict:
    """``{{job.run_id}}`` becomes the local run's id: its output folder's name."""
    return {k: v.replace("{{job.run_id}}", output_dir.name) if isinstance(v, str) else v for k, v in params.items()}


def check_params(params: dict) -> None:
    """Every parameter seglib knows, checked before any Spark or kernel starts: a typo in k or a schema
    with a quote fails in a second, with the parameter's name. The notebooks check again (on Databricks
    nothing else does)."""
    for name, value in params.items():
        if name in PARAMS:
            PARAMS[name].parse(value)


@contextlib.contextmanager
def output_lock(lakehouse: str, params: dict):
    """One local run at a time per set of outputs (a schema, or a target_path folder): a second run
    stops at once instead of racing the first on the handover and gold tables. On Databricks the job's
    max_concurrent_runs: 1 (with queueing) does this. Taken once per command, around all its jobs."""
    import fcntl
    import hashlib
    import json
    target = params.get("target_path") or ""
    what = f"target_path {target}" if target else f"schema {params.get('schema', '')}"
    folder = Path(lakehouse).resolve() / ".seglib-locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha1(what.encode()).hexdigest()[:16] + ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ConcurrentRunError(f"another seglib run is writing {what} in {lakehouse} ({holder}); "
                                     f"wait for it to finish, or use another schema") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "run": params.get("run_id", ""),
                            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        f.flush()
        try:
            yield path
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def run_notebooks(paths: list[Path], params: dict, output_dir: Path, log=print, session: str = "connect") -> RunResult:
    """The notebooks in order (*session*: see SESSIONS). Callers check the parameters (check_params) and
    take the output lock before starting Spark, as `seglib run` and `seglib bench` do."""
    params = dynamic_values(params, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    declared = {p.stem: declared_parameters(p) for p in paths}
    lakehouse = params.get("lakehouse", ".lakehouse")
    if session == "classic":
        return _execute(paths, declared, params, output_dir, log, classic=True)
    with local_spark(lakehouse, output_dir, log):
        return _execute(paths, declared, params, output_dir, log)


@contextlib.contextmanager
def local_spark(lakehouse: str, output_dir: Path, log=print, keep_minutes: float | None = None):
    """The run's shared Spark: the one SPARK_REMOTE names, else the lakehouse's kept server, else a local
    server started for the block (kept *keep_minutes* for the next run; default SEGLIB_SERVER_IDLE)."""
    if os.environ.get("SPARK_REMOTE"):
        yield os.environ["SPARK_REMOTE"]
        return
    with shared_local_spark(lakehouse, output_dir / "spark-server.log", keep_minutes=keep_minutes, log=log) as url:
        yield url


def _preload_code(modules: list[str]) -> str:
    """Code that imports *modules*, and what each names in ``__preload__`` (seglib.tracking: mlflow, which
    it imports only when called), in a throwaway namespace: they land in sys.modules while the notebook's
    namespace stays empty, and one that fails to import here fails again, visibly, in the notebook's cell."""
    body = (f"import importlib\nfor m in {modules!r}:\n    try:\n        module = importlib.import_module(m)\n"
            f"        for extra in getattr(module, '__preload__', ()):\n            importlib.import_module(extra)\n"
            f"    except Exception:\n        pass\n")
    return f"exec(compile({body!r}, '<seglib preload>', 'exec'), {{}})"


class _Kernel:
    """A fresh kernel for one notebook, started ahead: while the notebook before it runs, a thread starts
    this kernel and has it import what its notebook imports (1.5-3 s a notebook otherwise on the critical
    path)."""

    def __init__(self, notebook: Path, output_dir: Path, classic: bool = False):
        from jupyter_client import KernelManager
        self.log_file = open(output_dir / f"{notebook.stem}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.km = KernelManager(kernel_name="python3")
        self.classic = classic
        self.error: BaseException | None = None
        self._starting = threading.Thread(target=self._start, args=(notebook,), name="seglib-kernel-start")
        self._starting.start()

    def _start(self, notebook: Path) -> None:
        try:
            # A classic kernel starts its own Spark: no Connect server may be named to it.
            env = {k: v for k, v in os.environ.items() if not (self.classic and k in ("SPARK_REMOTE", _TOKEN_ENV))}
            self.km.start_kernel(cwd=str(notebook.parent), stdout=self.log_file, stderr=self.log_file, env=env)
            client = self.km.blocking_client()
            client.start_channels(hb=False)
            try:
                client.wait_for_ready(timeout=120)
                # Spark Connect's client too: every notebook's get_spark() opens one.
                modules = [*B.notebook_imports(notebook), *([] if self.classic else ["pyspark.sql.connect.session"])]
                client.execute(_preload_code(modules), silent=True, store_history=False)
                client.get_shell_msg(timeout=300)  # the reply: the imports are done
            finally:
                client.stop_channels()
        except BaseException as e:  # noqa: BLE001 - raised in the runner's thread by ready()
            self.error = e

    def release_spark(self) -> None:
        """Stop the Spark this (classic) kernel started and wait for its JVM to exit: the lakehouse's Derby
        catalog admits one JVM, and the next notebook's kernel starts its own."""
        client = self.km.blocking_client()
        client.start_channels(hb=False)
        try:
            client.execute("from seglib.local.spark import stop_local_spark as _stop\n_stop()", silent=True,
                           store_history=False)
            client.get_shell_msg(timeout=360)
        finally:
            client.stop_channels()

    def ready(self):
        """The kernel manager, once the kernel is up and its imports loaded."""
        self._starting.join()
        if self.error is not None:
            raise self.error
        return self.km

    def stop(self) -> threading.Thread:
        """Shut the kernel down in the background (a graceful shutdown takes about a second)."""
        def shutdown():
            self._starting.join()
            try:
                if self.km.has_kernel:
                    self.km.shutdown_kernel(now=False)
            finally:
                self.log_file.close()
        thread = threading.Thread(target=shutdown, name="seglib-kernel-shutdown")
        thread.start()
        return thread


def _execute(paths, declared, params, output_dir, log, classic: bool = False) -> RunResult:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    _register_engine()
    output_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(output_dir)
    shutdowns: list[threading.Thread] = []
    upcoming = _Kernel(paths[0], output_dir, classic) if paths else None
    try:
        for i, path in enumerate(paths, 1):
            kernel, upcoming = upcoming, None
            mine = notebook_parameters(params, declared[path.stem])
            out = output_dir / path.name
            log(f"[{i}/{len(paths)}] {path.stem} ...", end="", flush=True)
            start = time.perf_counter()
            try:
                if i < len(paths):
                    upcoming = _Kernel(paths[i], output_dir, classic)
                with _stderr_to(output_dir / f"{path.stem}.log"):
                    pm.execute_notebook(str(path), str(out), parameters=mine, kernel_name="python3",
                                        progress_bar=False, engine_name=_ENGINE, km=kernel.ready())
            except PapermillExecutionError as e:
                log(" FAILED")
                raise NotebookFailure(path.stem, out, e.exec_count, e.ename, e.evalue) from None
            except Exception as e:  # the kernel died or could not start
                log(" FAILED")
                raise NotebookFailure(path.stem, out, None, type(e).__name__, str(e)) from None
            finally:
                if classic:  # the next notebook's Spark needs the catalog this one's holds
                    with contextlib.suppress(Exception):
                        kernel.release_spark()
                    kernel.stop().join()
                else:
                    shutdowns.append(kernel.stop())
            result.timings[path.stem] = time.perf_counter() - start
            log(f" ok ({result.timings[path.stem]:.1f} s)")
    finally:
        if upcoming is not None:  # a notebook failed: the ones after it never run
            shutdowns.append(upcoming.stop())
        for thread in shutdowns:
            thread.join()
    return result


_ENGINE = "seglib"


def _register_engine() -> None:
    """papermill's nbclient engine, executing on the kernel the runner started (``km``) and closing the
    client's channels afterwards (papermill leaves them open when it does not own the kernel)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class Client(PapermillNotebookClient):
        def execute(self, **kwargs):
            try:
                return super().execute(**kwargs)
            finally:
                if self.kc is not None:
                    self.kc.stop_channels()
                    self.kc = None

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, km=None, **_):
            return Client(nb_man, km=km, kernel_name=kernel_name, startup_timeout=start_timeout,
                          timeout=execution_timeout, log_output=log_output, stdout_file=stdout_file,
                          stderr_file=stderr_file).execute()

    papermill_engines.register(_ENGINE, Engine)


def new_run_dir(base: Path = Path("runs")) -> Path:
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    return base / run_id


def read_summary(lakehouse: str | os.PathLike, where: TB.Location):
    """gold_segment_summary as pandas, read with delta-rs (no JVM needed)."""
    from deltalake import DeltaTable
    summary = DeltaTable(table_folder(lakehouse, where, TB.GOLD_SUMMARY)).to_pandas()
    order = ["grouping", "segment"] if "grouping" in summary.columns else ["segment"]  # retail: clusters, then RFM
    return summary.sort_values(order).reset_index(drop=True)


def demo_tables_exist(lakehouse: str | os.PathLike, schema: str, recipe: str = "airline") -> bool:
    from ..recipes import get
    return (Path(table_folder(lakehouse, TB.Location(schema), get(recipe).customers_table)) / "_delta_log").is_dir()


def print_summary(lakehouse, schema, log=print, target_path: str = "") -> None:
    if "://" in target_path:  # a remote folder needs the run's credentials; the notebooks showed it
        log(f"\n{TB.GOLD_SUMMARY} written under {target_path}; see 05_write in the run folder")
        return
    summary = read_summary(lakehouse, TB.Location(schema, target_path=target_path))
    # The retail summary has a row per cluster and one per RFM segment: count the customers once.
    counted = summary[summary.grouping == "cluster"] if "grouping" in summary.columns else summary
    log(f"\n{TB.GOLD_SUMMARY} ({int(counted.customer_count.sum()):,} customers):")
    log(summary.to_string(index=False))


