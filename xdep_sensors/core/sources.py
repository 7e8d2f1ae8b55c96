"""Where a probe gets upstream data: straight from the client, or from one shared poll cycle.

Sources know waits only by the :class:`RunWait` and :class:`AssetReader` protocols, so this module
imports no probe. See ``docs/guides/running-at-scale.md``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Any, Protocol

from xdep_sensors.client import AssetEvent, DagRun, RemoteAirflowClient, TaskInstance
from xdep_sensors.client.dialects import PAGE_LIMIT
from xdep_sensors.client.records import Asset, Dag, parse_dt
from xdep_sensors.core.feeds import Feed
from xdep_sensors.core.listings import Listing, ListingKind, open_feed, read_feed
from xdep_sensors.core.needs import RunNeed, RunNeedKind
from xdep_sensors.core.shared_reads import RunChanges, SharedReads
from xdep_sensors.core.visibility import hidden_producers


class RunWait(Protocol):
    """What a source needs of a DAG-run wait (``probes.DagRunWait``)."""

    external_dag_id: str
    run_id: str | None
    logical_date: str | None
    latest_after: str | None
    partition_key: str | None

    def pick(self, runs: list[DagRun]) -> DagRun | None: ...

    def find(
        self, runs: list[DagRun], covered_above: datetime | None, complete: bool
    ) -> tuple[DagRun | None, bool]: ...


class AssetReader(Protocol):
    """What a source needs of an asset wait (``probes.AssetProbe``)."""

    ids: dict[str, int]
    feeds: dict[str, Feed]
    caught_up: bool
    source_dag_id: str | None

    def start(self, label: str) -> datetime | None: ...


class DirectSource:
    """One request per question: what a lone trigger or ``poke`` uses."""

    def __init__(self, client: RemoteAirflowClient):
        self.client = client
        self._memo: dict[Hashable, asyncio.Future] = {}

    async def run_for(self, watch: RunWait, need: RunNeed, known: DagRun | None) -> DagRun | None:
        return await _lookup_run(self.client, watch)

    async def dag(self, dag_id: str) -> Dag:
        return await self.client.get_dag(dag_id)

    async def dag_ids(self) -> list[str]:
        return [d.dag_id for d in await self.client.list_dags()]

    async def task_ids(self, dag_id: str) -> list[str]:
        return await self.client.list_task_ids(dag_id)

    async def task_instances(self, dag_id: str, run_id: str, task_group_id: str | None) -> list[TaskInstance]:
        return await self.client.list_task_instances(dag_id, run_id, task_group_id=task_group_id)

    def known_asset(self, key: tuple[str, str]) -> int | None:
        return None

    def remember_asset(self, key: tuple[str, str], asset: Asset) -> None:
        return None

    def asset_record(self, asset_id: int) -> Asset | None:
        return None

    async def hidden_producers(self, assets: list[Asset], source_dag_id: str | None) -> dict[int, list[str]]:
        """Per asset id, its producing DAGs whose events are hidden from the connection's user."""
        return await hidden_producers(self.client, assets, source_dag_id)

    async def assets(self, key: tuple[str, str], among: list[tuple[str, str]] = ()) -> list[Asset]:  # type: ignore[assignment]
        """Assets whose URI or name (``key``) contains the value; one listing finds those of ``among`` too."""
        return await _find_asset(self.client, key, among, self._memo)

    async def asset_events(self, probe: AssetReader) -> list[AssetEvent]:
        """What is new for the probe's assets, through its own feeds."""
        events: list[AssetEvent] = []
        for label, asset_id in probe.ids.items():
            listing = Listing(ListingKind.ASSET_EVENTS, asset_id=asset_id, source_dag_id=probe.source_dag_id)
            feed = probe.feeds.get(label)
            if feed is None:
                feed = probe.feeds[label] = await open_feed(self.client, listing, probe.start(label))
            events += await read_feed(self.client, feed, listing)
        probe.caught_up = not any(f.behind for f in probe.feeds.values())
        return events


async def _find_asset(
    client: RemoteAirflowClient, key: tuple[str, str], among: list[tuple[str, str]], memo: dict[Hashable, Any]
) -> list[Asset]:
    """The assets one lookup key finds: from 3.2 one prefix listing for ``among``, else one per key."""
    by, value = key
    values = sorted({v for b, v in among if b == by} | {value})
    if len(values) > 1 and await client.alternatives():
        listed: list[Asset] = await _once(
            memo, ("find-assets", by, tuple(values)), lambda: client.find_assets(by, values)
        )
        if any(a.is_(by, value) for a in listed):
            return listed
    return await _once(memo, ("assets", key), lambda: client.list_assets(**{f"{by}_pattern": value}))


def _once(
    memo: dict[Hashable, asyncio.Future], key: Hashable, make: Callable[[], Awaitable[Any]]
) -> asyncio.Future:
    """One future per key: identical requests are made once (a failure reaches all)."""
    if key not in memo:
        memo[key] = asyncio.ensure_future(make())
    return memo[key]


async def _lookup_run(client: RemoteAirflowClient, watch: RunWait) -> DagRun | None:
    if watch.run_id:
        return await client.get_dag_run(watch.external_dag_id, watch.run_id)
    if watch.partition_key is not None:
        return await client.newest_partition_run(watch.external_dag_id, watch.partition_key)
    runs = await client.list_dag_runs(
        watch.external_dag_id,
        logical_date=parse_dt(watch.logical_date),
        run_after_gte=parse_dt(watch.latest_after),
        limit=1,
    )
    return runs[0] if runs else None


class BatchSource:
    """Answers every subscriber of one poll cycle with as few requests as possible."""

    def __init__(
        self,
        client: RemoteAirflowClient,
        first_bounds: dict[str, datetime | None],
        run_changes: RunChanges | None,
        asset_reads: SharedReads | None,
        asset_targets: set[int],
        new_dags: set[str] | None = None,
        first_waits: int = 0,
        read_started: bool = True,
        reader: tuple[Hashable, float] | None = None,
    ):
        self.client = client
        self.new_dags = new_dags or set()  # DAGs whose existence some wait checks this cycle
        self.first_waits = first_waits
        self.first_bounds = first_bounds  # dag_id -> lowest run_after a first look needs (None: any)
        self.run_changes = run_changes  # the poller's: they outlive this cycle
        self.read_started = read_started
        self.asset_reads = asset_reads  # the poller's: they outlive this cycle
        self.asset_targets = asset_targets
        self.reader = reader  # (who, fresh for seconds): see ``SharedReads.read_for``
        self.unresolved: list[tuple[str, str]] = []  # lookup keys of the assets new waits look up
        self.changes: dict[str, list[DagRun]] | None = None  # this cycle's run changes, by DAG
        self._memo: dict[Hashable, asyncio.Future] = {}

    async def prefetch(self) -> None:
        """Read the run changes before stepping the waits; a failure is kept for the steps to deliver.

        First looks come after this read, so a feed started from them misses nothing.
        """
        if self.run_changes is not None:
            try:
                self.changes = await self._once(("run-changes",), self._read_changes)
            except Exception:  # noqa: BLE001 - each wait's step gets the same error from the memo
                pass

    def _once(self, key: Hashable, make: Callable[[], Awaitable[Any]]) -> asyncio.Future:
        return _once(self._memo, key, make)

    async def _read_changes(self) -> dict[str, list[DagRun]]:
        assert self.run_changes is not None
        return await self.run_changes.read(self.client, started=self.read_started)

    async def run_for(self, watch: RunWait, need: RunNeed, known: DagRun | None) -> DagRun | None:
        """The run this wait is about (``None``: none yet), as cheaply as the cycle allows."""
        dag_id = need.dag_id
        if need.kind is RunNeedKind.FIRST_LOOK and dag_id in self.first_bounds:
            covered_above, complete, by_dag = await self._once(("first-look",), self._first_look)
            run, certain = watch.find(by_dag.get(dag_id, []), covered_above, complete)
            if run is not None or certain:
                return run
        elif need.from_changes and self.run_changes is not None:
            changes: dict[str, list[DagRun]] = await self._once(("run-changes",), self._read_changes)
            if not self.run_changes.fresh:  # else the feeds began this cycle: ask once, exactly
                latest = {known.run_id: known} if known is not None else {}
                latest.update((run.run_id, run) for run in changes.get(dag_id, ()))
                return watch.pick(list(latest.values()))
        # else asked for exactly, once per target and cycle
        key = ("run", dag_id, watch.run_id, watch.logical_date, watch.latest_after, watch.partition_key)
        return await self._once(key, lambda: _lookup_run(self.client, watch))

    async def _read_assets(self) -> dict[Hashable, list[AssetEvent]]:
        assert self.asset_reads is not None
        if self.reader is None:
            return await self.asset_reads.read(self.client, self.asset_targets)
        who, fresh_for = self.reader
        by_asset, _ = await self.asset_reads.read_for(who, self.client, self.asset_targets, fresh_for)
        return by_asset

    async def _first_look(self) -> tuple[datetime | None, bool, dict[str, list[DagRun]]]:
        """The newest runs of new waits' DAGs, a page per 100 waits: (covered above, complete, by DAG)."""
        bounds = list(self.first_bounds.values())
        since = None if None in bounds else min(bounds)  # type: ignore[type-var]
        items, complete = await self.client.newest_runs(
            sorted(self.first_bounds),
            run_after_gte=since,
            max_pages=max(1, -(-self.first_waits // PAGE_LIMIT)),
        )
        by_dag: dict[str, list[DagRun]] = {}
        for run in items:
            by_dag.setdefault(run.dag_id, []).append(run)
        oldest = [r.run_after for r in items if r.run_after is not None]
        return (min(oldest) if oldest else None), complete, by_dag

    async def dag(self, dag_id: str) -> Dag:
        """One upstream DAG (``NotFound`` when absent); the cycle's new waits share one listing."""
        if dag_id in self.new_dags and len(self.new_dags) > 2:
            listed: dict[str, Dag] = await self._once(
                ("dags",), lambda: self.client.find_dags(sorted(self.new_dags))
            )
            if dag_id in listed:
                return listed[dag_id]
        # not listed (absent, stale, or not worth a listing): ask for it alone
        return await self._once(("dag", dag_id), lambda: self.client.get_dag(dag_id))

    async def dag_ids(self) -> list[str]:
        """Every upstream DAG id, for close matches (once per cycle)."""
        dags: list[Dag] = await self._once(("all-dags",), self.client.list_dags)
        return [d.dag_id for d in dags]

    async def task_ids(self, dag_id: str) -> list[str]:
        return await self._once(("task-ids", dag_id), lambda: self.client.list_task_ids(dag_id))

    async def task_instances(self, dag_id: str, run_id: str, task_group_id: str | None) -> list[TaskInstance]:
        return await self._once(
            ("tis", dag_id, run_id, task_group_id),
            lambda: self.client.list_task_instances(dag_id, run_id, task_group_id=task_group_id),
        )

    def known_asset(self, key: tuple[str, str]) -> int | None:
        """An asset id another wait of this poll resolved already."""
        return self.asset_reads.asset_ids.get(key) if self.asset_reads is not None else None

    def remember_asset(self, key: tuple[str, str], asset: Asset) -> None:
        if self.asset_reads is not None:
            self.asset_reads.asset_ids[key] = asset.id
            self.asset_reads.asset_records[asset.id] = asset

    def asset_record(self, asset_id: int) -> Asset | None:
        """The asset as another wait of this poll found it."""
        return self.asset_reads.asset_records.get(asset_id) if self.asset_reads is not None else None

    async def hidden_producers(self, assets: list[Asset], source_dag_id: str | None) -> dict[int, list[str]]:
        """As ``DirectSource.hidden_producers``; the cycle's waits on the same assets share one look."""
        key = ("hidden", tuple(sorted(a.id for a in assets)), source_dag_id)
        return await self._once(key, lambda: hidden_producers(self.client, assets, source_dag_id))

    async def assets(self, key: tuple[str, str], among: list[tuple[str, str]] = ()) -> list[Asset]:  # type: ignore[assignment]
        """As ``DirectSource.assets``, in the listings of the cycle's new waits."""
        return await _find_asset(self.client, key, [*self.unresolved, *among], self._memo)

    async def asset_events(self, probe: AssetReader) -> list[AssetEvent]:
        """What is new for the probe's assets: this cycle's shared read, then its catch-up until done."""
        if self.asset_reads is None:
            return await DirectSource(self.client).asset_events(probe)
        reads = self.asset_reads
        by_asset = await self._once(("asset-events",), self._read_assets)
        events = [e for asset_id in probe.ids.values() for e in by_asset.get(asset_id, [])]
        if not probe.caught_up:
            # caught up only once this cycle's shared read covered all its assets
            done = set(probe.ids.values()) <= self.asset_targets
            for label, asset_id in probe.ids.items():
                start = probe.start(label)
                source = probe.source_dag_id
                items, complete = await self._once(
                    ("catch-up", asset_id, start, source),
                    functools.partial(reads.catch_up, self.client, asset_id, start, source),
                )
                events += items
                done = done and complete
            probe.caught_up = done
        return events
