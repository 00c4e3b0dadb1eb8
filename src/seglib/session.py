"""One way for notebooks to get Spark.

In Databricks or Fabric the platform's session is used as it is. Anywhere else seglib starts a local
session with Delta, a persistent Hive catalog on embedded Derby and a warehouse under a *lakehouse*
folder, so a table one notebook process saves is read by the next with ``spark.read.table``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from .errors import LocalSparkError

DEFAULT_LAKEHOUSE = ".lakehouse"

# delta-spark's POM pulls older copies of libraries pyspark already ships (Hadoop client, Parquet,
# Jackson, log4j, compression codecs). Excluding them keeps one version of each on the classpath and
# makes the first download ~10x smaller; only delta-* and unitycatalog-* jars remain.
_DUPLICATES_OF_PYSPARK_JARS = [
    "org.apache.hadoop:hadoop-client-runtime", "org.apache.hadoop:hadoop-client-api",
    "org.apache.parquet:parquet-hadoop", "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common", "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures", "org.apache.parquet:parquet-jackson",
    "com.fasterxml.jackson.core:jackson-databind", "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-annotations", "com.fasterxml.jackson.datatype:jackson-datatype-jdk8",
    "org.apache.logging.log4j:log4j-api", "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl", "org.slf4j:slf4j-api",
    "org.xerial.snappy:snappy-java", "com.github.luben:zstd-jni", "io.airlift:aircompressor",
    "org.roaringbitmap:RoaringBitmap", "org.roaringbitmap:shims", "org.locationtech.jts:jts-core",
    "commons-logging:commons-logging", "commons-pool:commons-pool", "javax.annotation:javax.annotation-api",
    "com.google.code.findbugs:jsr305",
]


def is_managed_runtime() -> bool:
    """True inside Databricks (classic or serverless) or Microsoft Fabric."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    try:  # Fabric and Synapse expose notebookutils; nothing else does.
        import notebookutils  # type: ignore  # noqa: F401
        return True
    except ImportError:
        return False


def warehouse_dir(lakehouse: str | os.PathLike) -> Path:
    return Path(lakehouse).resolve() / "warehouse"


def table_path(lakehouse: str | os.PathLike, schema: str, table: str) -> Path:
    """Where the local catalog keeps a managed table (Hive layout: <warehouse>/<schema>.db/<table>)."""
    return warehouse_dir(lakehouse) / f"{schema.lower()}.db" / table.lower()


def default_model_path(lakehouse: str | os.PathLike, schema: str, catalog: str | None = None) -> str:
    """Where the fitted pipeline model goes when model_path is empty.

    Databricks with Unity Catalog: a volume in the output schema (seglib creates it when saving).
    Fabric: the attached lakehouse's Files area. Locally: under the lakehouse folder.
    """
    if os.environ.get("DATABRICKS_RUNTIME_VERSION") and catalog:
        return f"/Volumes/{catalog}/{schema}/seglib_models/segmentation"
    if is_managed_runtime():
        return f"Files/seglib_models/{schema}/segmentation"
    return str(Path(lakehouse).resolve() / "models" / schema / "segmentation")


def _jar_manifest() -> Path:
    import pyspark
    from importlib.metadata import version
    return Path.home() / ".cache" / "seglib" / f"delta-{version('delta-spark')}-spark-{pyspark.__version__}.jars"


def _cached_jars() -> list[str] | None:
    """Delta's jars from an earlier resolution, if all are still on disk (skips Ivy: faster, quiet)."""
    manifest = _jar_manifest()
    if not manifest.exists():
        return None
    jars = [j for j in manifest.read_text().split() if j]
    return jars if jars and all(Path(j.removeprefix("file:")).exists() for j in jars) else None


def get_spark(lakehouse: str | os.PathLike | None = None, app_name: str = "seglib") -> SparkSession:
    """The active session if there is one (Databricks, Fabric, a test's); else the lakehouse's kept
    Spark server (see shared_local_spark) if one is up; else a local session of this process."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if is_managed_runtime() or os.environ.get("SPARK_REMOTE"):
        return SparkSession.builder.getOrCreate()
    lakehouse = lakehouse or DEFAULT_LAKEHOUSE
    kept = None
    if _state_file(lakehouse).exists():
        with _start_lock(lakehouse):
            kept = running_server(lakehouse)
            if kept is not None:
                _take_lease(lakehouse)  # held while this process lives
    if kept is not None:  # it holds the catalog: a session of our own could not open it
        os.environ["SPARK_REMOTE"], os.environ[_TOKEN_ENV] = kept["url"], kept["token"]
        return SparkSession.builder.remote(kept["url"]).getOrCreate()
    return local_session(lakehouse, app_name=app_name)


# Databricks serverless has no cache: DataFrame.cache()/persist()/unpersist() raise
# [NOT_SUPPORTED_WITH_SERVERLESS] PERSIST TABLE is not supported on serverless compute.
_NO_CACHE = "NOT_SUPPORTED_WITH_SERVERLESS"


def _no_cache_here(error: Exception) -> bool:
    condition = getattr(error, "getCondition", None)
    return _NO_CACHE in str(error) or (callable(condition) and condition() == _NO_CACHE)


def cache(df: DataFrame) -> DataFrame:
    """*df* cached, where the compute has a cache; *df* itself on Databricks serverless, which has none:
    there each action computes it anew from its inputs (the same rows: seglib's steps are deterministic)."""
    try:
        return df.cache()
    except Exception as e:  # noqa: BLE001 - only "no cache on this compute" is expected
        if _no_cache_here(e):
            return df
        raise


def uncache(df: DataFrame | None) -> None:
    """Free what cache() cached: a kept local server or a shared cluster runs many jobs, and a cached
    DataFrame outlives the session that cached it."""
    if df is None:
        return
    try:
        df.unpersist()
    except Exception as e:  # noqa: BLE001
        if not _no_cache_here(e):
            raise


def describe(spark: SparkSession) -> str:
    """One line for a notebook's first output: which Spark, and whether it is a Spark Connect client."""
    kind = "Spark Connect" if type(spark).__module__.startswith("pyspark.sql.connect") else "classic"
    return f"Spark {spark.version} ({kind})"


def local_session(lakehouse: str | os.PathLike, app_name: str = "seglib", conf: dict[str, str] | None = None,
                  java_options: str = "") -> SparkSession:
    from delta import configure_spark_with_delta_pip

    # The JVM otherwise warns that the host name resolves to loopback; local runs need nothing else.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter (its pyspark, pandas, pyarrow), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = Path(lakehouse).resolve()
    root.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    log4j = here / "log4j2.properties"
    cores = os.cpu_count() or 2
    if "-XX:SharedArchiveFile" not in java_options and "-XX:ArchiveClassesAtExit" not in java_options:
        # The class archive the shared server recorded (_serve) serves any local JVM with these jars:
        # a test session or a notebook's own Spark loads Spark's classes from it too.
        archive = _class_archive()
        if archive.exists() and _cached_jars():
            java_options += f" -XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    # UTC for the JVM as for the SQL session: outside UTC, Delta 4.3 re-reads a table's whole log to verify
    # every commit (allFilesInCrc.verificationMode.forceOnNonUTC): an append to a small table took 1.7-3.9 s
    # with TZ=Europe/Berlin against 0.7 s.
    java_opts = " ".join([f"-Dderby.system.home={root} -Dlog4j2.configurationFile=file:{log4j} -Duser.timezone=UTC",
                          java_options,
                          os.environ.get("SEGLIB_JAVA_OPTS", "")])
    builder = (
        SparkSession.builder.master(os.environ.get("SEGLIB_SPARK_MASTER") or f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.catalogImplementation", "hive")
        .config("spark.sql.warehouse.dir", str(warehouse_dir(root)))
        .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.driver.memory", os.environ.get("SEGLIB_DRIVER_MEMORY") or "4g")
        # A laptop has a handful of cores: 200 shuffle partitions would be 200 tiny tasks per stage.
        .config("spark.sql.shuffle.partitions", str(max(4, 2 * cores)))
        .config("spark.default.parallelism", str(max(4, 2 * cores)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # Delta registers a placeholder schema, then alters it; Hive 2.3 would reject that and retry.
        .config("spark.hadoop.hive.metastore.disallow.incompatible.col.type.changes", "false")
        .config("spark.sql.debug.maxToStringFields", "200")
    )
    # SEGLIB_SPARK_CONF="key=value,key=value" tunes a local session without code changes.
    extra = dict(kv.split("=", 1) for kv in os.environ.get("SEGLIB_SPARK_CONF", "").split(",") if "=" in kv)
    for key, value in {**(conf or {}), **extra}.items():
        builder = builder.config(key.strip(), value.strip())
    jars = _cached_jars()
    if jars:
        # On the JVM's own class path (local mode: the driver is the executor) rather than spark.jars, so
        # Delta's classes load once, by the app loader, and can go into the class-data-sharing archive.
        classpath = os.pathsep.join(j.removeprefix("file:") for j in jars)
        return builder.config("spark.driver.extraClassPath", classpath).getOrCreate()
    # First start on this machine: delta-spark names its Maven artifact; Ivy downloads and caches it.
    builder = (builder.config("spark.jars.excludes", ",".join(_DUPLICATES_OF_PYSPARK_JARS))
               .config("spark.jars.ivySettings", str(here / "ivysettings.xml"))
               .config("spark.jars.ivy", str(Path.home() / ".cache" / "seglib" / "ivy")))
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    resolved = [j for j in spark.conf.get("spark.jars", "").split(",") if j.endswith(".jar")]
    if resolved:
        _jar_manifest().write_text("\n".join(resolved) + "\n")
    return spark


def stop_local_spark(timeout: float = 300.0) -> None:
    """Stop this process's local classic Spark and wait until its JVM has exited, so the lakehouse's Derby
    catalog is free for the next process (a notebook after this one). Nothing to do on a platform, over
    Spark Connect, or without a session."""
    active = SparkSession.getActiveSession()
    if is_managed_runtime() or (active is not None and type(active).__module__.startswith("pyspark.sql.connect")):
        return
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    if active is not None:
        active.stop()
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.proc.stdin.close()  # the JVM exits when its stdin closes
        gateway.proc.wait(timeout=timeout)


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


def _class_archive() -> Path:
    """Where the server JVM's class-data-sharing archive lives (one per Java, pyspark and Delta jars)."""
    import hashlib
    import shutil
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") \
        else shutil.which("java")
    key = f"{os.path.realpath(java or 'java')}|{_jar_manifest().name}|{' '.join(_cached_jars() or [])}"
    return Path.home() / ".cache" / "seglib" / f"spark-classes-{hashlib.sha1(key.encode()).hexdigest()[:12]}.jsa"


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
        _serve_kept(lakehouse, int(port), idle, ready_file)
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
    """Some live process holds a lease on the server (a run is using it); dead holders' leases go."""
    busy = False
    for lease in _leases(lakehouse).iterdir():
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


def _serve_kept(lakehouse: str, port: int, idle_minutes: float, ready_file: str) -> None:
    """Register this server for the lakehouse, then serve until no run has held a lease on it for
    *idle_minutes*, or SIGTERM (`seglib server stop`). Returns marked as stopping: no run picks it up
    any more, and a run that wants a server waits until this one has released the catalog."""
    import signal
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    record = {"pid": os.getpid(), "port": port, "fingerprint": _fingerprint(), "idle_minutes": idle_minutes,
              "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
              "log": os.environ.get("SEGLIB_SERVER_LOG", ""), "token": os.environ.get(_TOKEN_ENV, "")}
    _write_state(lakehouse, record)
    Path(ready_file).write_text(str(os.getpid()))
    last_used = time.monotonic()
    while not stop["now"]:
        if _in_use(lakehouse):
            last_used = time.monotonic()
        elif time.monotonic() - last_used > idle_minutes * 60:
            # Under the lock runs take their lease under: a run either got its lease first or sees "stopping".
            with _start_lock(lakehouse):
                if not _in_use(lakehouse):
                    _write_state(lakehouse, {**record, "stopping": True})
                    return
        time.sleep(1.0)
    # SIGTERM: whoever sent it (stop_server) may hold the lock, and waits for this process to end.
    _write_state(lakehouse, {**record, "stopping": True})


def _forget_state(lakehouse: str | os.PathLike) -> None:
    """The last thing a kept server does: its record goes (once its JVM, and the catalog, are released)."""
    info = _read_state(lakehouse)
    if info is not None and info.get("pid") == os.getpid():
        _state_file(lakehouse).unlink(missing_ok=True)


@contextlib.contextmanager
def _start_lock(lakehouse: str | os.PathLike):
    """One process at a time looks for, starts or retires the lakehouse's server."""
    import fcntl
    folder = _server_dir(lakehouse)
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
    block that used it. *log*: where to say which (default: silent)."""
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
    code = "import sys; from seglib.session import _serve; _serve(*sys.argv[1:])"
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
