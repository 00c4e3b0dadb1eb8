"""`seglib remote-run` against a fake Databricks workspace: a real HTTP server on 127.0.0.1 that answers
the Jobs API calls databricks-sdk makes, so the SDK's real client, auth and parsing are exercised."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from seglib.errors import SeglibError
from seglib.remote import RemoteRunError, find_job, remote_run, run_job, workspace_client

TOKEN = "dapi-FAKE-7f3a9c1e5b2d"
JOB = "seglib segmentation"
ME = "me@example.com"
RUN_ID = 777
URL = f"https://example.cloud.databricks.com/#job/3/run/{RUN_ID}"


def task(key, run_id, life, result=None, message=""):
    return {"task_key": key, "run_id": run_id,
            "state": {"life_cycle_state": life, "state_message": message,
                      **({"result_state": result} if result else {})}}


def run(life, result=None, tasks=(), message=""):
    return {"run_id": RUN_ID, "run_page_url": URL, "tasks": list(tasks),
            "state": {"life_cycle_state": life, "state_message": message,
                      **({"result_state": result} if result else {})}}


class FakeWorkspace:
    """What the fake workspace holds and every request it received."""

    def __init__(self):
        self.jobs = [{"job_id": 1, "creator_user_name": "ci@example.com", "settings": {"name": JOB}}]
        self.runs = [run("TERMINATED", "SUCCESS")]  # runs/get answers in order; the last one repeats
        self.outputs = {}  # task run id -> runs/get-output answer
        self.page_size = 2
        self.requests = []
        self.host = ""

    def api(self, method=None, path=None):
        return [r for r in self.requests if r["path"].startswith("/api/")
                and (method is None or r["method"] == method) and (path is None or r["path"] == path)]

    def answer(self, method, path, query, body):
        if path == "/api/2.2/jobs/list":
            jobs = [j for j in self.jobs
                    if "name" not in query or j["settings"]["name"].lower() == query["name"].lower()]
            start = int(query.get("page_token", 0))
            page = {"jobs": jobs[start:start + self.page_size]}
            if start + self.page_size < len(jobs):
                page["next_page_token"] = str(start + self.page_size)
            return 200, page
        if path == "/api/2.0/preview/scim/v2/Me":
            return 200, {"id": "1", "userName": ME}
        if (method, path) == ("POST", "/api/2.2/jobs/run-now"):
            return 200, {"run_id": RUN_ID, "number_in_job": RUN_ID}
        if path == "/api/2.2/jobs/runs/get":
            assert query["run_id"] == str(RUN_ID)
            answer = self.runs.pop(0) if len(self.runs) > 1 else self.runs[0]
            return answer if isinstance(answer, tuple) else (200, answer)  # (status, payload) = an error
        if path == "/api/2.2/jobs/runs/get-output":
            return 200, self.outputs.get(int(query["run_id"]), {})
        if (method, path) == ("POST", "/api/2.2/jobs/runs/cancel"):
            return 200, {}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no fake for {method} {path}"}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ambient Databricks profile, OAuth or cloud credentials, and no proxy."""
    for var in list(os.environ):
        if var.startswith(("DATABRICKS_", "ARM_", "SEGLIB_")) or var.lower().endswith("_proxy") \
                or var == "GOOGLE_CREDENTIALS":
            monkeypatch.delenv(var)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def ws(clean_env, monkeypatch):
    fake = FakeWorkspace()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            fake.requests.append({"method": self.command, "path": url.path, "query": query, "body": body,
                                  "auth": self.headers.get("Authorization")})
            if url.path.startswith("/api/") and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, payload = 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
            else:
                status, payload = fake.answer(self.command, url.path, query, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    fake.host = f"http://127.0.0.1:{server.server_address[1]}"

    monkeypatch.setenv("DATABRICKS_HOST", fake.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    yield fake
    server.shutdown()
    server.server_close()


def go(ws, development=False, params=None, **kw):
    kw.setdefault("poll_s", 0.01)
    return remote_run(JOB, development, params if params is not None else {"k": "5"}, **kw)


def test_success_finds_my_dev_job_and_follows_tasks(ws, capsys):
    ws.jobs = [
        {"job_id": 1, "creator_user_name": "ci@example.com", "settings": {"name": JOB}},
        {"job_id": 2, "creator_user_name": "alice@example.com", "settings": {"name": f"[dev alice] {JOB}"}},
        {"job_id": 4, "creator_user_name": ME, "settings": {"name": "[dev me] other job"}},
        {"job_id": 5, "creator_user_name": ME, "settings": {"name": f"[dev me] {JOB} v2"}},
        {"job_id": 3, "creator_user_name": ME, "settings": {"name": f"[dev me] {JOB}"}},
    ]
    ws.runs = [
        run("PENDING", tasks=[task("load", 11, "PENDING"), task("cluster", 12, "BLOCKED")]),
        run("RUNNING", tasks=[task("load", 11, "RUNNING"), task("cluster", 12, "BLOCKED")]),
        run("RUNNING", tasks=[task("load", 11, "RUNNING"), task("cluster", 12, "BLOCKED")]),
        run("RUNNING", tasks=[task("load", 11, "TERMINATED", "SUCCESS"), task("cluster", 12, "RUNNING")]),
        run("TERMINATED", "SUCCESS", tasks=[task("load", 11, "TERMINATED", "SUCCESS"),
                                            task("cluster", 12, "TERMINATED", "SUCCESS")]),
    ]
    params = {"k": "5", "catalog": "main", "schema": "gold"}

    assert go(ws, development=True, params=params) == 0

    out = capsys.readouterr().out
    assert URL in out
    lines = out.splitlines()
    for state in ("load: PENDING", "load: RUNNING", "load: SUCCESS", "cluster: BLOCKED", "cluster: SUCCESS"):
        assert lines.count(f"  {state}") == 1, out  # printed once, when it changes
    assert lines.index("  load: RUNNING") < lines.index("  load: SUCCESS")
    assert lines[-1] == f"run {RUN_ID} finished: SUCCESS"

    lists = ws.api("GET", "/api/2.2/jobs/list")
    assert [r["query"].get("page_token") for r in lists] == [None, "2", "4"]  # walked every page
    assert "name" not in lists[0]["query"]
    assert len(ws.api("GET", "/api/2.0/preview/scim/v2/Me")) == 1  # two dev matches -> ask who I am
    [start] = ws.api("POST", "/api/2.2/jobs/run-now")
    assert start["body"] == {"job_id": 3, "job_parameters": params}
    assert len(ws.api("GET", "/api/2.2/jobs/runs/get")) == 5
    assert not ws.api(path="/api/2.2/jobs/runs/cancel") and not ws.api(path="/api/2.2/jobs/runs/get-output")
    assert {r["auth"] for r in ws.api()} == {f"Bearer {TOKEN}"}


def test_prod_uses_exact_name_filter(ws):
    ws.jobs.append({"job_id": 9, "creator_user_name": ME, "settings": {"name": f"[dev me] {JOB}"}})
    assert find_job(workspace_client(), JOB, development=False) == 1
    [listed] = ws.api("GET", "/api/2.2/jobs/list")
    assert listed["query"]["name"] == JOB
    assert not ws.api(path="/api/2.0/preview/scim/v2/Me")  # a single match needs no user lookup


def test_failure_reports_failed_task_and_error(ws, capsys):
    ws.runs = [
        run("RUNNING", tasks=[task("load", 11, "RUNNING"), task("features", 12, "PENDING")]),
        run("TERMINATED", "FAILED", message="Workload failed, see run output for details", tasks=[
            task("load", 11, "TERMINATED", "SUCCESS"),
            task("features", 12, "TERMINATED", "FAILED", message="Workload failed"),
            task("cluster", 13, "TERMINATED", "UPSTREAM_FAILED"),
        ]),
    ]
    ws.outputs[12] = {"error": "InputContractError: table gold.customers has no column customer_id",
                      "error_trace": "Traceback ..."}

    assert go(ws) == 1

    out = capsys.readouterr().out
    assert f"run {RUN_ID} finished: FAILED - Workload failed, see run output for details" in out
    assert "  failed task features: FAILED: InputContractError: table gold.customers has no column customer_id" \
        in out.splitlines()
    assert "failed task load" not in out and "failed task cluster" not in out  # upstream-skipped is not the cause
    assert [r["query"]["run_id"] for r in ws.api("GET", "/api/2.2/jobs/runs/get-output")] == ["12"]


@pytest.mark.parametrize("code, expected", [("SUCCESS", 0), ("RUN_EXECUTION_ERROR", 1)])
def test_status_shape_without_state(ws, capsys, code, expected):
    """Lifecycle v2 answers: only `status.state` / `status.termination_details`."""
    def v2(state, code=None):
        status = {"state": state}
        if code:
            status["termination_details"] = {"code": code, "message": f"ended with {code}"}
        return status
    ws.runs = [
        {"run_id": RUN_ID, "run_page_url": URL, "status": v2("RUNNING"),
         "tasks": [{"task_key": "load", "run_id": 11, "status": v2("RUNNING")}]},
        {"run_id": RUN_ID, "run_page_url": URL, "status": v2("TERMINATED", code),
         "tasks": [{"task_key": "load", "run_id": 11, "status": v2("TERMINATED", code)}]},
    ]
    ws.outputs[11] = {"error": "boom in load"}

    assert go(ws) == expected

    out = capsys.readouterr().out
    assert f"  load: RUNNING\n  load: {code}\n" in out
    if expected:
        assert f"run {RUN_ID} finished: RUN_EXECUTION_ERROR - ended with RUN_EXECUTION_ERROR" in out
        assert "  failed task load: RUN_EXECUTION_ERROR: boom in load" in out


@pytest.mark.parametrize("cancel", [False, True])
def test_timeout_returns_3_and_cancels_only_when_asked(ws, capsys, cancel):
    ws.runs = [run("RUNNING", tasks=[task("load", 11, "RUNNING")])]

    start = time.monotonic()
    assert go(ws, timeout_s=0.2, poll_s=0.05, cancel_on_timeout=cancel) == 3
    assert time.monotonic() - start < 2

    out = capsys.readouterr().out
    assert f"run {RUN_ID} is still running after 0.2 s: {URL}" in out
    cancels = ws.api("POST", "/api/2.2/jobs/runs/cancel")
    assert [c["body"] for c in cancels] == ([{"run_id": RUN_ID}] if cancel else [])
    assert ("cancel requested" in out) == cancel


@pytest.mark.parametrize("development, target", [(False, "prod"), (True, "dev")])
def test_no_such_job(ws, development, target):
    ws.jobs = [{"job_id": 8, "creator_user_name": ME, "settings": {"name": "[dev me] something else"}}]
    with pytest.raises(RemoteRunError) as err:
        go(ws, development=development)
    message = str(err.value)
    assert repr(JOB) in message and f"databricks bundle deploy -t {target}" in message and "--job-id" in message
    assert ("development" if development else "production") in message
    assert isinstance(err.value, SeglibError)
    assert not ws.api("POST")


def test_dev_job_of_other_users_only_is_ambiguous(ws):
    ws.jobs = [{"job_id": 2, "creator_user_name": "alice@example.com", "settings": {"name": f"[dev alice] {JOB}"}},
               {"job_id": 6, "creator_user_name": "bob@example.com", "settings": {"name": f"[dev bob] {JOB}"}}]
    with pytest.raises(RemoteRunError, match=r"several development jobs .*2 .*6 .*--job-id"):
        go(ws, development=True)
    assert not ws.api("POST")


def test_job_id_argument_or_env_skips_lookup(ws, monkeypatch):
    monkeypatch.setenv("SEGLIB_JOB_ID", "42")
    assert go(ws, log=lambda *a: None) == 0
    assert go(ws, job_id=43, log=lambda *a: None) == 0
    assert [r["body"]["job_id"] for r in ws.api("POST", "/api/2.2/jobs/run-now")] == [42, 43]
    assert not ws.api(path="/api/2.2/jobs/list")

    monkeypatch.setenv("SEGLIB_JOB_ID", "abc")
    with pytest.raises(RemoteRunError, match="SEGLIB_JOB_ID"):
        go(ws)


def test_token_never_printed(ws, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="databricks")
    ws.runs = [run("TERMINATED", "FAILED", message="failed", tasks=[task("load", 11, "TERMINATED", "FAILED")])]
    ws.outputs[11] = {"error": "boom"}
    assert go(ws) == 1
    assert run_job(workspace_client(), 1, {}, timeout_s=0, poll_s=0.01) == 1

    # Rejected token: clear error with auth help, and neither token shows up.
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-WRONG-0000")
    with pytest.raises(RemoteRunError, match="DATABRICKS_TOKEN") as rejected:
        go(ws, job_id=1)
    # No host at all: the SDK cannot configure auth.
    monkeypatch.delenv("DATABRICKS_HOST")
    with pytest.raises(RemoteRunError, match="DATABRICKS_HOST") as unconfigured:
        go(ws)

    captured = capfd.readouterr()
    for text in (captured.out, captured.err, caplog.text, str(rejected.value), str(unconfigured.value)):
        assert TOKEN not in text and "dapi-WRONG-0000" not in text
    assert "boom" in captured.out  # the run really was reported


def test_lost_contact_mid_run_names_the_run(ws, capsys):
    ws.runs = [run("RUNNING", tasks=[task("load", 11, "RUNNING")]),
               (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Run 777 does not exist"})]
    with pytest.raises(RemoteRunError, match="Run 777 does not exist"):
        go(ws)
    assert f"lost contact with run {RUN_ID}; it may still be running: {URL}" in capsys.readouterr().out



def test_cli_runs_the_bundle_job_of_the_target_with_its_parameters(ws, capsys):
    """`seglib remote-run -t dev`: job name from resources/segmentation.job.yml, dev naming, exit codes."""
    from seglib.cli import main
    ws.jobs = [{"job_id": 5, "creator_user_name": ME, "settings": {"name": f"[dev me] {JOB}"}}]
    assert main(["remote-run", "--target", "dev", "--param", "k=6", "--poll", "0.05"]) == 0
    [started] = ws.api("POST", "/api/2.2/jobs/run-now")
    assert started["body"] == {"job_id": 5, "job_parameters": {"k": "6"}}
    assert URL in capsys.readouterr().out
    ws.runs = [run("TERMINATED", "FAILED", message="boom")]
    assert main(["remote-run", "--target", "dev", "--poll", "0.05"]) == 1
