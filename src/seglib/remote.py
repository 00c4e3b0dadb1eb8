"""`seglib remote-run`: start the bundle-deployed segmentation job on Databricks and follow it.

Uses databricks-sdk only (no Spark): the job runs on the workspace, this process just polls it.
Auth is the SDK's unified auth (env vars or ~/.databrickscfg), so no secret ever passes through
seglib's arguments or output.
"""
from __future__ import annotations

import os
import re
import time

from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import DatabricksError, PermissionDenied, Unauthenticated

from .errors import SeglibError

JOB_ID_ENV = "SEGLIB_JOB_ID"
# Run life-cycle states after which nothing more will happen (Jobs API `state.life_cycle_state`).
TERMINAL = {"TERMINATED", "SKIPPED", "INTERNAL_ERROR"}
# Tasks that never ran because something upstream failed: their "error" is the upstream one.
NOT_RUN = {"UPSTREAM_FAILED", "UPSTREAM_CANCELED", "EXCLUDED", "DISABLED", "SKIPPED"}
AUTH_HELP = ("Set DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET), "
             "or DATABRICKS_CONFIG_PROFILE to a profile in ~/.databrickscfg (`databricks auth login`).")


class RemoteRunError(SeglibError):
    """The remote job could not be found or started."""


def workspace_client(retry_timeout_s: int = 60) -> WorkspaceClient:
    # The SDK retries connection errors, 429 and 503 for 300 s by default, already inside
    # WorkspaceClient() (host metadata probe): a mistyped host would hang for minutes.
    try:
        return WorkspaceClient(config=Config(retry_timeout_seconds=retry_timeout_s, product="seglib"))
    except ValueError as e:
        # The SDK masks sensitive config values (token=***), so its reason is safe to show.
        raise RemoteRunError(f"cannot configure Databricks authentication. {AUTH_HELP}\n  ({e})") from None


def _deploy_hint(development: bool) -> str:
    target = "dev" if development else "prod"
    return f"Deploy it with `databricks bundle deploy -t {target}`, or pass the job id with --job-id."


def find_job(w: WorkspaceClient, job_name: str, development: bool) -> int:
    kind = "development" if development else "production"
    if development:
        # mode: development renames the job to "[dev <user short name>] <name>"; the short name is
        # derived by the CLI, so match the pattern rather than recomputing it.
        pattern = re.compile(r"\[dev [^\]]+\] " + re.escape(job_name), re.IGNORECASE)
        jobs = [j for j in w.jobs.list(limit=100) if j.settings and pattern.fullmatch(j.settings.name or "")]
        if len(jobs) > 1:
            me = w.current_user.me().user_name
            jobs = [j for j in jobs if j.creator_user_name == me] or jobs
    else:
        # `name=` is an exact (case-insensitive) server-side filter; re-check in case a server ignores it.
        jobs = [j for j in w.jobs.list(name=job_name, limit=100)
                if j.settings and (j.settings.name or "").lower() == job_name.lower()]
    if not jobs:
        raise RemoteRunError(f"no deployed {kind} job named {job_name!r} found in the workspace. "
                             + _deploy_hint(development))
    if len(jobs) > 1:
        found = ", ".join(f"{j.job_id} ({j.settings.name!r} by {j.creator_user_name})" for j in jobs)
        raise RemoteRunError(f"several {kind} jobs match {job_name!r}: {found}. "
                             "Pass the one to run with --job-id.")
    return jobs[0].job_id


def _name(enum_value) -> str | None:
    return enum_value.value if enum_value is not None else None


def _outcome(obj) -> tuple[bool, str | None, str | None]:
    """(terminal, state to show, message) of a run or task, from `state` (Jobs API <= 2.1 fields)
    or `status` (newer lifecycle v2 fields), whichever the workspace filled in."""
    state, status = obj.state, obj.status
    life = _name(state.life_cycle_state) if state else None
    result = _name(state.result_state) if state else None
    message = state.state_message if state else None
    v2 = _name(status.state) if status else None
    details = status.termination_details if status else None
    if result is None and details is not None and details.code is not None:
        result = details.code.value  # e.g. SUCCESS, RUN_EXECUTION_ERROR, USER_CANCELED
    if not message and details is not None:
        message = details.message
    terminal = life in TERMINAL or (life is None and v2 == "TERMINATED")
    shown = (result if terminal else None) or life or v2 or "UNKNOWN"
    return terminal, shown, message


def _report_failure(w: WorkspaceClient, run, log) -> None:
    _, shown, message = _outcome(run)
    log(f"run {run.run_id} finished: {shown}" + (f" - {message}" if message else ""))
    for task in run.tasks or []:
        _, task_shown, task_message = _outcome(task)
        if task_shown == "SUCCESS" or task_shown in NOT_RUN:
            continue
        error = None
        if task.run_id is not None:
            try:
                error = w.jobs.get_run_output(task.run_id).error
            except DatabricksError:
                pass  # the output may be gone or not allowed; the state message still says something
        log(f"  failed task {task.task_key}: {task_shown}: {error or task_message or 'no error message'}")


def run_job(w: WorkspaceClient, job_id: int, params: dict[str, str], timeout_s: float = 3600,
            poll_s: float = 10, cancel_on_timeout: bool = False, log=print) -> int:
    """Start the job, follow it, return 0 (SUCCESS), 1 (ended otherwise) or 3 (still running at timeout)."""
    # run_now(...).result() is not used: it also returns normally for failed runs, and it cannot
    # report task progress.
    run_id = w.jobs.run_now(job_id=job_id, job_parameters=params).run_id
    deadline = time.monotonic() + timeout_s
    url, seen = None, {}
    try:
        while True:
            run = w.jobs.get_run(run_id)
            if url is None and run.run_page_url:
                url = run.run_page_url
                log(f"run {run_id} started: {url}")
            for task in run.tasks or []:
                _, shown, _ = _outcome(task)
                if seen.get(task.task_key) != shown:
                    seen[task.task_key] = shown
                    log(f"  {task.task_key}: {shown}")
            terminal, shown, _ = _outcome(run)
            if terminal:
                if shown == "SUCCESS":
                    log(f"run {run_id} finished: SUCCESS")
                    return 0
                _report_failure(w, run, log)
                return 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(poll_s, remaining))
    except (DatabricksError, TimeoutError):
        # The run does not depend on this process: say where to follow it before giving up.
        log(f"lost contact with run {run_id}; it may still be running: {url or '(no run page URL yet)'}")
        raise
    log(f"run {run_id} is still running after {timeout_s:g} s: {url or '(no run page URL)'}")
    if cancel_on_timeout:
        w.jobs.cancel_run(run_id)  # asynchronous; not waiting for the cancellation to finish
        log(f"cancel requested for run {run_id}")
    return 3


def remote_run(job_name: str, development: bool, params: dict[str, str], job_id: int | None = None,
               timeout_s: float = 3600, poll_s: float = 10, cancel_on_timeout: bool = False,
               log=print, client: WorkspaceClient | None = None) -> int:
    if job_id is None and os.environ.get(JOB_ID_ENV):
        try:
            job_id = int(os.environ[JOB_ID_ENV])
        except ValueError:
            raise RemoteRunError(f"{JOB_ID_ENV} must be a numeric job id, got {os.environ[JOB_ID_ENV]!r}") from None
    w = client or workspace_client()
    try:
        if job_id is None:
            job_id = find_job(w, job_name, development)
        return run_job(w, job_id, params, timeout_s=timeout_s, poll_s=poll_s,
                       cancel_on_timeout=cancel_on_timeout, log=log)
    except TimeoutError as e:  # what the SDK raises once its retries run out
        raise RemoteRunError(f"cannot reach the Databricks workspace ({e}). Check DATABRICKS_HOST "
                             "or the profile's host, and the network.") from None
    except DatabricksError as e:
        # SDK errors carry the workspace's message (never the token); 401/403 usually mean bad auth.
        hint = f" {AUTH_HELP}" if isinstance(e, (Unauthenticated, PermissionDenied)) else ""
        raise RemoteRunError(f"Databricks API call failed for job {job_id or job_name!r}: {e}.{hint}") from None
