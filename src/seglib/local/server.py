"""One local Spark shared by the notebooks of a run, kept for the next run on the same lakehouse."""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import SparkSession

from ..errors import LocalSparkError
from .spark import _cached_jars, _class_archive, local_session, stop_local_spark

# --- One local Spark shared by the notebooks of a run ------------------------------------------------
# Each notebook kernel starting its own JVM (and booting the Derby catalog) cost 10-25 s per notebook.
# Instead the runner starts one Spark Connect server on the lakehouse (as Databricks serverless is a
# Spark Connect service) and points every kernel at it through SPARK_REMOTE. The server listens on
# loopback only and demands a random per-run token, passed through the environment, never printed.
_TOKEN_ENV = "SPARK_CONNECT_AUTHENTICATE_TOKEN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(lakehouse: str, port: str, ready_file: str, idle_minutes: str = "0") -> None:
    """Server process body: start Spark with the Connect plugin, boot the catalog, then serve until the
    runner goes (stdin EOF) or, for a kept server, until it has been idle for *idle_minutes* or is stopped.

    A cold JVM spends much of a small run loading and verifying Spark's classes. The first server on a
    machine records them into an AppCDS archive when it exits; later servers map it and start, boot the
    catalog and run their first queries about twice as fast. A stale or mismatched archive is ignored
    by the JVM (-Xshare:auto), so this can only cost the one-off dump.
    """
    archive = _class_archive()
    dump = archive.with_suffix(f".{os.getpid()}.tmp")
    cds = (f"-XX:SharedArchiveFile={archive}" if archive.exists() and _cached_jars()
           else f"-XX:ArchiveClassesAtExit={dump}")
    spark = local_session(lakehouse, app_name="seglib-connect", java_options=f"{cds} -Xlog:cds=off -Xlog:cds+dynamic=off",
                          conf={"spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
                                "spark.connect.grpc.binding.address": "127.0.0.1",
                                "spark.connect.grpc.binding.port": port})
    spark.sql("SHOW DATABASES").collect()  # boot the metastore now rather than in the first notebook
    idle = float(idle_minutes)
    if idle > 0:
        if not _serve_kept(lakehouse, int(port), idle, ready_file):
            _end_now()  # the lakehouse folder is gone: a clean stop could only write parts of it back
    else:
        Path(ready_file).write_text(str(os.getpid()))
        sys.stdin.read()  # EOF when the runner finishes or dies: either way the server goes too
    # Waiting for the JVM to exit lets the class archive be written completely before it is moved into place.
    stop_local_spark()
    if dump.exists():
        dump.replace(archive)
    if idle > 0:
        _forget_state(lakehouse)


# --- A server kept for the next run on the same lakehouse -------------------------------------------
# A cold JVM costs a 62,988-member run about half its time (JIT, first Delta queries): 130-165 s against
# 75-90 s for the same run on a server that has run it before. Like Gradle's daemon, the server a run
# starts stays up for SEGLIB_SERVER_IDLE minutes (default 15; 0 on CI) after the last run that used it,
# and the next `seglib run`/`demo` on that lakehouse uses it. It holds the lakehouse's Derby catalog, so
# every seglib command on the lakehouse goes through it; `seglib server stop` ends it at once.
SERVER_IDLE_ENV = "SEGLIB_SERVER_IDLE"
DEFAULT_SERVER_IDLE_MINUTES = 15.0
_FINGERPRINT_ENV = ("SEGLIB_JAVA_OPTS", "SEGLIB_SPARK_CONF", "SEGLIB_DRIVER_MEMORY", "SEGLIB_SPARK_MASTER")


RETIRE_FILE = "retire"  # in a server's folder: stop as soon as no run uses it
KEPT_SERVERS_ENV = "SEGLIB_KEPT_SERVERS"


def kept_servers_allowed() -> int:
    """How many lakehouses may keep a server at once: SEGLIB_KEPT_SERVERS, else 1 (each holds 1.5-2.5 GB)."""
    value = os.environ.get(KEPT_SERVERS_ENV, "").strip() or "1"
    try:
        allowed = int(value)
    except ValueError:
        allowed = 0
    if allowed < 1:
        raise LocalSparkError(f"{KEPT_SERVERS_ENV} must be a whole number of servers, 1 or more, got {value!r}")
    return allowed


def _registry() -> Path:
    """This user's kept servers, one file per server process (named by pid, holding its lakehouse)."""
    return Path.home() / ".cache" / "seglib" / "servers"


def _is_server(pid: int) -> bool:
    """*pid* is alive and a seglib server (not a process that reused a dead server's pid)."""
    try:
        return _pid_alive(pid) and b"seglib.local.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)


def kept_servers() -> list[tuple[int, Path]]:
    """(pid, lakehouse) of this user's kept servers that are running, oldest first; others' entries go."""
    folder = _registry()
    entries = []
    for entry in (folder.iterdir() if folder.is_dir() else ()):
        try:
            pid = int(entry.name)
            if not _is_server(pid):
                entry.unlink(missing_ok=True)
                continue
            entries.append((entry.stat().st_mtime, pid, Path(entry.read_text().strip())))
        except (ValueError, OSError):
            continue
    return [(pid, lakehouse) for _, pid, lakehouse in sorted(entries)]


def _register(pid: int, lakehouse: str | os.PathLike) -> None:
    _registry().mkdir(parents=True, exist_ok=True)
    (_registry() / str(pid)).write_text(str(Path(lakehouse).resolve()))


def retire_others(lakehouse: str | os.PathLike, log=None) -> list[Path]:
    """Keep at most kept_servers_allowed() servers: *lakehouse*'s and the newest others. An older one
    stops now, or, while a run is using it, as soon as that run ends. Returns their lakehouses."""
    import signal
    say = log or (lambda *a, **k: None)
    here = Path(lakehouse).resolve()
    others = [(pid, lh) for pid, lh in kept_servers() if lh != here]
    retired = []
    for pid, other in others[:max(0, len(others) - (kept_servers_allowed() - 1))]:
        if other.is_dir() and _in_use(other) and _server_dir(other).is_dir():
            (_server_dir(other) / RETIRE_FILE).touch()
            say(f"[spark] the Spark server kept for {other} stops when the run using it ends "
                f"({KEPT_SERVERS_ENV}=2 keeps both)")
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            say(f"[spark] stopped the Spark server kept for {other} (pid {pid}): one lakehouse keeps a server at "
                f"a time ({KEPT_SERVERS_ENV}=2 keeps both)")
        retired.append(other)
    return retired


def server_idle_minutes() -> float:
    """How long a run's server stays up idle for the next run: SEGLIB_SERVER_IDLE minutes, else 15 (0 when
    CI is set: a CI machine runs once and its processes should end with the command)."""
    value = os.environ.get(SERVER_IDLE_ENV, "").strip()
    if not value:
        return 0.0 if os.environ.get("CI") else DEFAULT_SERVER_IDLE_MINUTES
    try:
        minutes = float(value)
    except ValueError:
        raise LocalSparkError(f"{SERVER_IDLE_ENV} must be a number of minutes (0 = no kept server), got {value!r}") from None
    return max(minutes, 0.0)


def _server_dir(lakehouse: str | os.PathLike) -> Path:
    return Path(lakehouse).resolve() / ".seglib-server"


def _state_file(lakehouse: str | os.PathLike) -> Path:
    """The kept server's record (pid, port, settings' fingerprint, token), written by the server itself."""
    return _server_dir(lakehouse) / "server.json"


def _fingerprint() -> str:
    """What a server was started with: a run asking for other settings (or another pyspark, Delta or
    Python) gets a new server instead of silently reusing the old one."""
    import hashlib
    import pyspark
    from importlib.metadata import version
    parts = [sys.executable, pyspark.__version__, version("delta-spark")] + [os.environ.get(k, "") for k in _FINGERPRINT_ENV]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    """A running process (a zombie, exited but not yet reaped by its parent, is not)."""
    if pid <= 0:  # kill(0) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _read_state(lakehouse: str | os.PathLike) -> dict | None:
    import json
    try:
        return json.loads(_state_file(lakehouse).read_text())
    except (OSError, ValueError):
        return None


def running_server(lakehouse: str | os.PathLike) -> dict | None:
    """The kept server of *lakehouse* if one is up and answering: pid, port, url, fingerprint, started,
    idle_minutes, log (and the token, which callers must not print). A dead server's record is removed."""
    info = _read_state(lakehouse)
    if info is None:
        return None
    pid = int(info.get("pid", 0))
    if not _pid_alive(pid):
        _state_file(lakehouse).unlink(missing_ok=True)
        return None
    if info.get("stopping") or not _port_open(int(info.get("port", 0))):
        return None
    return {**info, "url": f"sc://localhost:{info['port']}"}


def _wait_gone(pid: int, timeout: float) -> None:
    import signal
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            break
        time.sleep(0.2)


def stop_server(lakehouse: str | os.PathLike, timeout: float = 360.0) -> dict | None:
    """Stop the kept server of *lakehouse* (if any, also one stopping by itself) and wait until it is
    gone, catalog released; returns its record."""
    import signal
    info = _read_state(lakehouse)
    if info is None or not _pid_alive(int(info.get("pid", 0))):
        _state_file(lakehouse).unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(info["pid"]), signal.SIGTERM)
    _wait_gone(int(info["pid"]), timeout)
    _state_file(lakehouse).unlink(missing_ok=True)
    return info


def _leases(lakehouse: str | os.PathLike) -> Path:
    folder = _server_dir(lakehouse) / "leases"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _take_lease(lakehouse: str | os.PathLike) -> Path:
    """This process uses the server: it does not count as idle while the lease is there and we live."""
    lease = _leases(lakehouse) / str(os.getpid())
    lease.touch()
    return lease


def _in_use(lakehouse: str | os.PathLike) -> bool:
    """Some live process holds a lease on the server (a run is using it); dead holders' leases go. Creates
    nothing: the server asks this of a lakehouse that may have been deleted."""
    busy = False
    folder = _server_dir(lakehouse) / "leases"
    for lease in (folder.iterdir() if folder.is_dir() else ()):
        try:
            pid = int(lease.name)
        except ValueError:
            continue
        if _pid_alive(pid):
            busy = True
        else:
            lease.unlink(missing_ok=True)
    return busy


def _write_state(lakehouse: str | os.PathLike, record: dict) -> None:
    import json
    state = _state_file(lakehouse)
    tmp = state.with_suffix(f".{os.getpid()}.tmp")
    # The token lets a process on this machine use the server: readable by this user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    tmp.replace(state)


# How long a kept server may take to stop after SIGTERM before it kills its JVM and exits anyway.
STOP_GRACE_SECONDS = 60.0


def _end_now() -> None:
    """Kill this process's Spark JVM and exit at once: for a lakehouse that is gone, or a stop that hangs."""
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    with contextlib.suppress(Exception):
        gateway.proc.kill()
        gateway.proc.wait(timeout=30)
    os._exit(0)


def _serve_kept(lakehouse: str, port: int, idle_minutes: float, ready_file: str) -> bool:
    """Register this server for the lakehouse, then serve until no run has held a lease on it for
    *idle_minutes* (none once it is asked to retire), SIGTERM (`seglib server stop`), or its lakehouse
    folder disappears. Returns whether the lakehouse is still there; a server that returns is marked as
    stopping, so no run picks it up any more and a run that wants a server waits until this one has
    released the catalog. The server never creates the lakehouse folder or anything in a deleted one."""
    import signal
    import threading
    stop = {"now": False}

    def on_term(*_):
        if stop["now"]:  # a second SIGTERM: no more waiting
            _end_now()
        stop["now"] = True
        # Whatever the stop hangs on (a catalog whose files were deleted under it), the process ends.
        threading.Timer(STOP_GRACE_SECONDS, _end_now).start()

    signal.signal(signal.SIGTERM, on_term)
    root, folder = Path(lakehouse), _server_dir(lakehouse)
    record = {"pid": os.getpid(), "port": port, "fingerprint": _fingerprint(), "idle_minutes": idle_minutes,
              "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
              "log": os.environ.get("SEGLIB_SERVER_LOG", ""), "token": os.environ.get(_TOKEN_ENV, "")}
    _write_state(lakehouse, record)
    Path(ready_file).write_text(str(os.getpid()))
    last_used = time.monotonic()
    while not stop["now"]:
        if not root.is_dir():
            return False
        try:
            limit = 0.0 if (folder / RETIRE_FILE).exists() else idle_minutes * 60
            if _in_use(lakehouse):
                last_used = time.monotonic()
            elif time.monotonic() - last_used > limit:
                # Under the lock runs take their lease under: a run either got its lease first or sees "stopping".
                with _start_lock(lakehouse, create=False):
                    if not _in_use(lakehouse):
                        _write_state(lakehouse, {**record, "stopping": True})
                        return True
        except OSError:  # the folder went while we looked: the next turn sees it
            pass
        time.sleep(1.0)
    # SIGTERM: whoever sent it (stop_server) may hold the lock, and waits for this process to end.
    with contextlib.suppress(OSError):
        _write_state(lakehouse, {**record, "stopping": True})
    return root.is_dir()


def _forget_state(lakehouse: str | os.PathLike) -> None:
    """The last thing a kept server does: its record goes (once its JVM, and the catalog, are released)."""
    info = _read_state(lakehouse)
    if info is not None and info.get("pid") == os.getpid():
        _state_file(lakehouse).unlink(missing_ok=True)


@contextlib.contextmanager
def _start_lock(lakehouse: str | os.PathLike, create: bool = True):
    """One process at a time looks for, starts or retires the lakehouse's server. The server itself takes
    it with create=False: a missing folder is then an error (FileNotFoundError), not re-created."""
    import fcntl
    folder = _server_dir(lakehouse)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pointing_at(url: str, token: str):
    """SPARK_REMOTE and the token in this process's environment for the block (kernels inherit them)."""
    saved = {k: os.environ.get(k) for k in ("SPARK_REMOTE", _TOKEN_ENV)}
    os.environ["SPARK_REMOTE"], os.environ[_TOKEN_ENV] = url, token
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def shared_local_spark(lakehouse: str | os.PathLike, log_path: Path, timeout: float = 900.0,
                       keep_minutes: float | None = None, log=None):
    """A local Spark Connect server on *lakehouse*; within the block SPARK_REMOTE points at it.

    The lakehouse's kept server is used when one is up with the same settings (one with other settings
    is stopped first: it holds the catalog). Otherwise a server is started: one that ends with the block
    when *keep_minutes* (default: server_idle_minutes()) is 0, else one kept that long after the last
    block that used it. Servers kept for other lakehouses beyond kept_servers_allowed() are retired.
    *log*: where to say which (default: silent)."""
    keep = server_idle_minutes() if keep_minutes is None else keep_minutes
    say = log or (lambda *a, **k: None)
    proc = None
    with _start_lock(lakehouse):
        info = running_server(lakehouse)
        if info is not None and info.get("fingerprint") != _fingerprint():
            if _in_use(lakehouse):
                raise LocalSparkError(f"the Spark server kept for {Path(lakehouse).resolve()} was started with other "
                                      f"settings ({', '.join(_FINGERPRINT_ENV)}) and another run is using it; "
                                      f"wait for that run, or run with the same settings")
            say("[spark] the lakehouse's running server has other settings; stopping it")
            info = None
        if keep > 0 or info is not None:
            # This lakehouse keeps a server: it is the one wanted now (the lock keeps it from stopping
            # meanwhile), and older ones on other lakehouses go first, freeing their memory.
            (_server_dir(lakehouse) / RETIRE_FILE).unlink(missing_ok=True)
            retire_others(lakehouse, log=say)
        if info is None:
            stop_server(lakehouse)  # one with other settings, or one stopping by itself: the catalog must be free
            say("[spark] starting the local Spark server ...", end="", flush=True)
            start = time.perf_counter()
            try:
                proc, url, token = _start_server(lakehouse, log_path, timeout, keep)
            except BaseException:
                say(" FAILED")
                raise
            say(f" ok ({time.perf_counter() - start:.1f} s, {url})")
        else:
            url, token = info["url"], info["token"]
            say(f"[spark] using the lakehouse's running Spark server (pid {info['pid']}, up since {info['started']}; "
                f"its log: {info.get('log') or '-'})")
        lease = _take_lease(lakehouse)
    try:
        with _pointing_at(url, token):
            yield url
    finally:
        lease.unlink(missing_ok=True)
        if proc is not None and keep <= 0:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=360)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc is not None:
            say(f"[spark] the server stays up {keep:g} min after the last run on this lakehouse "
                f"(`seglib server stop` ends it; {SERVER_IDLE_ENV}=0 runs without it)")


def _start_server(lakehouse: str | os.PathLike, log_path: Path, timeout: float, keep: float):
    """Start the server process; returns (process, url, token) once it is ready."""
    port, token = _free_port(), secrets.token_hex(16)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ready = log_path.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    # A process that has been a Spark Connect client carries pyspark's connect-mode flag; the server
    # must start classic Spark.
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    env[_TOKEN_ENV] = token
    env["SEGLIB_SERVER_LOG"] = str(log_path)
    code = "import sys; from seglib.local.server import _serve; _serve(*sys.argv[1:])"
    args = [sys.executable, "-c", code, str(Path(lakehouse).resolve()), str(port), str(ready), str(keep)]
    with open(log_path, "ab") as log:
        if keep > 0:  # outlives this process: its own session, no stdin tied to the runner
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        else:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise LocalSparkError(f"the local Spark server exited with code {proc.returncode} before it was "
                                      f"ready{_lock_hint(log_path)}; see {log_path}")
            if time.monotonic() > deadline:
                raise LocalSparkError(f"the local Spark server was not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
    except BaseException:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        raise
    finally:
        ready.unlink(missing_ok=True)
    if keep > 0:
        _register(proc.pid, lakehouse)
    return proc, f"sc://localhost:{port}", token


def _lock_hint(log_path: Path) -> str:
    """Derby admits one JVM per catalog: say so plainly when that is why the server died."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    if "Another instance of Derby may have already booted" in text:
        return (" (another Spark process, e.g. a concurrent seglib run or a Python session of your own, holds "
                "this lakehouse's catalog)")
    return ""


def laptop_spark(lakehouse: str | os.PathLike, app_name: str = "seglib") -> SparkSession:
    """The lakehouse's kept Spark server if one is up (it holds the catalog: a session of our own could
    not open it), held by a lease while this process lives; else a local session of this process."""
    kept = None
    if _state_file(lakehouse).exists():
        with _start_lock(lakehouse):
            kept = running_server(lakehouse)
            if kept is not None:
                _take_lease(lakehouse)
    if kept is not None:
        os.environ["SPARK_REMOTE"], os.environ[_TOKEN_ENV] = kept["url"], kept["token"]
        return SparkSession.builder.remote(kept["url"]).getOrCreate()
    return local_session(lakehouse, app_name=app_name)
