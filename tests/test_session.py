"""The shared local Spark server the runner starts for a run."""
import os

import pytest

from seglib.errors import LocalSparkError
from seglib.session import shared_local_spark


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

from conftest import SERVERLESS_NO_CACHE  # noqa: E402
from seglib import cli, session as S  # noqa: E402

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


class _Frame:
    """Stands in for a DataFrame whose cache() fails with *error*."""
    def __init__(self, error=None):
        self.error, self.unpersisted = error, False

    def cache(self):
        if self.error:
            raise self.error
        return self

    def unpersist(self):
        if self.error:
            raise self.error
        self.unpersisted = True


def test_cache_falls_back_only_where_the_compute_has_no_cache():
    serverless = RuntimeError(SERVERLESS_NO_CACHE)
    frame = _Frame(serverless)
    assert S.cache(frame) is frame
    S.uncache(frame)  # nothing was cached; nothing to free, no error
    S.uncache(None)
    with pytest.raises(RuntimeError, match="boom"):  # any other failure is a failure
        S.cache(_Frame(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        S.uncache(_Frame(RuntimeError("boom")))
    fine = _Frame()
    assert S.cache(fine) is fine
    S.uncache(fine)
    assert fine.unpersisted
