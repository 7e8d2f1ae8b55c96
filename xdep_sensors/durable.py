"""Durable state, one place: triggers' state and the asset sensors' cursors, a JSON object per key.

Keys follow one rule (:func:`variable_key`). ``CursorStore`` keeps a ``RemoteAssetSensor`` task's
consumed-events cursors (a worker writes it, in a Variable). ``TriggerState`` keeps a trigger's state
on every supported Airflow 3.

Airflow 3.3+ injects an asset state store into ``AssetWatcher`` triggers; ``TriggerState`` uses it
when it is there. Below 3.3 (and for triggers without a store) the value lives in an Airflow
Variable: the trigger asks the triggerer's supervisor (``GetVariable`` / ``PutVariable``, which it
relays to its in-process Execution API) through the Task SDK ``Variable``. The SDK call is
synchronous, so it runs in a worker thread and the triggerer's event loop never blocks. Both paths
are proven by a counter trigger run in the real triggerer of 3.0.6, 3.1.8, 3.2.2 and 3.3.2 across
a triggerer restart (``tests/integration/test_versions_downstream.py``,
``test_trigger_state_survives_a_triggerer_restart``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Callable, Iterable

from asgiref.sync import sync_to_async

from xdep_sensors.client.dialects import parse_dt
from xdep_sensors.client.records import AssetEvent
from xdep_sensors.feed import OVERLAP

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

    def merged(self, other: Cursor) -> Cursor:
        """The cursor that has consumed what this one or ``other`` (another copy of it) has."""
        theirs = [(t, k) for k, t in other._consumed]  # type: ignore[attr-defined]
        if other._mine is not None:
            theirs += [(other._mine, k) for k in other.seen_ids]
        both = self.advance_with(theirs)
        if other._floor is None or (both._floor is not None and both._floor >= other._floor):
            return both
        floor = other._floor
        return Cursor(both.timestamp, both.seen_ids, tuple(kt for kt in both.recent if parse_dt(kt[1]) >= floor),
                      floor.isoformat())

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


VARIABLE_PREFIX = "xdep_sensors.state."
_MAX_VARIABLE_KEY = 250  # Variable.key is a String(250)
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def variable_key(key: str) -> str:
    """Return the Variable key that holds ``key``: URL-safe, at most 250 characters, distinct per key.

    The Task SDK puts the key in an Execution API URL path unescaped: on 3.0 a ``/`` (as in an asset
    URI) answers 404, so other characters become ``_`` and a hash of the original keeps keys apart.
    """
    safe = _UNSAFE.sub("_", key)
    full = VARIABLE_PREFIX + safe
    if safe == key and len(full) <= _MAX_VARIABLE_KEY:
        return full
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{full[:_MAX_VARIABLE_KEY - 17]}~{digest}"


def _variable_get(key: str) -> Any:
    from airflow.sdk import Variable

    raw = Variable.get(key, default=None)
    return json.loads(raw) if isinstance(raw, str) else raw


def _variable_set(key: str, value: dict[str, Any], description: str = "xdep_sensors: trigger state (cursor)") -> None:
    from airflow.sdk import Variable

    # Serialised here: 3.0's PutVariable declares a str value and warns about a dict.
    Variable.set(key, json.dumps(value), description=description)


KEEP_RUNS = 50


class CursorStore:
    """One ``RemoteAssetSensor`` task's consumed-events cursors (``{asset label: Cursor dict}``), in a Variable.

    A Variable (not XCom with ``include_prior_dates``) because downstream runs do not arrive in
    logical-date order: a backfilled or manual run with an older logical date must still see the
    cursor the newest consumer left. Each consuming run also records where it started, so a cleared
    and re-run downstream run consumes the same upstream events again instead of waiting for new ones.
    Its key follows :func:`variable_key` like a trigger's state; a cursor stored under the key of
    earlier versions (``xdep_sensors.cursor.<dag>.<task>``) is read until the next commit.
    """

    def __init__(self, dag_id: str, task_id: str, *, get: Callable[[str], Any] | None = None,
                 set_: Callable[[str, dict[str, Any]], None] | None = None):
        self.key = variable_key(f"cursor:{dag_id}.{task_id}")
        self.legacy_key = f"xdep_sensors.cursor.{dag_id}.{task_id}"
        self._get = get or _variable_get
        self._set = set_ or (lambda key, value: _variable_set(
            key, value, "xdep_sensors: upstream asset events already consumed by this task"))

    def _load(self) -> dict[str, Any]:
        raw = self._get(self.key) or self._get(self.legacy_key)
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
        self._set(self.key, {"cursors": merged, "runs": runs})


class TriggerState:
    """Async get/set of JSON objects by key, in the asset state store (3.3+) or else in Variables.

    :param accessors: asset state store accessors to use (each has ``aget``/``aset``); empty or
        None means Airflow Variables.
    """

    def __init__(self, accessors: list[Any] | None = None) -> None:
        self._accessors = list(accessors or [])

    @classmethod
    def for_trigger(cls, trigger: Any) -> TriggerState:
        """Pick the store for a trigger instance: its asset state store if Airflow injected one."""
        # Airflow < 3.3 never defines the attribute; 3.3+ sets it to None for triggers outside watchers.
        store = getattr(trigger, "asset_state_store", None)
        if store is None:
            return cls()
        # One accessor per watching asset (a trigger shared by two watchers persists to both).
        many = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return cls(many or [store])

    @property
    def backend(self) -> str:
        """``"asset_state_store"`` or ``"variable"``: where values are kept."""
        return "asset_state_store" if self._accessors else "variable"

    async def aget(self, key: str) -> dict[str, Any] | None:
        """Return the object stored under key, or None if there is none."""
        if self._accessors:
            for accessor in self._accessors:
                value = await accessor.aget(key)
                if isinstance(value, dict):
                    return value
            return None
        value = await sync_to_async(_variable_get, thread_sensitive=False)(variable_key(key))
        return value if isinstance(value, dict) else None

    async def aset(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-serialisable object under key (replacing what was there)."""
        if not isinstance(value, dict):
            raise TypeError(f"TriggerState values are dicts, got {type(value).__name__}")
        if self._accessors:
            for accessor in self._accessors:
                await accessor.aset(key, value)
            return
        await sync_to_async(_variable_set, thread_sensitive=False)(variable_key(key), value)
