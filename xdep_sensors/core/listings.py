"""Upstream listings read as feeds: what each listing is, an item's identity in it, and the read.

An item's identity (its key) is defined here once per listing and used by feeds, shared reads,
watchers and alerts. See ``docs/explanation/feeds.md``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.client.client import MAX_PAGES
from xdep_sensors.client.dialects import V2, Page, Request
from xdep_sensors.client.records import AssetEvent, DagRun, TaskInstance
from xdep_sensors.core.feeds import Feed, Step, new_feed

log = logging.getLogger(__name__)


class ListingKind(str, Enum):
    """The upstream listings read as feeds."""

    ASSET_EVENTS = "asset_events"
    STARTED_RUNS = "started_runs"
    FINISHED_RUNS = "finished_runs"
    ENDED_TASK_INSTANCES = "ended_task_instances"

    def __str__(self) -> str:
        return self.value


Key = int | str

# An asset event sits at its timestamp and is known by its id (C attribute getters: a wait asks
# about every event it sees, each cycle).
_event_position: Callable[[AssetEvent], tuple[datetime, Key]] = operator.attrgetter("timestamp", "id")
event_key: Callable[[AssetEvent], Key] = operator.attrgetter("id")


def run_key(run: DagRun) -> Key:
    return f"{run.dag_id}/{run.run_id}"


def task_instance_key(ti: TaskInstance) -> Key:
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/{ti.try_number}"


def _started_position(item: DagRun) -> tuple[datetime, Key]:
    return item.start_date, run_key(item)  # type: ignore[return-value]  # listed only once started


def _ended_position(item: DagRun) -> tuple[datetime, Key]:
    return item.end_date, run_key(item)  # type: ignore[return-value]  # listed only once ended


def _ti_position(item: TaskInstance) -> tuple[datetime, Key]:
    return item.end_date, task_instance_key(item)  # type: ignore[return-value]  # listed only once ended


POSITIONS: dict[ListingKind, Callable[[Any], tuple[datetime, Key]]] = {
    ListingKind.ASSET_EVENTS: _event_position,
    ListingKind.STARTED_RUNS: _started_position,
    ListingKind.FINISHED_RUNS: _ended_position,
    ListingKind.ENDED_TASK_INSTANCES: _ti_position,
}


@dataclass(frozen=True)
class Listing:
    """An upstream listing read as a feed.

    :param kind: which listing.
    :param asset_id: asset events of this asset only (``None``: every asset's events).
    :param source_dag_id: asset events produced by this DAG only (filtered by the server).
    :param dag_ids: runs / task instances of these DAGs (``None``: every DAG).
    :param states: the end states to list.
    """

    kind: ListingKind
    asset_id: int | None = None
    source_dag_id: str | None = None
    dag_ids: tuple[str, ...] | None = None
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ListingKind(self.kind))

    def time_filter(self, dialect: V2) -> bool:
        return self.kind is not ListingKind.ASSET_EVENTS or dialect.has_event_time_filter

    def ordered(self, dialect: V2) -> bool:
        """Whether the listing sorts by time (Airflow 2's task-instance listing cannot)."""
        return self.kind is not ListingKind.ENDED_TASK_INSTANCES or dialect.name != "v1"

    def request(self, dialect: V2, step: Step) -> Request:
        dag_ids = list(self.dag_ids) if self.dag_ids is not None else None
        paging: dict[str, Any] = {"offset": step.offset, "newest_first": step.newest_first}
        if self.kind is ListingKind.ASSET_EVENTS:
            return dialect.asset_events(
                asset_id=self.asset_id, source_dag_id=self.source_dag_id, since=step.lower, **paging
            )
        if self.kind is ListingKind.STARTED_RUNS:
            return dialect.started_runs(dag_ids, step.lower, **paging)
        if self.kind is ListingKind.FINISHED_RUNS:
            return dialect.finished_runs(dag_ids, list(self.states), step.lower, **paging)
        return dialect.ended_task_instances(dag_ids, list(self.states), step.lower, **paging)

    def parse(self, dialect: V2, body: Any) -> Page:
        if self.kind is ListingKind.ASSET_EVENTS:
            return dialect.parse_asset_events(body)
        if self.kind is ListingKind.ENDED_TASK_INSTANCES:
            page = dialect.parse_task_instances(body)
            return Page([ti for ti in page.items if ti.end_date is not None], page.total)
        page = dialect.parse_dag_runs(body)
        dated = "start_date" if self.kind is ListingKind.STARTED_RUNS else "end_date"
        return Page([r for r in page.items if getattr(r, dated) is not None], page.total)

    @property
    def position(self) -> Callable[[Any], tuple[datetime, Key]]:
        """``item -> (time, key)``: where an item of this listing sits, and its identity."""
        return POSITIONS[self.kind]


async def newest_page(client: RemoteAirflowClient, listing: Listing, since: datetime | None) -> Page:
    """One page of ``listing`` at or after ``since``, newest first: its newest items and total count."""
    return await client.call(lambda d: listing.request(d, Step(since, 0, newest_first=True)), listing.parse)


async def open_feed(client: RemoteAirflowClient, listing: Listing, start: datetime | None) -> Feed:
    """Return a feed over ``listing`` that counts items at or after ``start`` (``None``: all)."""
    dialect = await client.dialect()
    return new_feed(
        start,
        time_filter=listing.time_filter(dialect),
        position=listing.position,
        ordered=listing.ordered(dialect),
    )


async def read_feed(
    client: RemoteAirflowClient, feed: Feed, listing: Listing, *, max_pages: int = MAX_PAGES
) -> list[Any]:
    """The items of ``listing`` this feed never saw, oldest first, in at most ``max_pages`` requests.

    A read cut at ``max_pages`` continues there next time.
    """
    feed.budget = max_pages
    step: Step | None = feed.first_step()
    fresh: list[Any] = []
    for _ in range(max_pages):
        assert step is not None
        current = step
        page: Page = await client.call(lambda d: listing.request(d, current), listing.parse)
        new, step = feed.absorb(current, page.items, page.total)
        fresh.extend(new)
        if step is None:
            break
    else:
        assert step is not None
        feed.cut(step)
        log.warning(
            "read %d pages of %s from %s in one poll; continuing from %s on the next",
            max_pages,
            listing.kind,
            client.config.base_url,
            feed.mark.isoformat() if feed.mark else "the start",
        )
    fresh.sort(key=lambda item: (listing.position(item)[0], str(listing.position(item)[1])))
    return fresh


async def list_asset_events(
    client: RemoteAirflowClient,
    *,
    asset_ids: list[int] | None = None,
    since: datetime | None = None,
    source_dag_id: str | None = None,
) -> list[AssetEvent]:
    """Return events of ``asset_ids`` (all assets when ``None``) with timestamp >= ``since``, oldest first."""
    events: dict[Key, AssetEvent] = {}
    for asset_id in asset_ids if asset_ids is not None else [None]:
        listing = Listing(ListingKind.ASSET_EVENTS, asset_id=asset_id, source_dag_id=source_dag_id)
        feed = await open_feed(client, listing, since)
        events.update((event_key(e), e) for e in await read_feed(client, feed, listing))
    return sorted(events.values(), key=lambda e: (e.timestamp, e.id))


async def latest_asset_event(client: RemoteAirflowClient, asset_id: int) -> AssetEvent | None:
    """Return the newest event of an asset (one request, whatever its history)."""
    page = await newest_page(client, Listing(ListingKind.ASSET_EVENTS, asset_id=asset_id), None)
    return page.items[0] if page.items else None
