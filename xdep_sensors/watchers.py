"""Event triggers for Airflow 3 ``AssetWatcher``: schedule a downstream DAG on upstream events.

Each trigger fires one ``TriggerEvent`` per new upstream asset event (or per upstream run reaching
one of ``states``). The cursor lives in the asset state store the triggerer injects (Airflow 3.3+),
written after each event is handed over, so a restarted triggerer neither loses nor repeats
events; without a store the trigger starts from "now". Watchers on one connection share one poll
per interval through ``shared_stream_key`` where Airflow offers it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, AsyncIterator, ClassVar, Hashable

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from xdep_sensors.client import DagRun, RemoteAirflowClient
from xdep_sensors.client.dialects import parse_dt
from xdep_sensors.client.records import AssetEvent
from xdep_sensors.decisions import Cursor
from xdep_sensors.errors import XdepError
from xdep_sensors.hook import RemoteAirflowHook

log = logging.getLogger(__name__)

SHARED_STREAMS = hasattr(BaseEventTrigger, "filter_shared_stream")  # Airflow 3.3+
FINISHED_STATES = frozenset({"success", "failed"})
MAX_BACKOFF = 900.0
AUTH_RETRY = 300.0


class _Subscribers:
    """Who listens on each shared poll (in the triggerer's one event loop): their targets and cursors."""

    def __init__(self) -> None:
        self.by_key: dict[Hashable, dict[int, _RemoteEventTrigger]] = {}

    def add(self, key: Hashable, trigger: _RemoteEventTrigger) -> None:
        self.by_key.setdefault(key, {})[id(trigger)] = trigger

    def remove(self, key: Hashable, trigger: _RemoteEventTrigger) -> None:
        members = self.by_key.get(key, {})
        members.pop(id(trigger), None)
        if not members:
            self.by_key.pop(key, None)

    def snapshot(self, key: Hashable) -> tuple[list[Any] | None, datetime | None]:
        """Return the union of targets and the lowest cursor: what one request must cover."""
        members = list(self.by_key.get(key, {}).values())
        if not members:
            return None, None
        targets = sorted({m.target for m in members})
        stamps = [parse_dt(m.cursor.timestamp) for m in members]
        return targets, (min(stamps) if all(stamps) else None)  # type: ignore[type-var]


SUBSCRIBERS = _Subscribers()


def _delay(poll_interval: float, failures: int, err: XdepError) -> float:
    wait = min(MAX_BACKOFF, poll_interval * 2 ** min(failures - 1, 8))
    return wait if err.transient else max(wait, AUTH_RETRY)


class _RemoteEventTrigger(BaseEventTrigger):
    """Polls an upstream, fires once per new item, persists its cursor after each handover."""

    kind: ClassVar[str]

    def __init__(self, *, remote_conn_id: str, poll_interval: float = 60.0):
        super().__init__()
        if not isinstance(remote_conn_id, str) or not remote_conn_id.strip():
            raise ValueError(f"remote_conn_id must be a connection id, got {remote_conn_id!r}")
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.remote_conn_id = remote_conn_id
        self.poll_interval = float(poll_interval)
        self.cursor = Cursor()

    # what subclasses define -----------------------------------------------------------------

    @property
    def target(self) -> str:
        raise NotImplementedError

    def _kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def mine(self, item: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def position(item: Any) -> tuple[datetime, int | str]:
        raise NotImplementedError

    def payload(self, item: Any, upstream: str) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    async def fetch(cls, client: RemoteAirflowClient, targets: list[str] | None, since: datetime | None) -> list[Any]:
        raise NotImplementedError

    # serialization --------------------------------------------------------------------------

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {"remote_conn_id": self.remote_conn_id, "poll_interval": self.poll_interval, **self._kwargs()}
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    # cursor -----------------------------------------------------------------------------------

    @property
    def _state_key(self) -> str:
        return f"xdep_sensors:{self.kind}:{self.remote_conn_id}:{self.target}"

    def _accessors(self) -> list[Any]:
        store = self.asset_state_store
        if store is None:
            return []
        # One accessor per watching asset (a trigger shared by two watchers persists to both).
        many = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return many or [store]

    async def load_cursor(self) -> None:
        """Resume from the stored cursor; without one, start from now (and store that)."""
        for accessor in self._accessors():
            stored = await accessor.aget(self._state_key)
            if stored:
                self.cursor = Cursor.from_dict(stored)  # type: ignore[arg-type]
                self.log.info("resuming %s after %s", self.target, self.cursor.timestamp)
                return
        self.cursor = Cursor(datetime.now(timezone.utc).isoformat())
        if not self._accessors():
            self.log.warning("no asset state store here (Airflow < 3.3?): events before %s are not replayed "
                             "after a triggerer restart", self.cursor.timestamp)
        await self.save_cursor()

    async def save_cursor(self) -> None:
        for accessor in self._accessors():
            await accessor.aset(self._state_key, self.cursor.to_dict())

    async def emit(self, items: list[Any], upstream: str) -> AsyncIterator[TriggerEvent]:
        """Yield one event per new item of ours, oldest first, advancing the cursor after each."""
        new = sorted((i for i in items if self.mine(i) and self.cursor.is_new_at(*self.position(i))),
                     key=self.position)
        for item in new:
            yield TriggerEvent(self.payload(item, upstream))
            self.cursor = self.cursor.advance_with([self.position(item)])
            await self.save_cursor()

    # standalone path --------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await self.load_cursor()
        hook = RemoteAirflowHook(self.remote_conn_id)
        failures = 0
        while True:
            try:
                client = await hook.aget_client()
                items = await self.fetch(client, [self.target], parse_dt(self.cursor.timestamp))
            except XdepError as err:
                failures += 1
                wait = _delay(self.poll_interval, failures, err)
                (self.log.warning if err.transient else self.log.error)(
                    "upstream error on %s (%d in a row), retrying in %.0fs: %s", self.target, failures, wait, err)
                await asyncio.sleep(wait)
                continue
            failures = 0
            async for event in self.emit(items, client.config.ui_base):
                yield event
            await asyncio.sleep(self.poll_interval)

    # shared path (Airflow 3.3+) ---------------------------------------------------------------

    def shared_stream_key(self) -> Hashable | None:
        if not SHARED_STREAMS:
            return None
        return ("xdep_sensors", self.kind, self.remote_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """One poll for every watcher on this connection: each request covers all their targets."""
        interval = float(kwargs.get("poll_interval", 60.0))
        key = ("xdep_sensors", cls.kind, kwargs["remote_conn_id"], interval)
        hook = RemoteAirflowHook(kwargs["remote_conn_id"])
        failures = 0
        while True:
            targets, since = SUBSCRIBERS.snapshot(key)
            try:
                client = await hook.aget_client()
                items = await cls.fetch(client, targets, since)
            except XdepError as err:
                failures += 1
                wait = _delay(interval, failures, err)
                (log.warning if err.transient else log.error)(
                    "upstream error on the shared %s poll (%d in a row), retrying in %.0fs: %s", cls.kind,
                    failures, wait, err)
                await asyncio.sleep(wait)
                continue
            failures = 0
            yield {"items": items, "upstream": client.config.ui_base}
            await asyncio.sleep(interval)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        await self.load_cursor()
        key = self.shared_stream_key()
        SUBSCRIBERS.add(key, self)
        try:
            async for batch in shared_stream:
                async for event in self.emit(batch["items"], batch["upstream"]):
                    yield event
        finally:
            SUBSCRIBERS.remove(key, self)


class RemoteAssetEventTrigger(_RemoteEventTrigger):
    """
    Fires once per new event of an asset in another Airflow deployment (for ``AssetWatcher``).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param asset_uri: the upstream asset's URI (give this or ``asset_name``).
    :param asset_name: the upstream asset's name (Airflow 3 upstreams).
    :param source_dag_id: only events produced by this upstream DAG.
    :param poll_interval: seconds between polls.
    """

    kind = "assets"

    def __init__(self, *, remote_conn_id: str, asset_uri: str | None = None, asset_name: str | None = None,
                 source_dag_id: str | None = None, poll_interval: float = 60.0):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        if (asset_uri is None) == (asset_name is None):
            raise ValueError("give exactly one of asset_uri, asset_name")
        if not isinstance(asset_uri or asset_name, str) or not (asset_uri or asset_name or "").strip():
            raise ValueError("asset_uri / asset_name must be a non-empty string")
        self.asset_uri = asset_uri
        self.asset_name = asset_name
        self.source_dag_id = source_dag_id

    @property
    def target(self) -> str:
        return self.asset_uri or self.asset_name or ""

    def _kwargs(self) -> dict[str, Any]:
        return {"asset_uri": self.asset_uri, "asset_name": self.asset_name, "source_dag_id": self.source_dag_id}

    def mine(self, item: AssetEvent) -> bool:
        if self.source_dag_id and item.source_dag_id != self.source_dag_id:
            return False
        if self.asset_uri is not None:
            return item.uri.rstrip("/") == self.asset_uri.rstrip("/")
        return item.name == self.asset_name

    @staticmethod
    def position(item: AssetEvent) -> tuple[datetime, int | str]:
        return item.timestamp, item.id

    def payload(self, item: AssetEvent, upstream: str) -> dict[str, Any]:
        return {"upstream": upstream, "event": item.to_dict()}

    @classmethod
    async def fetch(cls, client: RemoteAirflowClient, targets: list[str] | None, since: datetime | None) -> list[Any]:
        # Every asset's events in one request (v2); targets are matched by URI/name in ``mine``.
        return await client.list_asset_events(since=since)


class RemoteDagRunEventTrigger(_RemoteEventTrigger):
    """
    Fires once per run of a DAG in another Airflow deployment that finishes in one of ``states``.

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param states: finished states that fire (default ``["success"]``; ``["failed"]`` for remediation).
    :param poll_interval: seconds between polls.
    """

    kind = "runs"

    def __init__(self, *, remote_conn_id: str, external_dag_id: str, states: list[str] | None = None,
                 poll_interval: float = 60.0):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        if not isinstance(external_dag_id, str) or not external_dag_id.strip():
            raise ValueError(f"external_dag_id must be a non-empty string, got {external_dag_id!r}")
        states = ["success"] if states is None else states
        if isinstance(states, str) or not states or not set(states) <= FINISHED_STATES:
            raise ValueError(f"states must be a non-empty list of {sorted(FINISHED_STATES)} "
                             f"(runs fire when they finish), got {states!r}")
        self.external_dag_id = external_dag_id
        self.states = sorted(states)

    @property
    def target(self) -> str:
        return self.external_dag_id

    def _kwargs(self) -> dict[str, Any]:
        return {"external_dag_id": self.external_dag_id, "states": self.states}

    def mine(self, item: DagRun) -> bool:
        return item.dag_id == self.external_dag_id and item.state in self.states and item.end_date is not None

    @staticmethod
    def position(item: DagRun) -> tuple[datetime, int | str]:
        return item.end_date, f"{item.dag_id}/{item.run_id}"  # type: ignore[return-value]

    def payload(self, item: DagRun, upstream: str) -> dict[str, Any]:
        return {"upstream": upstream, "run": item.to_dict()}

    @classmethod
    async def fetch(cls, client: RemoteAirflowClient, targets: list[str] | None, since: datetime | None) -> list[Any]:
        # One batch request for every watched DAG; both finished states, filtered per trigger.
        return await client.list_finished_runs(targets, sorted(FINISHED_STATES), end_date_gte=since)
