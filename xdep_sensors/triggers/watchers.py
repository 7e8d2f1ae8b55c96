"""Event triggers for Airflow 3 ``AssetWatcher``: schedule a downstream DAG on upstream events.

Each fires one event per new item of its upstream listing, read as a feed, and keeps its state durable
(``TriggerState``). See ``docs/explanation/feeds.md`` and ``docs/explanation/guarantees.md``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Hashable, MutableMapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from xdep_sensors.client import DagRun, RemoteAirflowClient
from xdep_sensors.client.records import Asset, AssetEvent, parse_dt
from xdep_sensors.core.cursors import Cursor
from xdep_sensors.core.decisions import FINISHED_RUN_STATES
from xdep_sensors.core.feeds import OVERLAP, Feed
from xdep_sensors.core.listings import POSITIONS, Key, Listing, ListingKind, open_feed, read_feed
from xdep_sensors.core.pacing import Pace, paced
from xdep_sensors.core.registry import PerLoop
from xdep_sensors.core.shared_reads import SharedReads, asset_reads_for, listing_for
from xdep_sensors.core.visibility import hidden_producers, producers_line, source_not_visible, visible_dag
from xdep_sensors.errors import NotFound, XdepError
from xdep_sensors.hooks import RemoteAirflowHook
from xdep_sensors.triggers.classpath import classpath
from xdep_sensors.triggers.state import TriggerState

log = logging.getLogger(__name__)

SHARED_STREAMS = hasattr(BaseEventTrigger, "filter_shared_stream")  # Airflow 3.3+

CATCH_UP_PAUSE = 1.0  # seconds between reads while a feed is catching up


class _Subscribers:
    """Who listens on each shared poll, and its shared reads (per event loop)."""

    def __init__(self) -> None:
        self._by_key: PerLoop[Hashable, dict[int, _RemoteEventTrigger]] = PerLoop()
        self._reads: PerLoop[Hashable, SharedReads] = PerLoop()

    @property
    def by_key(self) -> MutableMapping[Hashable, dict[int, _RemoteEventTrigger]]:
        return self._by_key.here()

    @property
    def reads(self) -> MutableMapping[Hashable, SharedReads]:
        return self._reads.here()

    def add(self, key: Hashable, trigger: _RemoteEventTrigger) -> None:
        self.by_key.setdefault(key, {})[id(trigger)] = trigger

    def remove(self, key: Hashable, trigger: _RemoteEventTrigger) -> None:
        members = self.by_key.get(key, {})
        members.pop(id(trigger), None)
        if not members:
            self.by_key.pop(key, None)

    def targets(self, key: Hashable) -> set[Hashable]:
        """The resolved listing targets of the watchers on this poll."""
        return {m.target_id for m in self.by_key.get(key, {}).values() if m.target_id is not None}


SUBSCRIBERS = _Subscribers()


class _RemoteEventTrigger(BaseEventTrigger):
    """Reads an upstream listing as a feed, fires once per new item of its own, persists its state."""

    kind: ClassVar[str]  # names the durable state
    listing_kind: ClassVar[ListingKind]
    listing_states: ClassVar[tuple[str, ...]] = ()
    source_dag_id: str | None = None

    def __init__(self, *, remote_conn_id: str, poll_interval: float = 60.0):
        super().__init__()
        if not isinstance(remote_conn_id, str) or not remote_conn_id.strip():
            raise ValueError(f"remote_conn_id must be a connection id, got {remote_conn_id!r}")
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.remote_conn_id = remote_conn_id
        self.poll_interval = float(poll_interval)
        self.cursor = Cursor()
        self.read_mark: datetime | None = None  # how far the listing has been read
        self._saved_read: datetime | None = None
        self.target_id: Hashable | None = None  # asset id or DAG id

    # what subclasses define -----------------------------------------------------------------

    @property
    def target(self) -> str:
        raise NotImplementedError

    def _kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def mine(self, item: Any) -> bool:
        raise NotImplementedError

    def position(self, item: Any) -> tuple[datetime, Key]:
        """Where an item sits in the listing, and its identity."""
        return POSITIONS[self.listing_kind](item)

    def payload(self, item: Any, upstream: str) -> dict[str, Any]:
        raise NotImplementedError

    async def resolve(self, client: RemoteAirflowClient) -> Hashable:
        """The listing target of this trigger (by default its ``target``)."""
        return self.target

    async def check_dag(self, client: RemoteAirflowClient, dag_id: str) -> None:
        """At the first look: a DAG hidden from the connection's user fails the look (:class:`NotVisible`:
        logged with the fix, looked at again later), as the run listings would leave it out in silence."""
        try:
            await visible_dag(client, dag_id)
        except NotFound:
            self.log.warning("DAG %s does not exist upstream at %s (yet)", dag_id, client.config.where)

    def adapt(self, client: RemoteAirflowClient, items: list[Any]) -> list[Any]:
        """Listing records as the items ``mine``/``position``/``payload`` take."""
        return items

    # serialization --------------------------------------------------------------------------

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {
            "remote_conn_id": self.remote_conn_id,
            "poll_interval": self.poll_interval,
            **self._kwargs(),
        }
        return classpath(type(self)), kwargs

    # durable state ----------------------------------------------------------------------------

    @property
    def _state_key(self) -> str:
        return f"xdep_sensors:{self.kind}:{self.remote_conn_id}:{self.target}"

    def _store(self) -> TriggerState:
        return TriggerState.for_trigger(self)

    async def load_cursor(self) -> None:
        """Resume from the stored state; without one, start from now (and store that)."""
        stored = await self._store().aget(self._state_key)
        if stored:
            self.cursor = Cursor.from_dict(stored)
            self.read_mark = self._saved_read = parse_dt(stored.get("read"))
            self.log.info(
                "resuming %s: consumed up to %s, read up to %s",
                self.target,
                self.cursor.timestamp,
                stored.get("read") or self.cursor.timestamp,
            )
            return
        self.cursor = Cursor(datetime.now(timezone.utc).isoformat())
        await self.save_cursor()

    async def save_cursor(self) -> None:
        state = self.cursor.to_dict()
        if self.read_mark is not None:
            state["read"] = self.read_mark.isoformat()
        await self._store().aset(self._state_key, state)
        self._saved_read = self.read_mark

    async def note_read(self, mark: datetime | None) -> None:
        """Remember how far the listing was read (stored every half overlap window)."""
        if mark is None or (self.read_mark is not None and mark <= self.read_mark):
            return
        self.read_mark = mark
        if self._saved_read is None or mark - self._saved_read >= OVERLAP / 2:
            await self.save_cursor()

    def read_start(self) -> datetime | None:
        """Where a read starts: the overlap window behind what it read, never before its cursor."""
        start = self.cursor.start
        if self.read_mark is not None:
            behind = self.read_mark - OVERLAP
            start = behind if start is None else max(start, behind)
        return start

    async def emit(self, items: list[Any], upstream: str) -> AsyncIterator[TriggerEvent]:
        """One event per new item of ours, oldest first, storing the cursor after each."""
        new = sorted(
            (i for i in items if self.mine(i) and self.cursor.is_new_at(*self.position(i))),
            key=lambda i: (self.position(i)[0], str(self.position(i)[1])),
        )
        for item in new:
            if not self.cursor.is_new_at(*self.position(item)):
                continue  # the same item twice in one batch (a catch-up and the shared read)
            if await self._fired_elsewhere(item):
                continue
            yield TriggerEvent(self.payload(item, upstream))
            self.cursor = self.cursor.advance_with([self.position(item)])
            await self.save_cursor()

    async def _fired_elsewhere(self, item: Any) -> bool:
        """Whether another copy of this watcher (a stalled triggerer's) fired ``item``; adopts its state."""
        stored = await self.stored_before_firing()
        if not stored:
            return False
        theirs = Cursor.from_dict(stored)
        when, key = self.position(item)
        if theirs.is_new_at(when, key):
            return False
        self.cursor = self.cursor.merged(theirs)
        self.log.info(
            "not firing %s item %s: its stored state says another triggerer fired it", self.target, key
        )
        return True

    async def stored_before_firing(self) -> dict[str, Any]:
        """The stored state right before an event fires; ``{}`` if unreadable (a repeat beats a loss)."""
        try:
            stored = await self._store().aget(self._state_key)
        except Exception as err:
            self.log.warning("could not read the stored state of %s before firing: %s", self.target, err)
            return {}
        return dict(stored) if stored else {}

    def _listing(self) -> Listing:
        return listing_for(self.listing_kind, self.target_id, self.listing_states, self.source_dag_id)

    # standalone path --------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await self.load_cursor()
        hook = RemoteAirflowHook(self.remote_conn_id)
        feed: Feed | None = None

        async def look() -> tuple[RemoteAirflowClient, list[Any]]:
            nonlocal feed
            client = await hook.aget_client()
            if self.target_id is None:
                self.target_id = await self.resolve(client)
            listing = self._listing()
            if feed is None:
                feed = await open_feed(client, listing, self.read_start())
            return client, self.adapt(client, await read_feed(client, feed, listing))

        def pause(_: Any) -> float:
            return CATCH_UP_PAUSE if feed is not None and feed.behind else self.poll_interval

        async for client, items in paced(
            look, interval=self.poll_interval, log=self.log, what=self.target, pause=pause
        ):
            async for event in self.emit(items, client.config.ui_base):
                yield event
            assert feed is not None
            await self.note_read(feed.mark)

    # shared path (Airflow 3.3+) ---------------------------------------------------------------

    def shared_stream_key(self) -> Hashable | None:
        if not SHARED_STREAMS:
            return None
        return ("xdep_sensors", self.kind, self.remote_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """One read per interval for every watcher on this connection."""
        interval = float(kwargs.get("poll_interval", 60.0))
        key = ("xdep_sensors", cls.kind, kwargs["remote_conn_id"], interval)
        reads = SUBSCRIBERS.reads.setdefault(key, SharedReads(cls.listing_kind, cls.listing_states))
        hook = RemoteAirflowHook(kwargs["remote_conn_id"])
        reader = object()

        async def look() -> dict[str, Any]:
            nonlocal reads
            targets = SUBSCRIBERS.targets(key)
            client = await hook.aget_client()
            if cls.listing_kind == "asset_events":
                # the same feeds as the sensors' shared poll: one read for both
                reads = SUBSCRIBERS.reads[key] = asset_reads_for(client.config)
                by_target, marks = await reads.read_for(reader, client, targets, interval / 2)
            else:
                by_target = await reads.read(client, targets)
                marks = reads.marks()
            return {
                "by_target": by_target,
                "targets": targets,
                "upstream": client.config.ui_base,
                "marks": marks,
            }

        try:
            async for batch in paced(look, interval=interval, log=log, what=f"the shared {cls.kind} poll"):
                yield batch
        finally:
            reads.leave(reader)
            if SUBSCRIBERS.reads.get(key) is reads and key not in SUBSCRIBERS.by_key:
                SUBSCRIBERS.reads.pop(key, None)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        await self.load_cursor()
        key = self.shared_stream_key()
        SUBSCRIBERS.add(key, self)
        hook = RemoteAirflowHook(self.remote_conn_id)
        caught_up, pace = False, Pace(self.poll_interval)  # the stream paces the looks: no sleep here
        try:
            async for batch in shared_stream:
                try:
                    client = await hook.aget_client()
                    if self.target_id is None:
                        self.target_id = await self.resolve(client)
                    items = list(batch["by_target"].get(self.target_id, []))
                    if not caught_up and self.target_id in batch["targets"]:
                        # after a shared read that covered our target: every item is in it or in this
                        reads = SUBSCRIBERS.reads[key]
                        behind, caught_up = await reads.catch_up(
                            client, self.target_id, self.read_start(), self.source_dag_id
                        )
                        items = behind + items
                    pace.ok()
                except XdepError as err:
                    pace.failed(err)
                    (self.log.warning if err.transient else self.log.error)(
                        "upstream error on %s (%d in a row), looking again with the next poll: %s",
                        self.target,
                        pace.failures,
                        err,
                    )
                    continue
                async for event in self.emit(self.adapt(client, items), batch["upstream"]):
                    yield event
                if caught_up:
                    marks = batch["marks"]
                    await self.note_read(marks.get(self.target_id, marks.get(None)))
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
    listing_kind = ListingKind.ASSET_EVENTS

    def __init__(
        self,
        *,
        remote_conn_id: str,
        asset_uri: str | None = None,
        asset_name: str | None = None,
        source_dag_id: str | None = None,
        poll_interval: float = 60.0,
    ):
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
        return {
            "asset_uri": self.asset_uri,
            "asset_name": self.asset_name,
            "source_dag_id": self.source_dag_id,
        }

    def mine(self, item: AssetEvent) -> bool:
        if self.source_dag_id and item.source_dag_id != self.source_dag_id:
            return False
        if self.asset_uri is not None:
            return item.uri.rstrip("/") == self.asset_uri.rstrip("/")
        return item.name == self.asset_name

    def payload(self, item: AssetEvent, upstream: str) -> dict[str, Any]:
        return {"upstream": upstream, "event": item.to_dict()}

    async def resolve(self, client: RemoteAirflowClient) -> Hashable:
        """The upstream asset's id (per deployment: looked up, never configured)."""
        dialect = await client.dialect()
        if self.asset_uri is not None or not dialect.has_asset_names:
            found = await client.list_assets(uri_pattern=self.target)
        else:
            found = await client.list_assets(name_pattern=self.asset_name)
        for asset in found:
            if (
                asset.uri.rstrip("/") == self.target.rstrip("/")
                if self.asset_uri is not None or not dialect.has_asset_names
                else asset.name == self.asset_name
            ):
                await self._check_producers(client, asset)
                return asset.id
        raise NotFound(
            f"asset {self.target} does not exist upstream at {client.config.where}",
            hint="check the watcher's asset_uri / asset_name; the watcher looks again later",
        )

    async def _check_producers(self, client: RemoteAirflowClient, asset: Asset) -> None:
        """Say which producers' events the user cannot see (3.3+); fail the look for ``source_dag_id``."""
        dags = (await hidden_producers(client, [asset], self.source_dag_id)).get(asset.id)
        if dags and self.source_dag_id in dags:
            raise source_not_visible(client, self.source_dag_id)
        if dags:
            self.log.warning("%s; watching for events it can see", producers_line(client, self.target, dags))


class RemoteDagRunEventTrigger(_RemoteEventTrigger):
    """
    Fires once per run of a DAG in another Airflow deployment that finishes in one of ``states``.

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param states: finished states that fire (default ``["success"]``; ``["failed"]`` for remediation).
    :param poll_interval: seconds between polls.
    """

    kind = "runs"
    listing_kind = ListingKind.FINISHED_RUNS
    listing_states = tuple(sorted(FINISHED_RUN_STATES))

    def __init__(
        self,
        *,
        remote_conn_id: str,
        external_dag_id: str,
        states: list[str] | None = None,
        poll_interval: float = 60.0,
    ):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        if not isinstance(external_dag_id, str) or not external_dag_id.strip():
            raise ValueError(f"external_dag_id must be a non-empty string, got {external_dag_id!r}")
        states = ["success"] if states is None else states
        if isinstance(states, str) or not states or not set(states) <= FINISHED_RUN_STATES:
            raise ValueError(
                f"states must be a non-empty list of {sorted(FINISHED_RUN_STATES)} "
                f"(runs fire when they finish), got {states!r}"
            )
        self.external_dag_id = external_dag_id
        self.states = sorted(states)

    @property
    def target(self) -> str:
        return self.external_dag_id

    def _kwargs(self) -> dict[str, Any]:
        return {"external_dag_id": self.external_dag_id, "states": self.states}

    async def resolve(self, client: RemoteAirflowClient) -> Hashable:
        await self.check_dag(client, self.external_dag_id)
        return self.target

    def mine(self, item: DagRun) -> bool:
        return item.dag_id == self.external_dag_id and item.state in self.states and item.end_date is not None

    def payload(self, item: DagRun, upstream: str) -> dict[str, Any]:
        return {"upstream": upstream, "run": item.to_dict()}
