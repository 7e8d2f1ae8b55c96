"""Pure decisions: from what the upstream shows to waiting / success / failed / skipped.

Shared by the deferrable path (triggers) and the poke path (sensors); no I/O, no Airflow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Iterable, Literal

from xdep_sensors.client.dialects import parse_dt
from xdep_sensors.client.records import AssetEvent, DagRun, TaskInstance

Status = Literal["waiting", "success", "failed", "skipped"]

DAG_RUN_STATES = frozenset({"queued", "running", "success", "failed"})
TASK_STATES = frozenset({
    "removed", "scheduled", "queued", "running", "success", "restarting", "failed", "up_for_retry",
    "up_for_reschedule", "upstream_failed", "skipped", "deferred", "awaiting_input", "none",
})
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
        # built only for a final decision: a waiting one is thrown away at every poll
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
            return Decision(status, f"{head} -> {status} ({states})", result(tasks))  # type: ignore[arg-type]
    if all(v == "success" for v in verdicts.values()):
        return Decision("success", f"{head} -> success", result(tasks))
    pending = Counter(state or "none" for label, state in tasks.items() if verdicts[label] == "waiting")
    return Decision("waiting", f"{head}; waiting on {dict(pending)}")


@dataclass(frozen=True)
class Cursor:
    """What a consumer has consumed of an upstream feed (asset events, runs that ended).

    An item is new when it is at or after ``floor`` and not consumed. ``recent`` holds the
    ``(key, time)`` of items consumed within the overlap window behind ``timestamp``, so an item
    that becomes visible late (older than the newest consumed one) is still new, and nothing is
    consumed twice. A cursor of the earlier form (``timestamp`` + ``seen_ids`` only) reads as a
    floor at ``timestamp``.
    """

    timestamp: str | None = None  # ISO-8601, timezone-aware: the newest consumed item (or the start)
    seen_ids: tuple[int | str, ...] = field(default_factory=tuple)  # keys consumed at exactly ``timestamp``
    recent: tuple[tuple[int | str, str], ...] = field(default_factory=tuple)  # (key, ISO time) in the window
    floor: str | None = None  # items before it are never new (default: ``timestamp``)

    # parsed once per cursor, on first use (a wait asks about every event it sees)
    @cached_property
    def _consumed(self) -> set[tuple[int | str, datetime]]:
        return {(k, parse_dt(t)) for k, t in self.recent}  # type: ignore[misc]

    @cached_property
    def _mine(self) -> datetime | None:
        return parse_dt(self.timestamp)

    @cached_property
    def _floor(self) -> datetime | None:
        return parse_dt(self.floor) or self._mine

    def is_new_at(self, when: datetime, key: int | str) -> bool:
        mine = self._mine
        if mine is None:
            return True
        if when < self._floor or (key, when) in self._consumed:  # type: ignore[operator]
            return False
        return not (when == mine and key in self.seen_ids)

    def advance_with(self, items: Iterable[tuple[datetime, int | str]]) -> Cursor:
        """Return the cursor after consuming ``(timestamp, key)`` items (any order)."""
        from xdep_sensors.feed import OVERLAP

        items = list(items)
        if not items:
            return self
        mine = self._mine
        latest = max([t for t, _ in items] + ([mine] if mine else []))
        old_floor = self._floor
        floor = latest - OVERLAP
        if old_floor is not None:
            floor = max(floor, old_floor)
        consumed = set(self._consumed) | {(k, t) for t, k in items}  # type: ignore[attr-defined]
        if mine is not None:
            consumed |= {(k, mine) for k in self.seen_ids}
        kept = sorted(((k, t) for k, t in consumed if t >= floor), key=lambda kt: (kt[1], str(kt[0])))
        return Cursor(latest.isoformat(), tuple(sorted({k for k, t in kept if t == latest}, key=str)),
                      tuple((k, t.isoformat()) for k, t in kept), floor.isoformat())

    def is_new(self, event: AssetEvent) -> bool:
        return self.is_new_at(event.timestamp, event.id)

    def advance(self, events: Iterable[AssetEvent]) -> Cursor:
        """Return the cursor after consuming ``events`` (any order)."""
        return self.advance_with((e.timestamp, e.id) for e in events)

    @property
    def start(self) -> datetime | None:
        """The earliest time an unconsumed item can have: where a read for this consumer starts."""
        return self._floor

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "seen_ids": list(self.seen_ids),
                "recent": [list(kt) for kt in self.recent], "floor": self.floor}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Cursor:
        if not data:
            return cls()
        recent = tuple((k, t) for k, t in data.get("recent") or ())
        return cls(data.get("timestamp"), tuple(data.get("seen_ids") or ()), recent, data.get("floor"))


def decide_assets(
    new_events: dict[str, list[AssetEvent]], *, require: Literal["all", "any"]
) -> Decision:
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
