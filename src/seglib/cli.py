"""`seglib generate | run | demo`: the local entry points (Databricks runs the same notebooks as a job)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from .errors import SeglibError
from .local.runner import NotebookFailure
from .session import DEFAULT_LAKEHOUSE


def _log(*args, **kwargs):
    print(*args, **kwargs)
    sys.stdout.flush()


def _positive(text: str) -> int:
    """--customers: a whole number >= 1 (argparse turns the error into a usage message)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lakehouse", default=DEFAULT_LAKEHOUSE, help="local lakehouse folder (default: %(default)s)")
    p.add_argument("--schema", default="contoso", help="schema holding the Gold tables (default: %(default)s)")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="job parameter, repeatable (k, seed, null_policy, feature_transform, ...)")
    p.add_argument("--target", help="bundle target whose overrides apply (default: the bundle's default target)")
    p.add_argument("--bundle", type=Path, help="folder with databricks.yml (default: found from the cwd)")
    p.add_argument("--output", type=Path, help="where executed notebooks go (default: runs/<run-id>)")
    p.add_argument("--session", default="auto", choices=["auto", "connect", "classic"],
                   help="connect: one Spark Connect server for the run's notebooks (as Databricks serverless); "
                        "classic: each notebook its own Spark session (as Fabric or a job cluster); auto: connect "
                        "where this Python's pyspark can (Spark 4 with the connect extra), else classic")


def cmd_generate(args) -> int:
    from .generate import generate_recipe_data
    from .recipes import get
    from .session import get_spark
    from .tables import Location
    where = Location(args.schema)  # checks the name before starting Spark: a typo fails in a second
    recipe = get(args.recipe)
    customers = args.customers or recipe.demo_customers
    who = recipe.describes
    start = time.perf_counter()
    _log(f"Generating {customers:,} demo {who} (seed {args.seed}) into {args.lakehouse}, schema {args.schema}")
    generate_recipe_data(get_spark(args.lakehouse), where, args.recipe, customers, args.seed, log=_log)
    _log(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _run_jobs(args, jobs: list[tuple[str, dict]], start_at: str | None = None) -> None:
    """Run bundle jobs locally, one after the other, each with its own parameters (as demo_install does)."""
    from . import bundle as B
    from .local.runner import (check_params, dynamic_values, job_notebooks, job_params, local_spark, new_run_dir,
                         output_lock, run_job, session_kind)
    bundle = B.load(args.bundle, args.target)
    out = args.output or new_run_dir()
    lakehouse = str(Path(args.lakehouse).resolve())
    jobs = [(job, {"schema": args.schema, **params}) for job, params in jobs]
    for job, params in jobs:  # every job and parameter checked before anything starts
        job_notebooks(bundle, job, start_at)  # e.g. a job of run_job_tasks cannot run locally: say so now
        check_params(dynamic_values(job_params(bundle, job, params, lakehouse), out))
    session = session_kind(args.session)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # One run at a time on these outputs, and one Spark for every job of the run (connect), or each
    # notebook its own (classic).
    with output_lock(lakehouse, {"schema": args.schema, **jobs[-1][1]}), \
            (local_spark(lakehouse, out, log=_log) if session == "connect" else contextlib.nullcontext()):
        if session == "classic":
            _log("Each notebook starts its own Spark session (classic), as on Fabric or a job cluster")
        for job, params in jobs:
            _log(f"Running job {job} ({bundle.job(job).get('name', job)}) -> {out}")
            run_job(bundle, job, params, lakehouse, out, log=_log, start_at=start_at, session=session)
    _log(f"all notebooks ok in {time.perf_counter() - start:.1f} s")


def cmd_run(args) -> int:
    from .local.runner import SEGMENTATION_JOB, parse_params, print_summary
    from .recipes import absolute
    job, params = args.job or SEGMENTATION_JOB, parse_params(args.param)
    if params.get("recipe"):  # a recipe file named relative to here: the notebooks run in the run's folder
        params["recipe"] = absolute(params["recipe"])
    _run_jobs(args, [(job, params)], start_at=args.start_at)
    if job == SEGMENTATION_JOB:
        print_summary(args.lakehouse, args.schema, log=_log, target_path=params.get("target_path", ""))
    return 0


def cmd_demo(args) -> int:
    from .local.runner import DEMO_DATA_JOB, SEGMENTATION_JOB, demo_tables_exist, parse_params, print_summary
    from .generate import demo_customers
    params = {"recipe": args.recipe, **parse_params(args.param)}
    jobs = [(SEGMENTATION_JOB, params)]
    if demo_tables_exist(args.lakehouse, args.schema, params["recipe"]):
        _log(f"Demo input tables found in {args.lakehouse} (schema {args.schema}); `make clean` to regenerate")
    else:
        customers = args.customers or demo_customers(params["recipe"])
        jobs.insert(0, (DEMO_DATA_JOB, {"recipe": params["recipe"], "customers": str(customers),
                                        "seed": str(args.seed)}))
    _run_jobs(args, jobs)
    print_summary(args.lakehouse, args.schema, log=_log, target_path=params.get("target_path", ""))
    return 0


def cmd_validate(args) -> int:
    from .validate import check, check_wheel
    _log(f"Validating the bundle in {args.bundle or 'the current repository'} (offline)")
    problems = check(args.bundle)
    if not problems and not args.skip_wheel:
        problems = check_wheel(args.bundle, log=_log, runtime=args.runtime)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    if problems:
        print(f"seglib: error: the bundle has {len(problems)} problem(s)", file=sys.stderr)
        return 1
    _log("bundle ok: resources typed, variables declared, tasks and notebooks consistent")
    return 0


def cmd_params(args) -> int:
    from . import param_files
    from .bundle import find_root
    root = args.bundle or find_root()
    if args.check:
        problems = param_files.stale(root)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1 if problems else 0
    written = param_files.write(root)
    _log("rewrote " + ", ".join(str(p.relative_to(root)) for p in written) if written
         else "the parameters cells, databricks.yml, .env.example and README.md already match seglib.params")
    return 0


def cmd_remote_run(args) -> int:
    from . import bundle as B
    from .remote import remote_run  # imports databricks-sdk (slow); only this command needs it
    from .local.runner import SEGMENTATION_JOB, parse_params
    bundle = B.load(args.bundle, args.target)
    job = args.job or SEGMENTATION_JOB
    development = bundle.target_config().get("mode") == "development"
    return remote_run(bundle.job(job)["name"], development, parse_params(args.param), job_id=args.job_id,
                      timeout_s=args.timeout * 60, poll_s=args.poll, cancel_on_timeout=args.cancel_on_timeout,
                      log=_log)


def cmd_import_airline(args) -> int:
    from .importers import AIRLINE_WHAT, TRANSACTIONS_WHAT, check_local_input, import_airline
    from .session import get_spark
    from .tables import Location
    where = Location(args.schema)  # checks the name before starting Spark: a typo fails in a second
    check_local_input(args.flight_csv, AIRLINE_WHAT)
    if args.transactions:
        check_local_input(args.transactions, TRANSACTIONS_WHAT)
    _log(f"Importing {args.flight_csv} into {args.lakehouse}, schema {args.schema}")
    import_airline(get_spark(args.lakehouse), args.flight_csv, where, transactions=args.transactions, log=_log)
    return 0


def cmd_import_retail(args) -> int:
    from .importers import RETAIL_WHAT, check_local_input, import_retail
    from .session import get_spark
    from .tables import Location
    where = Location(args.schema)  # checks the name before starting Spark: a typo fails in a second
    check_local_input(args.csv, RETAIL_WHAT)
    _log(f"Importing {args.csv} into {args.lakehouse}, schema {args.schema}")
    import_retail(get_spark(args.lakehouse), args.csv, where, log=_log)
    return 0


def cmd_pipeline(args) -> int:
    from .bundle import find_root
    from .local.pipeline import run_pipeline
    from .pipeline import Settings
    settings = Settings(source_table=args.source_table, rfm_bins=args.rfm_bins, as_of=args.as_of or None)
    start = time.perf_counter()
    counts = run_pipeline(args.bundle or find_root(), args.lakehouse, args.schema, settings, log=_log)
    _log(f"done in {time.perf_counter() - start:.0f} s: {counts['gold_rfm_segments']:,} customers segmented")
    return 0


def cmd_bench(args) -> int:
    from .local.bench import DEFAULT_SIZES, LARGE_SIZE, run_bench
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes else list(DEFAULT_SIZES)
    if args.large:
        sizes.append(LARGE_SIZE)
    _log(f"Benchmarking {', '.join(f'{s:,}' for s in sizes)} members -> {args.output}")
    run_bench(sizes, args.output, args.lakehouse, args.seed, args.bundle, log=_log)
    return 0


def cmd_server(args) -> int:
    from .local.server import SERVER_IDLE_ENV, running_server, stop_server
    lakehouse = str(Path(args.lakehouse).resolve())
    if args.action == "stop":
        info = stop_server(lakehouse)
        _log(f"stopped the Spark server of {lakehouse} (pid {info['pid']})" if info
             else f"no Spark server is kept for {lakehouse}")
        return 0
    info = running_server(lakehouse)
    if info is None:
        _log(f"no Spark server is kept for {lakehouse}")
    else:
        _log(f"Spark server of {lakehouse}: pid {info['pid']}, {info['url']}, up since {info['started']}, stops after "
             f"{info['idle_minutes']:g} min without a run ({SERVER_IDLE_ENV}); log: {info.get('log') or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a recipe's demo input tables into a local lakehouse")
    _add_common(g)
    g.add_argument("--recipe", choices=["airline", "retail"], default="airline",
                   help="airline (the Contoso Gold layer) or retail (retail_transactions, retail_customers) "
                        "(default: %(default)s)")
    g.add_argument("--customers", type=_positive,
                   help="customers to generate (default: 62988 airline members, 1000 retail customers)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("run", help="run a bundle job's notebooks locally with papermill (default: segmentation)")
    _add_common(r)
    _add_run(r)
    r.add_argument("--job", help="job key in resources/*.job.yml (default: segmentation)")
    r.add_argument("--from", dest="start_at", metavar="TASK",
                   help="start at this task (e.g. write), reusing the earlier tasks' handover tables, "
                        "like a Databricks repair run")
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="generate the demo data if absent, then run the notebooks")
    _add_common(d)
    _add_run(d)
    d.add_argument("--recipe", choices=["airline", "retail"], default="airline",
                   help="airline (the Contoso Gold layer) or retail (invoice lines, RFM) (default: %(default)s)")
    d.add_argument("--customers", type=_positive, help="customers, when generating (default: 62988 airline, 1000 retail)")
    d.add_argument("--seed", type=int, default=42, help="generator seed, when generating (default: %(default)s)")
    d.set_defaults(func=cmd_demo)
    rr = sub.add_parser("remote-run", help="run the deployed job in a Databricks workspace and follow it")
    rr.add_argument("--target", help="bundle target it was deployed with (default: the bundle's default, dev)")
    rr.add_argument("--job", help="job key in resources/*.job.yml (default: segmentation)")
    rr.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="job parameter, repeatable")
    rr.add_argument("--job-id", type=int, help="the deployed job's id (default: found by name; or SEGLIB_JOB_ID)")
    rr.add_argument("--timeout", type=float, default=60, help="minutes to follow the run (default: %(default)s)")
    rr.add_argument("--poll", type=float, default=10, help="seconds between status checks (default: %(default)s)")
    rr.add_argument("--cancel-on-timeout", action="store_true", help="cancel the run if it outlasts --timeout")
    rr.add_argument("--bundle", type=Path, help="folder with databricks.yml (default: found from the cwd)")
    rr.set_defaults(func=cmd_remote_run)
    v = sub.add_parser("validate", help="check the Databricks bundle offline (no workspace needed)")
    v.add_argument("--bundle", type=Path, help="folder with databricks.yml (default: found from the cwd)")
    v.add_argument("--skip-wheel", action="store_true", help="do not build and install-test the wheel")
    v.add_argument("--runtime", type=Path, metavar="VENV",
                   help="a venv holding a platform's pyspark (e.g. .runtimes/spark35) to install the wheel into "
                        "with its dependencies (default: a temporary one with pyspark 3.5.5)")
    v.set_defaults(func=cmd_validate)
    pa = sub.add_parser("params", help="rewrite what is made from seglib.params: the notebooks' parameters cells, "
                                       "the bundle variables' descriptions, .env.example, the README's table")
    pa.add_argument("--bundle", type=Path, help="folder with databricks.yml (default: found from the cwd)")
    pa.add_argument("--check", action="store_true", help="write nothing; fail if a file is stale")
    pa.set_defaults(func=cmd_params)
    ia = sub.add_parser("import-airline", help="build the four Gold tables from the lab's flight.csv (plain or .gz)")
    ia.add_argument("flight_csv", metavar="FLIGHT_CSV", help="the lab's 23-column member file (CSV, or CSV.gz)")
    _add_common(ia)
    ia.add_argument("--transactions", metavar="JSON",
                    help="the lab's customer_transactions.json (default: none, so no spend)")
    ia.set_defaults(func=cmd_import_airline)
    ir = sub.add_parser("import-retail",
                        help="build retail_transactions from the UCI Online Retail file (plain or .gz)")
    ir.add_argument("csv", metavar="CSV", help="the UCI Online Retail layout: InvoiceNo, StockCode, Description, "
                                                "Quantity, InvoiceDate, UnitPrice, CustomerID, Country")
    _add_common(ir)
    ir.set_defaults(func=cmd_import_retail)
    sv = sub.add_parser("server", help="the Spark server a local run keeps for the next one: status or stop")
    sv.add_argument("action", choices=["status", "stop"])
    sv.add_argument("--lakehouse", default=DEFAULT_LAKEHOUSE, help="local lakehouse folder (default: %(default)s)")
    sv.set_defaults(func=cmd_server)
    pl = sub.add_parser("pipeline", help="run the RFM declarative pipeline (pipelines/rfm) on a local lakehouse "
                                         "with spark-pipelines")
    pl.add_argument("action", choices=["run"])
    _add_common(pl)
    pl.add_argument("--source-table", default="retail_transactions",
                    help="the invoice lines: a table in --schema, or schema.table (default: %(default)s)")
    pl.add_argument("--rfm-bins", default="4", help="score levels of R, F and M: 4 or 5 (default: %(default)s)")
    pl.add_argument("--as-of", default="", help="reference day YYYY-MM-DD (default: the day after the last transaction)")
    pl.add_argument("--bundle", type=Path, help="the seglib repository holding pipelines/ (default: found from the cwd)")
    pl.set_defaults(func=cmd_pipeline)
    b = sub.add_parser("bench", help="time the segmentation job at several sizes beside the lab's code and scikit-learn")
    b.add_argument("--sizes", help="comma-separated member counts (default: 62988,1000000)")
    b.add_argument("--large", action="store_true", help="also 10,000,000 members")
    b.add_argument("--output", type=Path, default=Path("bench"), help="results folder (default: %(default)s)")
    b.add_argument("--lakehouse", type=Path, help="lakehouse for the fixtures (default: <output>/lakehouse)")
    b.add_argument("--seed", type=int, default=42, help="generator seed (default: %(default)s)")
    b.add_argument("--bundle", type=Path, help="folder with databricks.yml (default: found from the cwd)")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SeglibError, NotebookFailure) as e:
        print(f"seglib: error: {e}", file=sys.stderr)
        return 1


def run() -> None:
    """The ``seglib`` command: main(), then exit without the interpreter's teardown, everything flushed.
    The work is done by then, but pyarrow's thread pools (delta-rs reads the printed summary through
    them) now and then abort the teardown ("terminate called without an active exception",
    delta-io/delta-rs#2184): a run that succeeded exited with -6 in CI. Tests call main() instead."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
