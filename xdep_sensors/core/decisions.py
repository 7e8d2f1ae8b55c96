"""Pure decisions: from what the upstream shows to waiting / success / failed / skipped.

Shared by the triggers and ``poke``; no I/O, no Airflow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from xdep_sensors.client.records import AssetEvent, DagRun, TaskInstance

Status = Literal["waiting", "success", "failed", "skipped"]

DAG_RUN_STATES = frozenset({"queued", "running", "success", "failed"})
TASK_STATES = frozenset(
    {
        "removed",
        "scheduled",
        "queued",
        "running",
        "success",
        "restarting",
        "failed",
        "up_for_retry",
        "up_for_reschedule",
        "upstream_failed",
        "skipped",
        "deferred",
        "awaiting_input",
        "none",
    }
)
FINISHED_RUN_STATES = frozenset({"success", "failed"})
TASK_DONE_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


@dataclass(frozen=True)
class Decision:
    """What one look at the upstream concluded, with the line to log and the result to return."""

    status: Status
    message: str
    result: Any = None

    @property
    def done(self) -> bool:
        return self.status != "waiting"


@dataclass(frozen=True)
class StateRules:
    """Which states end the wait, and how."""

    allowed: frozenset[str]
    failed: frozenset[str] = frozenset()
    skipped: frozenset[str] = frozenset()

    def classify(self, state: str | None) -> Status:
        state = state or "none"
        if state in self.failed:
            return "failed"
        if state in self.skipped:
            return "skipped"
        if state in self.allowed:
            return "success"
        return "waiting"


def _ti_label(ti: TaskInstance) -> str:
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"


def decide_dag_run(
    run: DagRun | None,
    rules: StateRules,
    *,
    dag_id: str,
    what: str,
    url: str | None = None,
    task_instances: list[TaskInstance] | None = None,
    task_ids: Iterable[str] | None = None,
) -> Decision:
    """Decide on one upstream run; with ``task_instances`` the tasks' states decide instead of the run's.

    :param what: how the run was selected, for the log line (e.g. ``logical date 2026-11-20``).
    :param task_ids: the task ids that must all be present (``None`` when narrowing by task group).
    """
    if run is None:
        return Decision("waiting", f"{dag_id}: no run for {what} yet")
    head = f"{dag_id} run {run.run_id}: {run.state}"

    def result(tasks: dict[str, str | None] | None = None) -> dict[str, Any]:
        # only for a final decision: a waiting one is thrown away at every poll
        out = {**run.to_dict(), "url": url}
        if tasks is not None:
            out["tasks"] = tasks
        return out

    if task_instances is None:
        status = rules.classify(run.state)
        return Decision(status, head, None if status == "waiting" else result())

    tasks = {_ti_label(ti): ti.state for ti in task_instances}
    missing = sorted(set(task_ids or ()) - {ti.task_id for ti in task_instances})
    done = sum(1 for s in tasks.values() if (s or "none") in TASK_DONE_STATES)
    head = f"{head}, {done}/{len(tasks)} watched tasks done"
    if missing:
        return Decision("waiting", f"{head}; not in this run yet: {', '.join(missing)}")
    if not tasks:
        return Decision("waiting", f"{head}; no matching task instances yet")
    verdicts = {label: rules.classify(state) for label, state in tasks.items()}
    for status in ("failed", "skipped"):
        hit = sorted(label for label, v in verdicts.items() if v == status)
        if hit:
            states = ", ".join(f"{label}={tasks[label]}" for label in hit)
            return Decision(status, f"{head} -> {status} ({states})", result(tasks))
    if all(v == "success" for v in verdicts.values()):
        return Decision("success", f"{head} -> success", result(tasks))
    pending = Counter(state or "none" for label, state in tasks.items() if verdicts[label] == "waiting")
    return Decision("waiting", f"{head}; waiting on {dict(pending)}")


def decide_assets(new_events: dict[str, list[AssetEvent]], *, require: Literal["all", "any"]) -> Decision:
    """Decide on the new events found per watched asset (key: the asset's label)."""
    have = [label for label, events in new_events.items() if events]
    total = len(new_events)
    message = f"{len(have)} of {total} assets have new events"
    if have:
        message += " (" + ", ".join(f"{label}: {len(new_events[label])}" for label in have) + ")"
    complete = len(have) == total if require == "all" else bool(have)
    if not complete:
        return Decision("waiting", message)
    events = sorted((e for label in have for e in new_events[label]), key=lambda e: (e.timestamp, e.id))
    return Decision("success", message, [e.to_dict() for e in events])
