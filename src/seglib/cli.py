"""`seglib generate | run | demo`: the local entry points (Databricks runs the same notebooks as a job)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import SeglibError
from .runner import NotebookFailure
from .session import DEFAULT_LAKEHOUSE


def _log(*args, **kwargs):
    print(*args, **kwargs)
    sys.stdout.flush()


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lakehouse", default=DEFAULT_LAKEHOUSE, help="local lakehouse folder (default: %(default)s)")
    p.add_argument("--schema", default="contoso", help="schema holding the Gold tables (default: %(default)s)")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter, repeatable (k, seed, null_policy, feature_transform, ...)")
    p.add_argument("--output", type=Path, help="where executed notebooks go (default: runs/<run-id>)")
    p.add_argument("--notebooks", type=Path, help="notebooks folder (default: ./notebooks)")


def cmd_generate(args) -> int:
    from .generate import generate_demo_data
    from .session import get_spark
    start = time.perf_counter()
    _log(f"Generating {args.customers:,} demo members (seed {args.seed}) into {args.lakehouse}, schema {args.schema}")
    generate_demo_data(get_spark(args.lakehouse), args.schema, args.customers, args.seed, log=_log)
    _log(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _run(args, names: list[str], extra: dict) -> None:
    from .runner import new_run_dir, parse_params, run_notebooks
    params = {"lakehouse": str(Path(args.lakehouse).resolve()), "schema": args.schema, **extra,
              **parse_params(args.param)}
    out = args.output or new_run_dir()
    _log(f"Running {', '.join(names)} -> {out}")
    start = time.perf_counter()
    run_notebooks(names, params, out, args.notebooks, log=_log)
    _log(f"all notebooks ok in {time.perf_counter() - start:.1f} s")


def cmd_run(args) -> int:
    from .runner import PIPELINE, print_summary
    _run(args, PIPELINE, {})
    print_summary(args.lakehouse, args.schema, log=_log)
    return 0


def cmd_demo(args) -> int:
    from .runner import GENERATE, PIPELINE, demo_tables_exist, print_summary
    names = list(PIPELINE)
    extra = {}
    if demo_tables_exist(args.lakehouse, args.schema):
        _log(f"Demo Gold tables found in {args.lakehouse} (schema {args.schema}); `make clean` to regenerate")
    else:
        names = [GENERATE] + names
        extra = {"customers": str(args.customers), "seed": str(args.seed)}
    _run(args, names, extra)
    print_summary(args.lakehouse, args.schema, log=_log)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the demo Contoso Gold layer into a local lakehouse")
    _add_common(g)
    g.add_argument("--customers", type=int, default=62_988, help="members to generate (default: %(default)s)")
    g.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("run", help="run the segmentation notebooks with papermill")
    _add_common(r)
    _add_run(r)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="generate the demo data if absent, then run the notebooks")
    _add_common(d)
    _add_run(d)
    d.add_argument("--customers", type=int, default=62_988, help="members, when generating (default: %(default)s)")
    d.add_argument("--seed", type=int, default=42, help="generator seed, when generating (default: %(default)s)")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SeglibError, NotebookFailure) as e:
        print(f"seglib: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
