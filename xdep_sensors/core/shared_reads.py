"""Shared reads of upstream feeds: what is new each cycle for many consumers, and their catch-ups.

The sensors' poll and the watchers' streams read through one :class:`SharedReads` per connection and
kind of listing. A new shared feed starts at the head and consumers catch up *after* the cycle's read,
so every item is in one or the other. See ``docs/explanation/feeds.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Hashable, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.client.dialects import PAGE_LIMIT
from xdep_sensors.client.records import Asset
from xdep_sensors.core.feeds import OVERLAP, Feed, new_feed
from xdep_sensors.core.listings import Listing, ListingKind, newest_page, open_feed, read_feed
from xdep_sensors.core.registry import PerLoop

log = logging.getLogger(__name__)

_clock = time.monotonic  # a benchmark swaps in its simulated clock
RETAIN = timedelta(minutes=10)  # delivered items kept for consumers joining later
UNION_MIN_TARGETS = 2
PER_TARGET_CYCLES = 10  # after a busy union read, cycles per asset before trying it again


def listing_for(
    kind: ListingKind, target: Hashable | None, states: tuple[str, ...] = (), source_dag_id: str | None = None
) -> Listing:
    """The listing of one target: an asset's events (``None``: every asset's), or one DAG's runs / tasks."""
    if kind == "asset_events":
        return Listing(ListingKind.ASSET_EVENTS, asset_id=target, source_dag_id=source_dag_id)  # type: ignore[arg-type]
    return Listing(kind, dag_ids=(target,), states=tuple(sorted(states)))  # type: ignore[arg-type]


@dataclass
class _Reader:
    targets: frozenset = frozenset()
    pending: dict = field(default_factory=dict)  # target -> items read since it last called
    took_last: bool = True  # it has had the last read made


@dataclass
class _CatchUp:
    feed: Feed
    listing: Listing
    items: list[Any] = field(default_factory=list)
    cycle: int = -1
    running: asyncio.Future | None = None


class SharedReads:
    """New items of one kind of listing, for a changing set of targets, read once per cycle.

    :param kind: ``"asset_events"``, ``"finished_runs"`` or ``"ended_task_instances"``.
    :param states: the states a runs / task-instance listing asks for.
    """

    def __init__(self, kind: ListingKind | str, states: tuple[str, ...] = ()):
        self.kind = ListingKind(kind)
        self.states = tuple(sorted(states))
        self.per_target: dict[Hashable, Feed] = {}
        self.union: Feed | None = None
        self.union_targets: tuple | None = None
        self.per_target_until = 0
        self._probe_since: datetime | None = None  # per-asset spells: where the union's count starts
        self._probe_cycle = 0
        self._union_covering = False  # the union's first read after a switch is under way
        self.cycle = 0
        self._catchups: dict[tuple, _CatchUp] = {}
        # items delivered lately, and since when per target (``None``: union): catch-ups from here are free
        self.position = Listing(self.kind).position
        self.retained: dict[Hashable, deque[tuple[datetime, Any]]] = {}
        self._newest: datetime | None = None
        self.covered: dict[Hashable, datetime] = {}
        self._dropped_until: datetime | None = None
        self.asset_ids: dict[tuple[str, str], int] = {}  # ("uri" | "name", value) -> upstream asset id
        self.asset_records: dict[int, Asset] = {}  # id -> the asset as first listed (its producers)
        self.readers: dict[Hashable, _Reader] = {}  # the sensors' poll, the watchers' stream
        self._last_read: tuple[float, frozenset] | None = None  # (when, targets)
        self.reads_made = 0
        self._lock: asyncio.Lock | None = None

    # listings -----------------------------------------------------------------------------------

    def listing(self, target: Hashable | None) -> Listing:
        """The listing of one target (``None``: of every asset)."""
        return listing_for(self.kind, target, self.states)

    def _union_listing(self, targets: tuple) -> Listing:
        if self.kind == "asset_events":
            return Listing(ListingKind.ASSET_EVENTS)
        return Listing(self.kind, dag_ids=targets, states=self.states)

    def target_of(self, item: Any) -> Hashable:
        return item.asset_id if self.kind == "asset_events" else item.dag_id

    # readers ------------------------------------------------------------------------------------

    async def read_for(
        self, reader: Hashable, client: RemoteAirflowClient, targets: Set[Hashable], fresh_for: float
    ) -> tuple[dict[Hashable, list[Any]], dict[Hashable, datetime]]:
        """What is new for ``targets`` since this reader's last call, and ``marks()``.

        A read another reader made under ``fresh_for`` seconds ago is handed over instead of a new one.
        """
        if not targets:
            self.leave(reader)
            return {}, {}
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            place = self.readers.setdefault(reader, _Reader())
            place.targets = frozenset(targets)
            last = self._last_read
            if (
                last is None
                or place.took_last
                or _clock() - last[0] > fresh_for
                or not place.targets <= last[1]
            ):
                wanted = frozenset().union(*(r.targets for r in self.readers.values()))
                by_target = await self.read(client, set(wanted))
                self._last_read = (_clock(), wanted)
                self.reads_made += 1
                for other in self.readers.values():
                    for target in other.targets:
                        if by_target.get(target):
                            other.pending.setdefault(target, []).extend(by_target[target])
                    other.took_last = False
            out, place.pending, place.took_last = place.pending, {}, True
            return {t: items for t, items in out.items() if t in place.targets}, self.marks()

    def leave(self, reader: Hashable) -> None:
        """This reader reads no more (until it calls again)."""
        if self.readers.pop(reader, None) is not None and not self.readers:
            self.per_target.clear()  # the next reader starts at the head
            self.union = self.union_targets = None
            self._last_read = None

    # the shared read ----------------------------------------------------------------------------

    async def read(self, client: RemoteAirflowClient, targets: Set[Hashable]) -> dict[Hashable, list[Any]]:
        """What is new for ``targets`` since the previous cycle (call once per cycle)."""
        self.cycle += 1
        self._catchups = {k: c for k, c in self._catchups.items() if c.cycle >= self.cycle - 1}
        if not targets:
            self.per_target.clear()
            self.union = self.union_targets = None
            return {}
        if self.kind == "asset_events" and (
            len(targets) < UNION_MIN_TARGETS
            or self.cycle < self.per_target_until
            or not await self._union_is_cheaper(client, targets)
        ):
            items = await self._read_per_target(client, targets)
        else:
            items = await self._read_union(client, targets)
        out: dict[Hashable, list[Any]] = {}
        for item in items:
            out.setdefault(self.target_of(item), []).append(item)
        self._retain(items)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "shared %s read, cycle %d, targets %s: %d new %s",
                self.kind,
                self.cycle,
                sorted(targets, key=str),
                len(items),
                {t: [self.position(i)[1] for i in v] for t, v in out.items()},
            )
        return out

    def _retain(self, items: list[Any]) -> None:
        feeds = {None: self.union} if self.union is not None else dict(self.per_target)
        self.covered = {t: c for t, c in self.covered.items() if t in feeds}
        for target, feed in feeds.items():
            if target not in self.covered and feed.established and feed.mark:
                self.covered[target] = feed.mark  # everything after it is delivered
        for item in items:
            when = self.position(item)[0]
            self.retained.setdefault(self.target_of(item), deque()).append((when, item))
            self._newest = when if self._newest is None else max(self._newest, when)
        if self._newest is None:
            return
        cutoff = self._newest - RETAIN
        for target in list(self.retained):
            kept = self.retained[target]
            while kept and kept[0][0] < cutoff:
                dropped = kept.popleft()[0]
                self._dropped_until = (
                    dropped if self._dropped_until is None else max(self._dropped_until, dropped)
                )
            if not kept:
                del self.retained[target]

    def _from_retained(self, target: Hashable, start: datetime | None) -> list[Any] | None:
        """Items of ``target`` from ``start`` out of what was delivered, if that covers it."""
        covered = self.covered.get(target, self.covered.get(None))
        if start is None or covered is None or start <= covered:
            return None
        if self._dropped_until is not None and start <= self._dropped_until:
            return None  # older than what is kept
        return [item for when, item in self.retained.get(target, ()) if when >= start]

    async def _read_per_target(self, client: RemoteAirflowClient, targets: Set[Hashable]) -> list[Any]:
        if self.union is not None:  # switching from the union: each asset continues from it
            for target in targets:
                self.per_target.setdefault(target, self.union.derive(self.listing(target).position))
            self.union = self.union_targets = None
        for gone in set(self.per_target) - targets:
            del self.per_target[gone]
        items: list[Any] = []
        for target in sorted(targets, key=str):
            listing = self.listing(target)
            feed = self.per_target.get(target)
            if feed is None:
                feed = self.per_target[target] = await self._at_head(client, listing)
            items += await read_feed(client, feed, listing)
        return items

    async def _union_is_cheaper(self, client: RemoteAirflowClient, targets: Set[Hashable]) -> bool:
        """Whether the union would now be cheaper than per-asset reads: one count request (API v2 only)."""
        if self.union is not None or not self.per_target:
            return True
        marks = [f.mark for f in self.per_target.values() if f.mark is not None]
        if not marks or not (await client.dialect()).has_event_time_filter:
            self.per_target_until = self.cycle + PER_TARGET_CYCLES
            return False
        since = self._probe_since or max(marks)
        cycles, self._probe_cycle = max(self.cycle - self._probe_cycle, 1), self.cycle
        union = Listing(ListingKind.ASSET_EVENTS)
        page = await newest_page(client, union, since)
        if page.items:  # the newest event: where the next count starts
            self._probe_since = union.position(page.items[0])[0]
        busy = page.total is None or page.total / cycles > PAGE_LIMIT * (len(targets) - 1)
        if busy:
            self.per_target_until = self.cycle + PER_TARGET_CYCLES
        return not busy

    async def _read_union(self, client: RemoteAirflowClient, targets: Set[Hashable]) -> list[Any]:
        key = tuple(sorted(targets, key=str)) if self.kind != "asset_events" else None
        listing = self._union_listing(key or ())
        if self.union is None or self.union_targets != key:
            previous = [self.union] if self.union is not None else list(self.per_target.values())
            # From per-asset reads, start at the newest event the count saw, not at quiet assets' old
            # marks; the first read covers the overlap window behind it.
            switching = self.per_target and self._probe_cycle == self.cycle
            head = self._probe_since if switching else None
            self.union = (
                Feed.merged(previous, listing.position, head)
                if previous
                else await self._at_head(client, listing)
            )
            self.union_targets = key
            self.per_target.clear()
            self._union_covering = bool(previous)
        items = await read_feed(client, self.union, listing)
        if self.kind == "asset_events":
            covering, self._union_covering = self._union_covering, self._union_covering and self.union.behind
            # busy: the union's pages outnumber the per-asset listings
            if not covering and len(items) > PAGE_LIMIT * (len(targets) - 1):
                self.per_target_until = self.cycle + PER_TARGET_CYCLES
                self._probe_since, self._probe_cycle = self.union.mark, self.cycle  # count from here later
                log.info(
                    "upstream %s is busy (%d new asset events per poll, %d watched assets): reading "
                    "one listing per asset",
                    client.config.base_url,
                    len(items),
                    len(targets),
                )
        return items

    def marks(self) -> dict[Hashable, datetime]:
        """How far the shared read has got, per target (``None`` key: the union)."""
        if self.union is not None:
            return {None: self.union.mark} if self.union.mark is not None else {}
        return {target: feed.mark for target, feed in self.per_target.items() if feed.mark is not None}

    @staticmethod
    async def _at_head(client: RemoteAirflowClient, listing: Listing) -> Feed:
        dialect = await client.dialect()
        return new_feed(
            None,
            time_filter=listing.time_filter(dialect),
            position=listing.position,
            at_head=True,
            ordered=listing.ordered(dialect),
        )

    # catch-ups ----------------------------------------------------------------------------------

    async def catch_up(
        self,
        client: RemoteAirflowClient,
        target: Hashable,
        start: datetime | None,
        source_dag_id: str | None = None,
    ) -> tuple[list[Any], bool]:
        """Every item of ``target`` from ``start`` read so far, and whether that reaches now.

        A catch-up cut at the page cap continues on the next cycle's call; one not asked for is dropped.
        """
        kept = self._from_retained(target, start)
        if kept is not None:
            log.debug(
                "catch-up of %s from %s: %d items from what the shared read delivered",
                target,
                start,
                len(kept),
            )
            return kept, True
        key = (target, start, source_dag_id)
        catchup = self._catchups.get(key)
        if catchup is None:
            listing = listing_for(self.kind, target, self.states, source_dag_id)
            catchup = self._catchups[key] = _CatchUp(await open_feed(client, listing, start), listing)
        if catchup.cycle != self.cycle:
            catchup.cycle = self.cycle
            catchup.running = asyncio.ensure_future(self._advance(client, catchup))
        try:
            await asyncio.shield(catchup.running)  # type: ignore[arg-type]
        except Exception:
            self._catchups.pop(key, None)
            raise
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "catch-up of %s from %s, cycle %d: %d items, the last %s",
                target,
                start,
                self.cycle,
                len(catchup.items),
                [self.position(i)[1] for i in catchup.items[-5:]],
            )
        return catchup.items, not catchup.feed.behind

    @staticmethod
    async def _advance(client: RemoteAirflowClient, catchup: _CatchUp) -> None:
        catchup.items += await read_feed(client, catchup.feed, catchup.listing)


_BY_CONNECTION: PerLoop[tuple[str, str], SharedReads] = PerLoop(weak=True)


def asset_reads_for(config: ClientConfig) -> SharedReads:
    """The asset-event reads of one connection in this event loop, shared by the poll and the stream."""
    return _BY_CONNECTION.get(
        (config.conn_id, config.base_url), lambda: SharedReads(ListingKind.ASSET_EVENTS)
    )


STARTED_RUNS = Listing(ListingKind.STARTED_RUNS)
ENDED_RUNS = Listing(ListingKind.FINISHED_RUNS, states=("failed", "success"))


class _Slot:
    """One change feed of ``RunChanges`` and where it (re)starts."""

    __slots__ = ("listing", "feed", "since")

    def __init__(self, listing: Listing):
        self.listing = listing
        self.feed: Feed | None = None
        self.since: datetime | None = None


class RunChanges:
    """What changed in the upstream's DAG runs since the previous cycle: what DAG-run waits read.

    Runs that started and runs that ended, each read only while a wait needs it. A feed starts at the
    first looks (``look_from``) less the overlap window; with no such time, at the head, and ``fresh``
    tells the waits to ask for their runs exactly, once. See ``docs/explanation/feeds.md``.
    """

    def __init__(self) -> None:
        self.started = _Slot(STARTED_RUNS)
        self.ended = _Slot(ENDED_RUNS)
        self.fresh = False

    def look_from(self, when: datetime) -> None:
        """First looks were made at ``when``: feeds not reading yet start there."""
        for slot in (self.started, self.ended):
            if slot.feed is None and slot.since is None:
                slot.since = when

    def keep(self, started: bool, ended: bool) -> None:
        """Drop the feeds no wait needs this cycle."""
        for slot, needed in ((self.started, started), (self.ended, ended)):
            if not needed:
                slot.feed = slot.since = None

    @property
    def reading(self) -> bool:
        return self.started.feed is not None or self.ended.feed is not None

    async def read(self, client: RemoteAirflowClient, started: bool = True) -> dict[str, list[Any]]:
        """The runs new to the feeds this cycle, by DAG id: started ones first, oldest first."""
        slots = [self.started, self.ended] if started else [self.ended]
        self.fresh = any(slot.feed is None and slot.since is None for slot in slots)
        out: dict[str, list[Any]] = {}
        for slot in slots:
            began = datetime.now(timezone.utc)
            if slot.feed is None:
                slot.feed = (
                    await SharedReads._at_head(client, slot.listing)
                    if slot.since is None
                    else await open_feed(client, slot.listing, slot.since - OVERLAP)
                )
            try:
                for run in await read_feed(client, slot.feed, slot.listing):
                    out.setdefault(run.dag_id, []).append(run)
            except BaseException:
                slot.feed = None  # it may have marked items read: restart from since
                raise
            slot.since = began
        return out

    def drop(self) -> None:
        self.keep(False, False)
