"""Outputs become visible together or not at all (README, "What happens when the input is bad").

Delta commits one table at a time, so a run publishes in two phases:

1. **Stage.** Every output is written to its staging table (``seg_staged_<table>``, next to the
   handover tables) and validated there: the rows this run computed, each carrying its run id. A
   failure here leaves the gold tables exactly as they were: same Delta version, same rows.
2. **Swap.** Only if nothing changed the gold tables since the run read them (another run would have),
   each gold table is overwritten from its staging table, then the run log row is appended. This is
   a few seconds of copying already-computed rows. Should it fail part-way, the tables already
   replaced are restored to their previous version (Delta RESTORE: same rows, a new version in their
   history), and the run fails.

A reader that must never mix two runs checks that the gold tables carry one run id
(``published_run_id``); between the two commits of a swap it can see the new segments beside the
previous summary for a moment, and that check tells it so.
"""
from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import tables as TB
from .errors import ConcurrentRunError, SeglibError, ValidationError

STAGED_PREFIX = "seg_staged_"
FAULT_ENV = "SEGLIB_FAULT"  # tests: the name of a checkpoint at which the run fails on purpose


class InjectedFault(SeglibError):
    """A failure a test asked for at a named checkpoint."""


def checkpoint(point: str) -> None:
    """Fail here when SEGLIB_FAULT names this point (proves a failure at this step is survivable)."""
    if os.environ.get(FAULT_ENV) == point:
        raise InjectedFault(f"failure injected at {point} ({FAULT_ENV})")


def staged_name(table: str) -> str:
    return STAGED_PREFIX + table


def run_ids(df: DataFrame) -> list[str]:
    return sorted(r[0] for r in df.select("run_id").distinct().limit(3).collect())


def stage(spark: SparkSession, frames: dict[str, DataFrame], run_id: str, schema: str,
          catalog: str | None = None, log=print) -> dict[str, int]:
    """Write each output to its staging table and check it there: every row carries *run_id*.
    Returns the staged row counts."""
    rows = {}
    for table, df in frames.items():
        TB.save_table(df, staged_name(table), schema, catalog)
        checkpoint(f"staged:{table}")
        staged = TB.read_table(spark, staged_name(table), schema, catalog)
        found = staged.agg(F.count(F.lit(1)).alias("rows"),
                           F.count_if(F.col("run_id").isNull() | (F.col("run_id") != run_id)).alias("other")).first()
        if found["other"]:
            raise ConcurrentRunError(f"{TB.table_name(staged_name(table), schema, catalog)} holds "
                                     f"{found['other']:,} rows of another run (ids {run_ids(staged)}); another run "
                                     f"is writing schema {schema}. Nothing was published.")
        rows[table] = found["rows"]
        log(f"  staged {TB.table_name(staged_name(table), schema, catalog)}: {rows[table]:,} rows")
    return rows


def versions(spark: SparkSession, tables: list[str], schema: str, catalog: str | None = None) -> dict[str, int | None]:
    return {t: TB.table_version(spark, t, schema, catalog) for t in tables}


def _restore(spark: SparkSession, table: str, version: int | None, schema: str, catalog: str | None) -> None:
    if version is not None:
        spark.sql(f"RESTORE TABLE {TB.sql_name(table, schema, catalog)} TO VERSION AS OF {int(version)}")
    elif not TB.table_path(table):  # it did not exist before this run: remove it again
        spark.sql(f"DROP TABLE IF EXISTS {TB.qualified(table, schema, catalog)}")
    else:  # a folder cannot be removed through Spark; leave it empty rather than half-published
        spark.sql(f"DELETE FROM {TB.sql_name(table, schema, catalog)}")


def swap(spark: SparkSession, tables: list[str], before: dict[str, int | None], schema: str,
         catalog: str | None = None, then=None, log=print) -> dict[str, int]:
    """Replace each gold table with its staging table, then call *then* (the run log append); all or
    nothing. *before*: the versions the run started from; if any moved, another run published
    meanwhile and nothing is replaced. Returns the new versions."""
    now = versions(spark, tables, schema, catalog)
    moved = {t: (before[t], now[t]) for t in tables if now[t] != before[t]}
    if moved:
        raise ConcurrentRunError(
            "another run published while this one ran (" + ", ".join(f"{t} version {a} -> {b}" for t, (a, b)
                                                                     in moved.items())
            + "); this run's outputs stay staged and were not published")
    done: list[str] = []
    try:
        for table in tables:
            TB.save_table(TB.read_table(spark, staged_name(table), schema, catalog), table, schema, catalog)
            done.append(table)
            checkpoint(f"swap:{table}")
        after = versions(spark, tables, schema, catalog)
        if then is not None:
            then(after)
        checkpoint("swap:end")
    except BaseException as e:
        log(f"  publishing failed ({type(e).__name__}); restoring {', '.join(done) or 'nothing'}")
        for table in reversed(done):
            _restore(spark, table, before[table], schema, catalog)
        raise
    for table in tables:
        log(f"  published {TB.table_name(table, schema, catalog)} (version {after[table]})")
    return after


def published_run_id(spark: SparkSession, tables: list[str], schema: str, catalog: str | None = None) -> str:
    """The run id all *tables* carry; ValidationError when they disagree (an interrupted publish)."""
    found = {t: run_ids(TB.read_table(spark, t, schema, catalog)) for t in tables}
    ids = {i for v in found.values() for i in v}
    if len(ids) != 1 or any(len(v) != 1 for v in found.values()):
        raise ValidationError("the gold tables do not come from one run: "
                              + "; ".join(f"{t} has run_id {v}" for t, v in found.items()))
    return ids.pop()
