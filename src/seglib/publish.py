"""Outputs become visible together or not at all (README, "What happens when the input is bad").

Delta commits one table at a time, so a run publishes in two phases:

1. **Validate.** The write step computes every output as a cached DataFrame and validates it there,
   before anything is written (write.validate_outputs). A failure here leaves the gold tables exactly
   as they were: same Delta version, same rows.
2. **Publish.** Only if nothing changed the gold tables since the run read them (another run would
   have), each gold table is overwritten from its validated DataFrame, then the run log row is
   appended. Should that fail part-way, the tables already replaced are restored to their previous
   version (Delta RESTORE: same rows, a new version in their history), and the run fails.

Earlier versions wrote every output to a staging table first and copied it over; validating the cached
DataFrames instead checks the same rows and saved three Delta writes and three reads per run (about
7 s of a 63k-member run's 23 s write step; Delta overwrites are atomic, so a written table holds
exactly the validated rows).

A reader that must never mix two runs checks that the gold tables carry one run id
(``published_run_id``); between the commits of a publish it can see the new segments beside the
previous summary for a moment, and that check tells it so.
"""
from __future__ import annotations

import os

from pyspark.sql import DataFrame, SparkSession

from . import parallel
from . import tables as TB
from .errors import ConcurrentRunError, SeglibError, ValidationError

FAULT_ENV = "SEGLIB_FAULT"  # tests: the name of a checkpoint at which the run fails on purpose


class InjectedFault(SeglibError):
    """A failure a test asked for at a named checkpoint."""


def checkpoint(point: str) -> None:
    """Fail here when SEGLIB_FAULT names this point (proves a failure at this step is survivable)."""
    if os.environ.get(FAULT_ENV) == point:
        raise InjectedFault(f"failure injected at {point} ({FAULT_ENV})")


def run_ids(df: DataFrame) -> list[str]:
    return sorted(r[0] for r in df.select("run_id").distinct().limit(3).collect())


def versions(spark: SparkSession, tables: list[str], where: TB.Location) -> dict[str, int | None]:
    return dict(zip(tables, parallel.each(lambda t: TB.table_version(spark, t, where), tables)))


def _restore(spark: SparkSession, table: str, version: int | None, where: TB.Location) -> None:
    if version is not None:
        spark.sql(f"RESTORE TABLE {where.sql(table)} TO VERSION AS OF {int(version)}")
    elif not where.path(table):  # it did not exist before this run: remove it again
        spark.sql(f"DROP TABLE IF EXISTS {where.qualified(table)}")
    else:  # a folder cannot be removed through Spark; leave it empty rather than half-published
        spark.sql(f"DELETE FROM {where.sql(table)}")


def publish(spark: SparkSession, frames: dict[str, DataFrame], where: TB.Location,
            guard: tuple[str, int | None] | None = None, then=None, log=print,
            descriptions: dict[str, str] | None = None) -> dict[str, int]:
    """Overwrite each table with its validated DataFrame, in order, then call *then* with the new
    versions (the run log append); all or nothing.

    *guard*: (table, version) the outputs were computed from (the previous gold_customer_segments_ml,
    which the migration compares with). If the table moved since, another run published meanwhile
    and nothing is written. *descriptions*: table -> its description (default seglib's, see
    tables.save_table; a changed one is set in the overwrite's own commit). Returns the new versions."""
    tables = list(frames)
    before = versions(spark, tables, where)
    if guard is not None and before[guard[0]] != guard[1]:
        raise ConcurrentRunError(f"another run published while this one ran ({guard[0]} version {guard[1]} -> "
                                 f"{before[guard[0]]}); this run's outputs were not published")
    # An overwrite is one Delta commit (setting a new description or column comments too: save_table), so
    # each table's next version is known; the first table's is
    # read back to catch a writer that slipped in between (the job and `seglib run` allow one run at a time).
    after = {t: 0 if v is None else v + 1 for t, v in before.items()}
    done: list[str] = []
    try:
        for table, df in frames.items():
            TB.save_table(df, table, where, description=(descriptions or {}).get(table))
            done.append(table)
            checkpoint(f"publish:{table}")
        first = TB.table_version(spark, tables[0], where)
        if first != after[tables[0]]:
            raise ConcurrentRunError(f"{tables[0]} is at version {first}, expected {after[tables[0]]}: another run "
                                     f"wrote it during this run's publish")
        if then is not None:
            then(after)
        checkpoint("publish:end")
    except BaseException as e:
        log(f"  publishing failed ({type(e).__name__}); restoring {', '.join(done) or 'nothing'}")
        for table in reversed(done):
            _restore(spark, table, before[table], where)
        raise
    for table in tables:
        log(f"  published {where.name(table)} (version {after[table]})")
    return after


def published_run_id(spark: SparkSession, tables: list[str], where: TB.Location) -> str:
    """The run id all *tables* carry; ValidationError when they disagree (an interrupted publish)."""
    found = {t: run_ids(TB.read_table(spark, t, where)) for t in tables}
    ids = {i for v in found.values() for i in v}
    if len(ids) != 1 or any(len(v) != 1 for v in found.values()):
        raise ValidationError("the gold tables do not come from one run: "
                              + "; ".join(f"{t} has run_id {v}" for t, v in found.items()))
    return ids.pop()
