"""The pure decision functions: every state combination, cursor arithmetic, all/any."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from xdep_sensors.client.records import AssetEvent, DagRun, TaskInstance
from xdep_sensors.core.cursors import Cursor
from xdep_sensors.core.decisions import DAG_RUN_STATES, StateRules, decide_assets, decide_dag_run
from xdep_sensors.core.feeds import OVERLAP

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
RULES = StateRules(frozenset({"success"}), frozenset({"failed"}), frozenset({"skipped"}))


def run(state):
    return DagRun("producer", "r1", state, T0, T0)


def ti(task_id, state, map_index=-1):
    return TaskInstance("producer", "r1", task_id, state, map_index)


class TestDecideDagRun:
    def test_no_run_yet_waits(self):
        d = decide_dag_run(None, RULES, dag_id="producer", what="logical date x")
        assert d.status == "waiting" and "no run for logical date x yet" in d.message

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            ("queued", "waiting"),
            ("running", "waiting"),
            ("success", "success"),
            ("failed", "failed"),
            (None, "waiting"),
        ],
    )
    def test_run_states(self, state, expected):
        d = decide_dag_run(run(state), RULES, dag_id="producer", what="x", url="http://u/r1")
        assert d.status == expected
        if expected == "waiting":
            assert d.result is None  # a result is built only for a final decision
        else:
            assert d.result["run_id"] == "r1" and d.result["url"] == "http://u/r1"
            assert d.result["logical_date"] == T0.isoformat()

    def test_custom_rules(self):
        rules = StateRules(frozenset({"failed"}), frozenset(), frozenset({"success"}))
        assert decide_dag_run(run("failed"), rules, dag_id="p", what="x").status == "success"
        assert decide_dag_run(run("success"), rules, dag_id="p", what="x").status == "skipped"

    def test_all_dag_run_states_are_classified(self):
        for state in DAG_RUN_STATES:
            assert decide_dag_run(run(state), RULES, dag_id="p", what="x").status in (
                "waiting",
                "success",
                "failed",
                "skipped",
            )

    def test_tasks_all_success_before_run_ends(self):
        tis = [ti("extract", "success"), ti("load", "success")]
        d = decide_dag_run(
            run("running"), RULES, dag_id="p", what="x", task_instances=tis, task_ids=["extract", "load"]
        )
        assert d.status == "success" and d.result["tasks"] == {"extract": "success", "load": "success"}
        assert "2/2 watched tasks done" in d.message

    def test_tasks_partial_waits_and_counts(self):
        tis = [ti("extract", "success"), ti("load", "running")]
        d = decide_dag_run(
            run("running"), RULES, dag_id="p", what="x", task_instances=tis, task_ids=["extract", "load"]
        )
        assert d.status == "waiting" and "1/2 watched tasks done" in d.message and "running" in d.message

    def test_any_failed_task_fails(self):
        tis = [ti("extract", "failed"), ti("load", None)]
        d = decide_dag_run(
            run("running"), RULES, dag_id="p", what="x", task_instances=tis, task_ids=["extract", "load"]
        )
        assert d.status == "failed" and "extract=failed" in d.message

    def test_failed_wins_over_skipped(self):
        tis = [ti("a", "skipped"), ti("b", "failed")]
        assert (
            decide_dag_run(run("running"), RULES, dag_id="p", what="x", task_instances=tis).status == "failed"
        )

    def test_skipped_task_skips(self):
        tis = [ti("a", "success"), ti("b", "skipped")]
        assert (
            decide_dag_run(run("running"), RULES, dag_id="p", what="x", task_instances=tis).status
            == "skipped"
        )

    def test_missing_task_waits(self):
        d = decide_dag_run(
            run("running"),
            RULES,
            dag_id="p",
            what="x",
            task_instances=[ti("a", "success")],
            task_ids=["a", "b"],
        )
        assert d.status == "waiting" and "not in this run yet: b" in d.message

    def test_empty_group_waits(self):
        assert (
            decide_dag_run(run("running"), RULES, dag_id="p", what="x", task_instances=[]).status == "waiting"
        )

    def test_mapped_tasks_all_count(self):
        tis = [ti("m", "success", 0), ti("m", "running", 1)]
        d = decide_dag_run(run("running"), RULES, dag_id="p", what="x", task_instances=tis, task_ids=["m"])
        assert d.status == "waiting" and "1/2 watched tasks done" in d.message
        tis[1] = ti("m", "success", 1)
        done = decide_dag_run(run("running"), RULES, dag_id="p", what="x", task_instances=tis, task_ids=["m"])
        assert set(done.result["tasks"]) == {"m[0]", "m[1]"}


def event(i, ts, asset_id=1):
    return AssetEvent(id=i, asset_id=asset_id, uri=f"u{asset_id}", name=f"n{asset_id}", timestamp=ts)


class TestCursor:
    def test_empty_cursor_takes_everything(self):
        assert Cursor().is_new(event(1, T0))

    def test_later_is_new_earlier_only_inside_the_overlap_window(self):
        c = Cursor().advance([event(1, T0)])
        assert c.is_new(event(2, T0 + timedelta(microseconds=1)))
        assert c.is_new(event(0, T0 - timedelta(seconds=1)))  # visible late: still new, once
        assert not c.is_new(event(0, T0 - OVERLAP - timedelta(seconds=1)))
        c2 = c.advance([event(0, T0 - timedelta(seconds=1))])
        assert not c2.is_new(event(0, T0 - timedelta(seconds=1))) and not c2.is_new(event(1, T0))

    def test_a_start_is_a_hard_floor(self):
        start = Cursor(T0.isoformat())  # as a sensor's first run starts: at its data interval start
        assert not start.is_new(event(0, T0 - timedelta(seconds=1))) and start.is_new(event(1, T0))
        after = start.advance([event(1, T0 + timedelta(seconds=5))])
        assert not after.is_new(event(0, T0 - timedelta(seconds=1)))

    def test_cursors_stored_by_older_versions_still_read(self):
        old = Cursor.from_dict({"timestamp": T0.isoformat(), "seen_ids": [7]})
        assert not old.is_new(event(7, T0)) and old.is_new(event(8, T0))
        assert not old.is_new(event(6, T0 - timedelta(seconds=1)))

    def test_ties_neither_lost_nor_duplicated(self):
        c = Cursor().advance([event(1, T0)])
        assert not c.is_new(event(1, T0))
        assert c.is_new(event(2, T0))  # same timestamp, another event: still new
        c2 = c.advance([event(2, T0)])
        assert c2.seen_ids == (1, 2) and not c2.is_new(event(2, T0))

    def test_advance_never_moves_back(self):
        c = Cursor().advance([event(5, T0)])
        assert c.advance([event(1, T0 - timedelta(days=1))]) == c

    def test_merged_has_consumed_what_either_copy_has(self):
        start = Cursor(T0.isoformat())
        mine = start.advance([event(1, T0 + timedelta(seconds=1))])
        theirs = start.advance([event(2, T0 + timedelta(seconds=2)), event(3, T0 + timedelta(seconds=2))])
        both = mine.merged(theirs)
        for e in (
            event(1, T0 + timedelta(seconds=1)),
            event(2, T0 + timedelta(seconds=2)),
            event(3, T0 + timedelta(seconds=2)),
        ):
            assert not both.is_new(e)
        assert both.is_new(event(4, T0 + timedelta(seconds=3))) and both.is_new(
            event(5, T0 + timedelta(seconds=1))
        )
        assert not both.is_new(event(0, T0 - timedelta(seconds=1)))  # below the start: never new
        assert theirs.merged(mine).to_dict() == both.to_dict()

    def test_merged_keeps_the_higher_floor(self):
        late = T0 + OVERLAP * 3
        mine = Cursor(T0.isoformat()).advance([event(1, T0 + timedelta(seconds=1))])
        theirs = Cursor(late.isoformat()).advance([event(9, late + timedelta(seconds=1))])
        both = mine.merged(theirs)
        assert both.start == theirs.start and not both.is_new(event(1, T0 + timedelta(seconds=1)))
        assert not both.is_new(event(2, late - timedelta(seconds=1)))  # below their floor: they skipped it

    def test_round_trip(self):
        c = Cursor().advance([event(3, T0), event(4, T0)])
        assert Cursor.from_dict(c.to_dict()) == c and Cursor.from_dict(None) == Cursor()


class TestDecideAssets:
    def test_all_needs_every_asset(self):
        d = decide_assets({"a": [event(1, T0)], "b": []}, require="all")
        assert d.status == "waiting" and d.message.startswith("1 of 2 assets have new events")

    def test_any_needs_one(self):
        d = decide_assets({"a": [event(1, T0)], "b": []}, require="any")
        assert d.status == "success" and [e["id"] for e in d.result] == [1]

    def test_result_is_ordered_by_time(self):
        d = decide_assets({"a": [event(3, T0 + timedelta(1))], "b": [event(2, T0, 2)]}, require="all")
        assert [e["id"] for e in d.result] == [2, 3]
        assert set(d.result[0]) >= {
            "id",
            "uri",
            "name",
            "timestamp",
            "extra",
            "source_dag_id",
            "source_task_id",
            "source_run_id",
        }
