"""Run by a runtime row's Python (runtime_rows): notebooks one after another in one kernel, so on one
classic Spark session, as the notebook tasks of a Databricks job cluster share its Spark. Each notebook
starts from an empty namespace; a cold Spark start costs about 40 CPU seconds, so one per notebook made
the matrix the largest part of the suite.

    python row_kernel.py PLAN.json

PLAN: {"cwd": dir, "notebooks": [{"input": ipynb, "output": ipynb, "parameters": {...}}, ...]}. Prints
one JSON line per notebook run ({"output", "seconds"}); on a failure, papermill's error on stderr and exit 1.
"""
import json
import sys
import time

import papermill as pm
from jupyter_client.manager import KernelManager
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines

ENGINE = "row-kernel"


class _Client(PapermillNotebookClient):
    def execute(self, **kwargs):
        try:
            return super().execute(**kwargs)
        finally:  # papermill leaves the channels open on a kernel it does not own
            if self.kc is not None:
                self.kc.stop_channels()
                self.kc = None


class _Engine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, km=None, **_):
        return _Client(nb_man, km=km, kernel_name=kernel_name, startup_timeout=start_timeout,
                       timeout=execution_timeout, log_output=log_output).execute()


def _run_code(km: KernelManager, code: str) -> None:
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{code!r} failed in the kernel: {reply['content'].get('evalue')}")
    finally:
        kc.stop_channels()


def main(plan_file: str) -> int:
    plan = json.loads(open(plan_file).read())
    papermill_engines.register(ENGINE, _Engine)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=plan["cwd"])
    try:
        for i, step in enumerate(plan["notebooks"]):
            if i:  # nothing of the notebook before, as in a task of its own; Spark and imports stay
                _run_code(km, "get_ipython().reset(new_session=False)")
            start = time.perf_counter()
            pm.execute_notebook(step["input"], step["output"], parameters=step["parameters"], kernel_name="python3",
                                engine_name=ENGINE, km=km, progress_bar=False, cwd=plan["cwd"])
            print(json.dumps({"output": step["output"], "seconds": time.perf_counter() - start}), flush=True)
        # The JVM holds the lakehouse's Derby catalog: it must be gone before another process opens it.
        _run_code(km, "from seglib.local.spark import stop_local_spark\nstop_local_spark()")
    except pm.PapermillExecutionError as e:
        print(f"{step['output']}: {e}", file=sys.stderr)
        return 1
    finally:
        km.shutdown_kernel(now=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
