"""Durable per-task cursors for RemoteAssetSensor, kept in an Airflow Variable.

A Variable (not XCom with ``include_prior_dates``) because downstream runs do not arrive in
logical-date order: a backfilled or manual run with an older logical date must still see the
cursor the newest consumer left. Each consuming run also records where it started, so a cleared
and re-run downstream run consumes the same upstream events again instead of waiting for new ones.
"""

from __future__ import annotations

import json
from typing import Any, Callable

KEEP_RUNS = 50


class CursorStore:
    """Reads and writes one sensor task's cursors: ``{asset label: Cursor dict}``."""

    def __init__(self, dag_id: str, task_id: str, *, get: Callable[[str], Any] | None = None,
                 set_: Callable[[str, str], None] | None = None):
        self.key = f"xdep_sensors.cursor.{dag_id}.{task_id}"
        self._get = get or _variable_get
        self._set = set_ or _variable_set

    def _load(self) -> dict[str, Any]:
        raw = self._get(self.key)
        if not raw:
            return {"cursors": {}, "runs": {}}
        data = json.loads(raw) if isinstance(raw, str) else raw
        return {"cursors": data.get("cursors") or {}, "runs": data.get("runs") or {}}

    def start(self, run_id: str) -> dict[str, Any]:
        """Return the cursors this run starts from (a re-run starts where its first try started)."""
        data = self._load()
        if run_id in data["runs"]:
            return data["runs"][run_id]
        return data["cursors"]

    def commit(self, run_id: str, started_from: dict[str, Any], cursors: dict[str, Any]) -> None:
        """Record a successful consumption; never moves a label's cursor backwards."""
        data = self._load()
        merged = dict(data["cursors"])
        for label, cursor in cursors.items():
            current = merged.get(label) or {}
            if (current.get("timestamp") or "") <= (cursor.get("timestamp") or ""):
                merged[label] = cursor
        runs = {k: v for k, v in data["runs"].items() if k != run_id}
        runs[run_id] = started_from
        runs = dict(list(runs.items())[-KEEP_RUNS:])
        self._set(self.key, json.dumps({"cursors": merged, "runs": runs}))


def _variable_get(key: str) -> Any:
    from airflow.sdk import Variable

    return Variable.get(key, default=None)


def _variable_set(key: str, value: str) -> None:
    from airflow.sdk import Variable

    Variable.set(key, value, description="xdep_sensors: upstream asset events already consumed by this task")
