"""The test harness's run wait: a run failed by Airflow's stale defer-exit race (apache/airflow#72716) is
cleared and waited for again; any other failure is returned as it is."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.airflow_local import LocalAirflow


class ScriptedAirflow(LocalAirflow):
    """A LocalAirflow whose REST calls answer from a script: run states in order, and the event log."""

    def __init__(self, tmp_path, states: list[str], mismatches: list[list[tuple[str, int]]]) -> None:
        super().__init__(tmp_path, "airflow", port=1)
        self.states, self.mismatches, self.calls = list(states), list(mismatches), []

    def api(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path.split("?")[0], body))
        if "/eventLogs" in path:
            assert "event=state+mismatch" in path and "run_id=r1" in path
            seen = self.mismatches.pop(0) if len(self.mismatches) > 1 else self.mismatches[0]
            return {"event_logs": [{"task_id": t, "try_number": n} for t, n in seen]}
        if path.endswith("/clearTaskInstances"):
            return {"task_instances": []}
        return {"state": self.states.pop(0)}

    def clears(self) -> list[Any]:
        return [body for method, path, body in self.calls if path.endswith("/clearTaskInstances")]


def test_a_run_failed_by_the_defer_exit_race_is_cleared_and_waited_for(tmp_path, capsys):
    airflow = ScriptedAirflow(tmp_path, ["failed", "success"], [[("wait", 1)]])
    assert airflow.wait_run("d", "r1") == "success"
    assert airflow.clears() == [
        {
            "dry_run": False,
            "dag_run_id": "r1",
            "only_failed": True,
            "reset_dag_runs": True,
            "task_ids": ["wait"],
        }
    ]
    assert "apache/airflow#72716" in capsys.readouterr().err


def test_any_other_failure_is_returned_without_clearing(tmp_path):
    airflow = ScriptedAirflow(tmp_path, ["failed"], [[]])
    assert airflow.wait_run("d", "r1") == "failed"
    assert airflow.clears() == []


@pytest.mark.parametrize(
    "mismatches, clears",
    [
        ([[("wait", 1)], [("wait", 1)]], 1),  # the same mismatch again: the second failure is the run's own
        (
            [[("wait", 1)], [("wait", 1), ("wait", 2)], [("wait", 1), ("wait", 2), ("wait", 3)]],
            2,
        ),  # at most twice
    ],
)
def test_a_failure_is_cleared_once_per_mismatch_and_at_most_twice(tmp_path, mismatches, clears):
    airflow = ScriptedAirflow(tmp_path, ["failed"] * 3, mismatches)
    assert airflow.wait_run("d", "r1") == "failed"
    assert len(airflow.clears()) == clears


def test_a_wait_for_other_states_never_clears(tmp_path):
    airflow = ScriptedAirflow(tmp_path, ["failed"], [[("wait", 1)]])
    assert airflow.wait_run("d", "r1", states=("failed",)) == "failed"
    assert airflow.clears() == []
