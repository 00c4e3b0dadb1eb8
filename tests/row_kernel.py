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

# seglib's runner engine: papermill on a kernel started by the caller (the installed wheel's copy)
from seglib.local.runner import _ENGINE, _register_engine


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
    _register_engine()
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=plan["cwd"])
    try:
        for i, step in enumerate(plan["notebooks"]):
            if i:  # nothing of the notebook before, as in a task of its own; Spark and imports stay
                _run_code(km, "get_ipython().reset(new_session=False)")
            start = time.perf_counter()
            pm.execute_notebook(step["input"], step["output"], parameters=step["parameters"], kernel_name="python3",
                                engine_name=_ENGINE, km=km, progress_bar=False, cwd=plan["cwd"])
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
