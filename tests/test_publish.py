"""Staging and swap (seglib.publish) in-process: what a concurrent publisher or a half-done swap does."""
import pytest

from seglib import publish as P
from seglib import tables as TB
from seglib.errors import ConcurrentRunError, ValidationError

TABLES = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY]


def _frame(spark, run_id, n):
    return spark.createDataFrame([(i, run_id) for i in range(n)], "customer_key int, run_id string")


def _publish(spark, schema, run_id, n, before=None, then=None):
    before = P.versions(spark, TABLES, schema) if before is None else before
    P.stage(spark, {t: _frame(spark, run_id, n) for t in TABLES}, run_id, schema, log=lambda *a: None)
    return P.swap(spark, TABLES, before, schema, then=then, log=lambda *a: None)


def test_publish_then_republish(spark, schema):
    assert _publish(spark, schema, "r1", 3) == {TB.GOLD_SEGMENTS: 0, TB.GOLD_SUMMARY: 0}
    assert P.published_run_id(spark, TABLES, schema) == "r1"
    assert _publish(spark, schema, "r2", 4) == {TB.GOLD_SEGMENTS: 1, TB.GOLD_SUMMARY: 1}
    assert P.published_run_id(spark, TABLES, schema) == "r2"


def test_a_run_that_started_before_another_published_does_not_publish(spark, schema):
    _publish(spark, schema, "r1", 3)
    started = P.versions(spark, TABLES, schema)   # run A reads the gold versions ...
    _publish(spark, schema, "r2", 5)              # ... run B publishes meanwhile ...
    with pytest.raises(ConcurrentRunError, match="another run published while this one ran "
                                                 r"\(gold_customer_segments_ml version 0 -> 1"):
        _publish(spark, schema, "r3", 7, before=started)  # ... so A stops, leaving B's tables
    assert P.published_run_id(spark, TABLES, schema) == "r2"
    assert spark.read.table(f"{schema}.{TB.GOLD_SEGMENTS}").count() == 5


def test_failure_after_the_first_swap_restores_it(spark, schema, monkeypatch):
    _publish(spark, schema, "r1", 3)
    monkeypatch.setenv(P.FAULT_ENV, f"swap:{TB.GOLD_SEGMENTS}")
    with pytest.raises(P.InjectedFault):
        _publish(spark, schema, "r2", 4)
    assert P.published_run_id(spark, TABLES, schema) == "r1"
    assert spark.read.table(f"{schema}.{TB.GOLD_SEGMENTS}").count() == 3


def test_failure_in_the_last_step_restores_every_table(spark, schema):
    _publish(spark, schema, "r1", 3)

    def fail(_):
        raise RuntimeError("run log unavailable")
    with pytest.raises(RuntimeError, match="run log unavailable"):
        _publish(spark, schema, "r2", 4, then=fail)
    assert P.published_run_id(spark, TABLES, schema) == "r1"


def test_a_first_publish_that_fails_leaves_no_gold_table(spark, schema, monkeypatch):
    monkeypatch.setenv(P.FAULT_ENV, f"swap:{TB.GOLD_SUMMARY}")
    with pytest.raises(P.InjectedFault):
        _publish(spark, schema, "r1", 3)
    assert not spark.catalog.tableExists(f"{schema}.{TB.GOLD_SEGMENTS}")


def test_readers_can_tell_when_the_tables_come_from_two_runs(spark, schema):
    _publish(spark, schema, "r1", 3)
    TB.save_table(_frame(spark, "r9", 2), TB.GOLD_SUMMARY, schema)  # what a reader could see mid-swap
    with pytest.raises(ValidationError, match=r"gold_customer_segments_ml has run_id \['r1'\]; "
                                              r"gold_segment_summary has run_id \['r9'\]"):
        P.published_run_id(spark, TABLES, schema)


def test_staged_rows_of_another_run_are_refused(spark, schema):
    with pytest.raises(ConcurrentRunError, match="holds 3 rows of another run"):
        P.stage(spark, {TB.GOLD_SEGMENTS: _frame(spark, "other", 3)}, "mine", schema, log=lambda *a: None)
