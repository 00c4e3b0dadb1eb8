"""The local Spark server a run starts, and keeps for the next run on the same lakehouse (seglib.local.server)."""
import os

import pytest

from seglib.errors import LocalSparkError
from seglib.local.server import shared_local_spark


def test_server_refuses_a_lakehouse_whose_catalog_another_jvm_holds(spark, lakehouse, tmp_path):
    # The test session holds this lakehouse's Derby catalog (once it has touched it), as a concurrent run would.
    spark.sql("SHOW DATABASES").collect()
    before = os.environ.get("SPARK_REMOTE")
    with pytest.raises(LocalSparkError, match="another Spark process.*holds this lakehouse's catalog"):
        with shared_local_spark(lakehouse, tmp_path / "server.log", timeout=300):
            pass
    assert os.environ.get("SPARK_REMOTE") == before
    assert not (tmp_path / "server.ready").exists()


# --- The server a run keeps for the next run on the same lakehouse ------------------------------------
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from seglib import cli  # noqa: E402
from seglib.local import server as S  # noqa: E402

QUERY = ("import seglib; s = seglib.get_spark({lakehouse!r}); "
         "print(seglib.session.describe(s), "
         "s.sql(\"SELECT java_method('java.lang.System', 'getProperty', 'user.timezone')\").first()[0], "
         "s.range(7).count())")


def _client(lakehouse, env=None):
    """A Python process of its own using the lakehouse's Spark, as a notebook kernel or a user's script does."""
    base = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_AUTHENTICATE_TOKEN")}
    proc = subprocess.run([sys.executable, "-c", QUERY.format(lakehouse=str(lakehouse))], capture_output=True,
                          text=True, timeout=300, env={**base, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_kept_server_serves_the_next_runs_then_stops_when_idle(tmp_path, capsys, monkeypatch):
    lakehouse, said = tmp_path / "lh", []
    say = lambda m, **_: said.append(m)  # noqa: E731
    # A machine outside UTC: the JVM still runs in UTC (else Delta re-reads the log to verify each commit).
    monkeypatch.setenv("TZ", "Europe/Berlin")
    with shared_local_spark(lakehouse, tmp_path / "s1.log", timeout=300, keep_minutes=0.25, log=say) as url:
        first = S.running_server(lakehouse)
        assert first is not None and first["url"] == url
        assert (lakehouse / ".seglib-server" / "leases" / str(os.getpid())).exists()  # in use: not idle
        # Kernels reach it through the environment the block sets.
        out = _client(lakehouse, {"SPARK_REMOTE": url, "SPARK_CONNECT_AUTHENTICATE_TOKEN": os.environ[S._TOKEN_ENV]})
        assert "Spark Connect" in out and out.split()[-2:] == ["UTC", "7"]
    assert any("stays up 0.25 min" in m for m in said)
    assert not (lakehouse / ".seglib-server" / "leases" / str(os.getpid())).exists()
    state = lakehouse / ".seglib-server" / "server.json"
    assert oct(state.stat().st_mode & 0o777) == "0o600"  # it holds the token

    # The next block uses it: no second server, no second start message.
    said.clear()
    with shared_local_spark(lakehouse, tmp_path / "s2.log", timeout=300, keep_minutes=0.25, log=say) as url:
        assert url == first["url"] and S.running_server(lakehouse)["pid"] == first["pid"]
    assert not (tmp_path / "s2.log").exists() and any(m.startswith("[spark] using") for m in said)

    # A script of the user's (no SPARK_REMOTE) gets the kept server too: the catalog is the server's.
    assert "Spark Connect" in _client(lakehouse)

    # Nobody uses it any more: it stops by itself after its idle time, and says so in no record.
    deadline = time.monotonic() + 120
    while S._pid_alive(first["pid"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert not S._pid_alive(first["pid"]), "the kept server did not stop after its idle time"
    assert not state.exists() and S.running_server(lakehouse) is None
    assert cli.main(["server", "status", "--lakehouse", str(lakehouse)]) == 0
    assert "no Spark server is kept" in capsys.readouterr().out


FAKE_SERVER = """
import json, os, signal, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
state = sys.argv[1]
json.dump({"pid": os.getpid(), "port": s.getsockname()[1], "fingerprint": "x", "idle_minutes": 15,
           "started": "now", "log": "", "token": "t"}, open(state, "w"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.1)
"""


def test_server_stop_ends_the_kept_server_and_a_dead_ones_record_is_dropped(tmp_path, capsys):
    """Without a JVM: a process standing in for the server (listening, stopping on SIGTERM)."""
    lakehouse = tmp_path / "lh"
    folder = lakehouse / ".seglib-server"
    folder.mkdir(parents=True)
    state = folder / "server.json"
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(state)])
    try:
        deadline = time.monotonic() + 30
        while S.running_server(lakehouse) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert S.running_server(lakehouse)["pid"] == proc.pid
        assert cli.main(["server", "status", "--lakehouse", str(lakehouse)]) == 0
        assert f"pid {proc.pid}" in capsys.readouterr().out
        assert cli.main(["server", "stop", "--lakehouse", str(lakehouse)]) == 0
        assert f"stopped the Spark server of {lakehouse} (pid {proc.pid})" in capsys.readouterr().out
        assert proc.wait(timeout=10) == 0 and not state.exists()
    finally:
        proc.kill()
    # A record whose process is gone (killed, machine restarted) is not a server, and is removed.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        state.write_text(json.dumps({"pid": proc.pid, "port": s.getsockname()[1], "token": "t"}))
        assert S.running_server(lakehouse) is None and not state.exists()
        state.write_text(json.dumps({"port": s.getsockname()[1], "token": "t"}))  # no pid: not "process 0"
        assert S.running_server(lakehouse) is None and not state.exists()
    assert S.stop_server(lakehouse) is None


def test_how_long_a_server_is_kept(monkeypatch):
    monkeypatch.delenv("SEGLIB_SERVER_IDLE")
    monkeypatch.delenv("CI", raising=False)
    assert S.server_idle_minutes() == 15
    monkeypatch.setenv("CI", "true")  # a CI machine's processes end with the command
    assert S.server_idle_minutes() == 0
    monkeypatch.setenv("SEGLIB_SERVER_IDLE", "2.5")
    assert S.server_idle_minutes() == 2.5
    monkeypatch.setenv("SEGLIB_SERVER_IDLE", "soon")
    with pytest.raises(LocalSparkError, match="SEGLIB_SERVER_IDLE must be a number of minutes"):
        S.server_idle_minutes()
    # Other JVM settings, other server: a kept one is not reused with settings it was not started with.
    before = S._fingerprint()
    monkeypatch.setenv("SEGLIB_SPARK_CONF", "spark.sql.shuffle.partitions=3")
    assert S._fingerprint() != before


# --- A kept server ends on SIGTERM, never re-creates a deleted lakehouse, and one lakehouse keeps one ---
import shutil  # noqa: E402
import signal  # noqa: E402


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """This test's own list of kept servers: the user's real kept servers are not retired by the tests."""
    folder = tmp_path / "registry"
    monkeypatch.setattr(S, "_registry", lambda: folder)
    return folder


# The server's serving loop in a process of its own, without a JVM (what follows a stop is simulated).
LOOP = """
import sys, time
from seglib.local import server as S
S.STOP_GRACE_SECONDS = 2.0
kept = S._serve_kept(sys.argv[1], 1, 15.0, sys.argv[2])
print("lakehouse still there" if kept else "lakehouse gone", flush=True)
if sys.argv[3] == "hang":  # a stop that never returns (a JVM stuck on deleted catalog files)
    time.sleep(3600)
"""


def _loop(lakehouse, tmp_path, after="return"):
    (lakehouse / ".seglib-server").mkdir(parents=True)
    ready = tmp_path / f"{lakehouse.name}.ready"
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(lakehouse), str(ready), after],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the serving loop did not start"
        time.sleep(0.1)
    return proc


def test_a_kept_server_stops_when_its_lakehouse_is_deleted_and_never_recreates_it(tmp_path):
    lakehouse = tmp_path / "lh"
    proc = _loop(lakehouse, tmp_path)
    shutil.rmtree(lakehouse)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "lakehouse gone"
    time.sleep(1.5)
    assert not lakehouse.exists()


def test_a_kept_server_ends_on_sigterm_whatever_its_folder_holds(tmp_path):
    # Its own folder deleted under it: SIGTERM still ends the loop, and the folder stays deleted.
    lakehouse = tmp_path / "lh"
    proc = _loop(lakehouse, tmp_path)
    shutil.rmtree(lakehouse / ".seglib-server")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "lakehouse still there" and proc.returncode == 0
    assert not (lakehouse / ".seglib-server").exists()
    # A stop that hangs after SIGTERM: the process ends anyway after the grace period.
    proc = _loop(tmp_path / "lh2", tmp_path, after="hang")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - started < 25


def test_a_retired_server_stops_once_no_run_uses_it(tmp_path):
    lakehouse = tmp_path / "lh"
    proc = _loop(lakehouse, tmp_path)
    lease = S._take_lease(lakehouse)  # a run (this process) is using it
    (lakehouse / ".seglib-server" / S.RETIRE_FILE).touch()
    time.sleep(3)
    assert proc.poll() is None, "a retired server stopped while a run was using it"
    lease.unlink()
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "lakehouse still there"
    assert json.loads((lakehouse / ".seglib-server" / "server.json").read_text())["stopping"] is True


# Stands in for a kept server in the process list: its command line names seglib.local.server.
FAKE_KEPT = "import time  # seglib.local.server\nwhile True: time.sleep(0.1)"


def test_one_lakehouse_keeps_a_server_unless_more_are_asked_for(tmp_path, registry, monkeypatch):
    said = []
    lakehouses = [tmp_path / name for name in ("a", "b", "c")]
    procs = []
    try:
        for lakehouse in lakehouses[:2]:
            lakehouse.mkdir()
            procs.append(subprocess.Popen([sys.executable, "-c", FAKE_KEPT]))
            S._register(procs[-1].pid, lakehouse)
            time.sleep(0.05)  # registration order is age order
        # A pid that is no seglib server (this test's own process) is not a kept server, and its entry goes.
        S._register(os.getpid(), tmp_path / "not-a-server")
        assert [lh for _, lh in S.kept_servers()] == lakehouses[:2]
        assert not (registry / str(os.getpid())).exists()

        # Two allowed: a third lakehouse retires only the oldest.
        monkeypatch.setenv(S.KEPT_SERVERS_ENV, "2")
        assert S.retire_others(lakehouses[2], log=said.append) == [lakehouses[0]]
        assert procs[0].wait(timeout=10) == -signal.SIGTERM and procs[1].poll() is None
        assert S.kept_servers() == [(procs[1].pid, lakehouses[1])]

        # One allowed (the default): b goes too, but only once the run using it ends.
        monkeypatch.delenv(S.KEPT_SERVERS_ENV)
        lease = S._take_lease(lakehouses[1])
        assert S.retire_others(lakehouses[2], log=said.append) == [lakehouses[1]]
        assert procs[1].poll() is None and (lakehouses[1] / ".seglib-server" / S.RETIRE_FILE).exists()
        assert "stops when the run using it ends" in said[-1]
        lease.unlink()
        assert S.retire_others(lakehouses[2], log=said.append) == [lakehouses[1]]
        assert procs[1].wait(timeout=10) == -signal.SIGTERM
        assert S.kept_servers() == [] and S.retire_others(lakehouses[2]) == []
    finally:
        for proc in procs:
            proc.kill()
    monkeypatch.setenv(S.KEPT_SERVERS_ENV, "0")
    with pytest.raises(LocalSparkError, match="SEGLIB_KEPT_SERVERS must be a whole number of servers, 1 or more"):
        S.kept_servers_allowed()


def test_real_servers_a_run_on_another_lakehouse_retires_the_kept_one_and_a_deleted_lakehouse_ends_its(
        tmp_path, registry):
    first, second, said = tmp_path / "first", tmp_path / "second", []

    def say(*parts, **_print_options):
        said.append(" ".join(map(str, parts)))

    with shared_local_spark(first, tmp_path / "first.log", timeout=300, keep_minutes=5, log=say):
        pass
    kept = S.running_server(first)
    assert kept is not None and S.kept_servers() == [(kept["pid"], first.resolve())]
    with shared_local_spark(second, tmp_path / "second.log", timeout=300, keep_minutes=5, log=say):
        assert any(f"stopped the Spark server kept for {first.resolve()}" in m for m in said)
    S._wait_gone(kept["pid"], 120)
    assert not S._pid_alive(kept["pid"]) and S.running_server(first) is None
    assert not (first / ".seglib-server" / "server.json").exists()  # it stopped cleanly and said so

    # The second lakehouse's folder deleted: its server ends (JVM and all) and writes nothing back.
    pid = S.running_server(second)["pid"]
    shutil.rmtree(second)
    deadline = time.monotonic() + 60
    while S._pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not S._pid_alive(pid), "the server of a deleted lakehouse kept running"
    time.sleep(2)
    assert not second.exists() and S.kept_servers() == []
