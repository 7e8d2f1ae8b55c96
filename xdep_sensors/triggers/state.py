"""Durable state, one place: triggers' state and the asset sensors' cursors, a JSON object per key.

Variables are read and written through the Task SDK in a worker thread, so the event loop never
blocks. See ``docs/explanation/guarantees.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

from xdep_sensors.core.probes import PARTITION_MARK

VARIABLE_PREFIX = "xdep_sensors.state."
_MAX_VARIABLE_KEY = 250  # Variable.key is a String(250)
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def variable_key(key: str) -> str:
    """Return the Variable key that holds ``key``: URL-safe, at most 250 characters, distinct per key.

    The Task SDK puts the key in a URL path unescaped (on 3.0 a ``/`` answers 404).
    """
    safe = _UNSAFE.sub("_", key)
    full = VARIABLE_PREFIX + safe
    if safe == key and len(full) <= _MAX_VARIABLE_KEY:
        return full
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{full[: _MAX_VARIABLE_KEY - 17]}~{digest}"


def _variable_get(key: str) -> Any:
    from airflow.sdk import Variable

    raw = Variable.get(key, default=None)
    return json.loads(raw) if isinstance(raw, str) else raw


def _variable_set(
    key: str, value: dict[str, Any], description: str = "xdep_sensors: trigger state (cursor)"
) -> None:
    from airflow.sdk import Variable

    # Serialised here: 3.0's PutVariable declares a str value and warns about a dict.
    Variable.set(key, json.dumps(value), description=description)


KEEP_RUNS = 50
KEEP_PARTITIONS = 100  # partition cursors per task: those of its most recently consumed partitions


class CursorStore:
    """One ``RemoteAssetSensor`` task's consumed-events cursors (``{label: Cursor dict}``), in a Variable.

    Each run records where it started, so a cleared run consumes the same events again. A partition
    wait's cursors are per asset and key; a task keeps those of its ``KEEP_PARTITIONS`` most recently
    consumed partitions (an older partition's next wait starts again from its bounded start). A cursor under
    the earlier key ``xdep_sensors.cursor.<dag>.<task>`` is read until the next commit.
    """

    def __init__(
        self,
        dag_id: str,
        task_id: str,
        *,
        get: Callable[[str], Any] | None = None,
        set_: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.key = variable_key(f"cursor:{dag_id}.{task_id}")
        self.legacy_key = f"xdep_sensors.cursor.{dag_id}.{task_id}"
        self._get = get or _variable_get
        self._set = set_ or (
            lambda key, value: _variable_set(
                key, value, "xdep_sensors: upstream asset events already consumed by this task"
            )
        )

    def _load(self) -> dict[str, Any]:
        raw = self._get(self.key) or self._get(self.legacy_key)
        if not raw:
            return {"cursors": {}, "runs": {}}
        data = json.loads(raw) if isinstance(raw, str) else raw
        return {"cursors": data.get("cursors") or {}, "runs": data.get("runs") or {}}

    def start(self, run_id: str) -> dict[str, Any]:
        """Return the cursors this run starts from (where its first try started)."""
        data = self._load()
        if run_id in data["runs"]:
            return data["runs"][run_id]
        return data["cursors"]

    def commit(self, run_id: str, started_from: dict[str, Any], cursors: dict[str, Any]) -> None:
        """Record a successful consumption; never moves a label's cursor backwards."""
        data = self._load()
        merged = dict(data["cursors"])
        for label, cursor in cursors.items():
            current = merged.pop(label, None) or {}  # popped: put back last, the most recent
            merged[label] = (
                cursor if (current.get("timestamp") or "") <= (cursor.get("timestamp") or "") else current
            )
        partitions = [label for label in merged if PARTITION_MARK in label]
        for label in partitions[: max(0, len(partitions) - KEEP_PARTITIONS)]:
            del merged[label]
        runs = {k: v for k, v in data["runs"].items() if k != run_id}
        runs[run_id] = started_from
        runs = dict(list(runs.items())[-KEEP_RUNS:])
        self._set(self.key, {"cursors": merged, "runs": runs})


class TriggerState:
    """Async get/set of JSON objects by key, in the asset state store (3.3+) or else in Variables.

    :param accessors: asset state store accessors (``aget``/``aset``); none: Airflow Variables.
    """

    def __init__(self, accessors: list[Any] | None = None) -> None:
        self._accessors = list(accessors or [])

    @classmethod
    def for_trigger(cls, trigger: Any) -> TriggerState:
        """The trigger's asset state store if Airflow injected one, else Variables."""
        # Airflow < 3.3 never defines the attribute; 3.3+ sets it to None for triggers outside watchers.
        store = getattr(trigger, "asset_state_store", None)
        if store is None:
            return cls()
        # one accessor per watching asset: a trigger shared by two watchers persists to both
        many = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return cls(many or [store])

    @property
    def backend(self) -> str:
        """``"asset_state_store"`` or ``"variable"``: where values are kept."""
        return "asset_state_store" if self._accessors else "variable"

    async def aget(self, key: str) -> dict[str, Any] | None:
        """Return the object stored under key, or None."""
        if self._accessors:
            for accessor in self._accessors:
                value = await accessor.aget(key)
                if isinstance(value, dict):
                    return value
            return None
        value = await sync_to_async(_variable_get, thread_sensitive=False)(variable_key(key))
        return value if isinstance(value, dict) else None

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-serialisable object under key."""
        if not isinstance(value, dict):
            raise TypeError(f"TriggerState values are dicts, got {type(value).__name__}")
        if self._accessors:
            for accessor in self._accessors:
                await accessor.aset(key, value)
            return
        await sync_to_async(_variable_set, thread_sensitive=False)(variable_key(key), value)
