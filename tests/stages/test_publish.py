"""Publishing (seglib.publish) in-process: what a concurrent publisher or a half-done publish does."""
import pytest

from seglib import publish as P
from seglib import tables as TB
from seglib.errors import ConcurrentRunError, ValidationError

TABLES = [TB.GOLD_SEGMENTS, TB.GOLD_SUMMARY]


def _frame(spark, run_id, n):
    return spark.createDataFrame([(i, run_id) for i in range(n)], "customer_key int, run_id string")


def _publish(spark, where, run_id, n, started=None, then=None):
    """A run that read gold_customer_segments_ml at version *started* (default: now) publishes n rows."""
    started = TB.table_version(spark, TB.GOLD_SEGMENTS, where) if started is None else started
    return P.publish(spark, {t: _frame(spark, run_id, n) for t in TABLES}, where,
                     guard=(TB.GOLD_SEGMENTS, started), then=then, log=lambda *a: None)


def test_publish_then_republish(spark, where):
    assert _publish(spark, where, "r1", 3) == {TB.GOLD_SEGMENTS: 0, TB.GOLD_SUMMARY: 0}
    assert P.published_run_id(spark, TABLES, where) == "r1"
    assert _publish(spark, where, "r2", 4) == {TB.GOLD_SEGMENTS: 1, TB.GOLD_SUMMARY: 1}
    assert P.published_run_id(spark, TABLES, where) == "r2"


def test_a_run_that_started_before_another_published_does_not_publish(spark, where):
    _publish(spark, where, "r1", 3)
    started = TB.table_version(spark, TB.GOLD_SEGMENTS, where)  # run A reads the gold version ...
    _publish(spark, where, "r2", 5)              # ... run B publishes meanwhile ...
    with pytest.raises(ConcurrentRunError, match="another run published while this one ran "
                                                 r"\(gold_customer_segments_ml version 0 -> 1"):
        _publish(spark, where, "r3", 7, started=started)  # ... so A stops, leaving B's tables
    assert P.published_run_id(spark, TABLES, where) == "r2"
    assert spark.read.table(where.qualified(TB.GOLD_SEGMENTS)).count() == 5


def test_failure_after_the_first_table_restores_it(spark, where, monkeypatch):
    _publish(spark, where, "r1", 3)
    monkeypatch.setenv(P.FAULT_ENV, f"publish:{TB.GOLD_SEGMENTS}")
    with pytest.raises(P.InjectedFault):
        _publish(spark, where, "r2", 4)
    assert P.published_run_id(spark, TABLES, where) == "r1"
    assert spark.read.table(where.qualified(TB.GOLD_SEGMENTS)).count() == 3


def test_failure_in_the_last_step_restores_every_table(spark, where):
    _publish(spark, where, "r1", 3)

    def fail(_):
        raise RuntimeError("run log unavailable")
    with pytest.raises(RuntimeError, match="run log unavailable"):
        _publish(spark, where, "r2", 4, then=fail)
    assert P.published_run_id(spark, TABLES, where) == "r1"


def test_a_first_publish_that_fails_leaves_no_gold_table(spark, where, monkeypatch):
    monkeypatch.setenv(P.FAULT_ENV, f"publish:{TB.GOLD_SUMMARY}")
    with pytest.raises(P.InjectedFault):
        _publish(spark, where, "r1", 3)
    assert not spark.catalog.tableExists(where.qualified(TB.GOLD_SEGMENTS))


def test_readers_can_tell_when_the_tables_come_from_two_runs(spark, where):
    _publish(spark, where, "r1", 3)
    TB.save_table(_frame(spark, "r9", 2), TB.GOLD_SUMMARY, where)  # what a reader could see mid-publish
    with pytest.raises(ValidationError, match=r"gold_customer_segments_ml has run_id \['r1'\]; "
                                              r"gold_segment_summary has run_id \['r9'\]"):
        P.published_run_id(spark, TABLES, where)


def test_a_writer_slipping_in_during_the_publish_is_caught_and_undone(spark, where, monkeypatch):
    _publish(spark, where, "r1", 3)
    original, logged = TB.save_table, []

    def save_then_intrude(df, table, *args, **kwargs):  # another writer commits right after this run's write
        out = original(df, table, *args, **kwargs)
        if table == TB.GOLD_SEGMENTS:
            original(_frame(spark, "intruder", 1), TB.GOLD_SEGMENTS, where)
        return out
    monkeypatch.setattr(TB, "save_table", save_then_intrude)
    with pytest.raises(ConcurrentRunError, match="gold_customer_segments_ml is at version 2, expected 1"):
        _publish(spark, where, "r2", 4, then=logged.append)
    assert logged == []  # the run log step never ran
    monkeypatch.undo()
    assert P.published_run_id(spark, TABLES, where) == "r1"
    assert spark.read.table(where.qualified(TB.GOLD_SEGMENTS)).count() == 3


def test_handover_tables_are_created_anew_and_outputs_keep_their_history(spark, where):
    """A handover table is replaced by drop and create (half the cost of a local Delta overwrite); the
    Gold outputs are overwritten, so their earlier versions stay readable (the migration table needs them)."""
    def history(table):
        return spark.sql(f"DESCRIBE HISTORY {where.schema}.{table}").count()

    for run_id, n in (("r1", 3), ("r2", 5)):
        TB.save_table(_frame(spark, run_id, n), TB.SEG_ASSIGNMENTS, where)
        TB.save_table(_frame(spark, run_id, n), TB.GOLD_SUMMARY, where)
    assert history(TB.SEG_ASSIGNMENTS) == 1 and history(TB.GOLD_SUMMARY) == 2
    assert {r["run_id"] for r in TB.read_table(spark, TB.SEG_ASSIGNMENTS, where).collect()} == {"r2"}
    assert TB.read_table(spark, TB.SEG_ASSIGNMENTS, where).count() == 5
    assert TB.read_version(spark, TB.GOLD_SUMMARY, 0, where).count() == 3
    # New columns replace the old ones, as an overwrite with overwriteSchema did.
    TB.save_table(spark.createDataFrame([(1, 2.5)], "customer_key int, score double"), TB.SEG_ASSIGNMENTS, where)
    assert TB.read_table(spark, TB.SEG_ASSIGNMENTS, where).columns == ["customer_key", "score"]


def _description(spark, where, table):
    return spark.sql(f"DESCRIBE DETAIL {where.sql(table)}").first()["description"]


def _comments(spark, where, table):
    return {f.name: f.metadata.get("comment") for f in TB.read_table(spark, table, where).schema.fields}


def test_tables_written_before_comments_existed_get_them_in_the_publish_commit(spark, where):
    """Gold tables an older seglib wrote (no description, no comments) are documented by the next publish,
    still one commit each, so the versions publish expects hold; the run log, only ever appended, gets
    its description and comments before the append. A reworded comment replaces the old one."""
    from seglib.comments import commented, table_description
    for table in TABLES + [TB.GOLD_RUNS]:
        _frame(spark, "r0", 2).write.format("delta").saveAsTable(where.qualified(table))
    documented = {"customer_key": "Customer key.", "run_id": "Id of the run."}
    frames = {t: commented(_frame(spark, "r1", 3), documented) for t in TABLES}
    assert P.publish(spark, frames, where, guard=(TB.GOLD_SEGMENTS, 0), log=lambda *a: None) == {t: 1 for t in TABLES}
    for table in TABLES:
        assert _description(spark, where, table) == table_description(table)
        assert _comments(spark, where, table) == documented
    TB.save_table(commented(_frame(spark, "r1", 1), documented), TB.GOLD_RUNS, where, mode="append")
    assert _description(spark, where, TB.GOLD_RUNS) == table_description(TB.GOLD_RUNS)
    assert _comments(spark, where, TB.GOLD_RUNS) == documented
    assert TB.read_table(spark, TB.GOLD_RUNS, where).count() == 3
    reworded = {**documented, "run_id": "The run's id."}
    after = P.publish(spark, {t: commented(_frame(spark, "r2", 3), reworded) for t in TABLES}, where,
                      guard=(TB.GOLD_SEGMENTS, 1), log=lambda *a: None)
    assert after == {t: 2 for t in TABLES} and _comments(spark, where, TB.GOLD_SUMMARY) == reworded
    _publish(spark, where, "r3", 2)  # the same columns and description: a plain overwrite keeps them
    assert _description(spark, where, TB.GOLD_SEGMENTS) == table_description(TB.GOLD_SEGMENTS)


def test_tables_at_a_path_carry_their_description_and_comments(spark, tmp_path):
    """target_path: each table is a Delta folder; delta-rs reads its description and column comments,
    which survive overwrites; a handover table at a path says it is internal."""
    from deltalake import DeltaTable
    from seglib.comments import commented, table_description
    where = TB.Location("unused", target_path=str(tmp_path / "Tables"))
    documented = {"customer_key": "Customer key.", "run_id": "Id of the run."}
    for version, run_id in enumerate(["r1", "r2", "r3"]):
        frames = {t: commented(_frame(spark, run_id, 3), documented) for t in TABLES}
        assert P.publish(spark, frames, where, guard=(TB.GOLD_SEGMENTS, None if version == 0 else version - 1),
                         log=lambda *a: None, descriptions={TB.GOLD_SUMMARY: "Summary, described here."}) == {
            t: version for t in TABLES}
    for table in TABLES:
        dt = DeltaTable(where.path(table))
        assert dt.version() == 2
        assert dt.metadata().description == ("Summary, described here." if table == TB.GOLD_SUMMARY
                                             else table_description(table))
        assert {f.name: f.metadata.get("comment") for f in dt.schema().fields} == documented
    TB.save_table(_frame(spark, "r3", 1), TB.SEG_ASSIGNMENTS, where)
    assert DeltaTable(where.path(TB.SEG_ASSIGNMENTS)).metadata().description.startswith("Internal to seglib")
