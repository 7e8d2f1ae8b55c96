"""One look at the upstream: fetch what a wait needs, then hand it to a pure decision.

Both the trigger and the sensor's ``poke`` run a probe. Watches are plain values: trigger kwargs as is.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, cast

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.client.records import Asset, AssetEvent, DagRun, TaskInstance, parse_dt
from xdep_sensors.core.cursors import Cursor
from xdep_sensors.core.decisions import (
    FINISHED_RUN_STATES,
    Decision,
    StateRules,
    decide_assets,
    decide_dag_run,
)
from xdep_sensors.core.feeds import Feed
from xdep_sensors.core.listings import event_key
from xdep_sensors.core.names import close_matches
from xdep_sensors.core.needs import AssetNeed, RunNeed, RunNeedKind
from xdep_sensors.core.sources import BatchSource, DirectSource
from xdep_sensors.core.visibility import producers_line, source_not_visible, visible_dag
from xdep_sensors.errors import ConfigurationError, NotFound, NotVisible

if TYPE_CHECKING:
    from xdep_sensors.core.sources import RunWait

log = logging.getLogger(__name__)

# Airflow's own run ids: "<run type>__<ISO date>" (+ "_<random>" when there is no logical date).
_RUN_ID_DATE = re.compile(r"^[a-z_]+?__(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?)")


def run_id_date(run_id: str) -> datetime | None:
    """The date in an Airflow-made run id (``run_after``; the logical date before 3.3), else None."""
    match = _RUN_ID_DATE.match(run_id)
    if match is None:
        return None
    try:
        value = parse_dt(match.group(1))
    except ValueError:
        return None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value - timedelta(seconds=1) if value is not None else None


@dataclass(frozen=True)
class DagRunWait:
    """What a DAG-run wait looks for; every field is a plain JSON value."""

    external_dag_id: str
    run_id: str | None = None
    logical_date: str | None = None  # ISO-8601, timezone-aware
    latest_after: str | None = None  # ISO-8601, timezone-aware
    partition_key: str | None = None  # the newest run for this partition (Airflow 3.2+ upstreams)
    allowed_states: list[str] = field(default_factory=lambda: ["success"])
    failed_states: list[str] = field(default_factory=lambda: ["failed"])
    skipped_states: list[str] = field(default_factory=list)
    task_ids: list[str] | None = None
    task_group_id: str | None = None
    check_existence: bool = True

    def __post_init__(self) -> None:
        # tuples of strings are not tracked by the garbage collector
        for name in ("allowed_states", "failed_states", "skipped_states", "task_ids"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def to_kwargs(self) -> dict[str, Any]:
        """Plain JSON values: the state and task lists as lists (no partition key: as before partitions)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if v is not None or k != "partition_key"
        }

    @property
    def narrowed(self) -> bool:
        return bool(self.task_ids) or bool(self.task_group_id)

    def pick(self, runs: list[DagRun]) -> DagRun | None:
        """This wait's run among runs of its DAG (as the direct lookups would choose)."""
        if self.run_id:
            return next((r for r in runs if r.run_id == self.run_id), None)
        if self.logical_date:
            wanted = parse_dt(self.logical_date)
            return next((r for r in runs if r.logical_date == wanted), None)
        if self.partition_key is not None:  # exactly this key: the server's filters match more
            eligible = [r for r in runs if r.run_after is not None and r.partition_key == self.partition_key]
            return max(eligible, key=lambda r: r.run_after, default=None)  # type: ignore[arg-type, return-value]
        after = parse_dt(self.latest_after)
        eligible = [r for r in runs if r.run_after is not None and (after is None or r.run_after >= after)]
        return max(eligible, key=lambda r: r.run_after, default=None)  # type: ignore[arg-type, return-value]

    def find(
        self, runs: list[DagRun], covered_above: datetime | None, complete: bool
    ) -> tuple[DagRun | None, bool]:
        """This wait's run in one page of newest runs, and whether the page's answer is certain.

        :param covered_above: the page holds every run with a later ``run_after`` than this.
        :param complete: the page is the whole listing.

        A run's ``run_after`` never precedes its logical date; a run id not shown is asked for exactly.
        """
        run = self.pick(runs)
        if run is not None:
            return run, True  # a newer run of its partition would be on the page too
        if self.run_id:
            return None, False
        if self.partition_key is not None:
            return None, complete
        if self.logical_date:
            logical = parse_dt(self.logical_date)
            return None, complete or (
                covered_above is not None and logical is not None and logical > covered_above
            )
        after = parse_dt(self.latest_after)
        return None, complete or (after is not None and covered_above is not None and after > covered_above)

    @property
    def decisive_states(self) -> frozenset[str]:
        return frozenset(self.allowed_states) | frozenset(self.failed_states) | frozenset(self.skipped_states)

    @property
    def selector(self) -> str:
        if self.run_id:
            return f"run_id {self.run_id}"
        if self.logical_date:
            return f"logical date {self.logical_date}"
        if self.partition_key is not None:
            return f"partition {self.partition_key}"
        return f"run_after >= {self.latest_after}"

    @property
    def rules(self) -> StateRules:
        return StateRules(
            frozenset(self.allowed_states), frozenset(self.failed_states), frozenset(self.skipped_states)
        )


class DagRunProbe:
    """Looks at one upstream DAG run per call; existence and pause are checked until known."""

    def __init__(self, watch: DagRunWait, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.watch = watch
        self.log = logger or log
        self._dag_known = False
        self._unseen = f"{watch.external_dag_id}: DAG not found upstream yet"
        self._last_run: DagRun | None = None
        w = watch
        self._bound = parse_dt(w.latest_after or w.logical_date) if not w.run_id else run_id_date(w.run_id)
        # a queued run has no start date: no listing of changes shows it
        self._exact = "queued" in w.decisive_states
        # once the run is known only its end decides (a narrowed wait reports its state too); a newer
        # run may still come for "the newest after" or a partition: every change of the DAG's runs counts
        newest = w.latest_after or w.partition_key is not None
        self._end_decides = not newest and not w.narrowed and w.decisive_states <= FINISHED_RUN_STATES
        # an unchanged view returns the same decision object
        self._seen_run: DagRun | None = None
        self._seen_tis: list[TaskInstance] | None = None
        self._decision: Decision | None = None

    async def _check_dag(self, source: DirectSource | BatchSource) -> bool:
        w = self.watch
        client = source.client
        if w.partition_key is not None and not await client.partitions():
            raise ConfigurationError(
                f"partition_key={w.partition_key!r}: the upstream at {client.config.where} runs Airflow "
                f"{await client.version() or 'before 3.2'}, which has no partitioned runs (Airflow 3.2+)",
                hint="wait by run_id, logical_date or latest_after there, or upgrade the upstream to "
                "Airflow 3.2 or later",
            )
        try:
            dag = await visible_dag(client, w.external_dag_id, source.dag, source.dag_ids)
        except NotVisible as hidden:
            if w.check_existence:
                raise
            self._unseen = f"{w.external_dag_id}: {hidden}; waiting for it to appear"
            return False
        except NotFound:
            if not w.check_existence:
                return False
            nearby = close_matches(w.external_dag_id, await source.dag_ids())
            raise NotFound(
                f"DAG {w.external_dag_id!r} does not exist upstream at {client.config.where}",
                hint=(f"close matches: {', '.join(nearby)}" if nearby else "check external_dag_id")
                + "; or set check_existence=False to wait for it to appear",
            ) from None
        if w.check_existence and w.task_ids:
            known = await source.task_ids(w.external_dag_id)
            unknown = [t for t in w.task_ids if t not in known]
            if unknown:
                nearby = sorted({m for t in unknown for m in close_matches(t, known)})
                raise NotFound(
                    f"task(s) {', '.join(unknown)} do not exist in upstream DAG {w.external_dag_id!r}",
                    hint=f"close matches: {', '.join(nearby)}" if nearby else "check task_ids",
                )
        if dag.is_paused:
            self.log.warning(
                "upstream DAG %s is paused: no new runs will start until it is unpaused", w.external_dag_id
            )
        return True

    def need(self) -> RunNeed:
        """What a shared poll must read for this wait's next look (see :class:`RunNeedKind`)."""
        w = self.watch
        if not self._dag_known:
            return RunNeed(RunNeedKind.FIRST_LOOK, w.external_dag_id, self._bound)
        if self._exact:
            return RunNeed(RunNeedKind.EXACT, w.external_dag_id)
        if self._last_run is not None and self._end_decides:
            return RunNeed(RunNeedKind.ENDED_RUNS, w.external_dag_id)
        return RunNeed(RunNeedKind.RUN_CHANGES, w.external_dag_id)

    async def __call__(self, client: RemoteAirflowClient) -> Decision:
        return await self.step(DirectSource(client))

    def unchanged(self, source: DirectSource | BatchSource) -> Decision | None:
        """The last decision, when the cycle's run changes hold none of this wait's DAG, else None.

        Not for a wait narrowed to tasks: its task instances change without its run.
        """
        if not isinstance(source, BatchSource):
            return None
        changes = source.changes
        if (
            changes is None
            or source.run_changes is None
            or source.run_changes.fresh
            or self._decision is None
            or self.watch.narrowed
            or not self.need().from_changes
            or self.watch.external_dag_id in changes
        ):
            return None
        return self._decision if self._seen_run is self._last_run and self._seen_tis is None else None

    async def step(self, source: DirectSource | BatchSource) -> Decision:
        """One look, through ``source`` (direct requests, or a shared poll)."""
        w = self.watch
        client = source.client
        need = self.need()
        if not self._dag_known:
            self._dag_known = await self._check_dag(source)
            if not self._dag_known:
                return Decision("waiting", self._unseen)
        try:
            # frozen, so read-only: a RunWait for every use a source makes of it
            run = await source.run_for(cast("RunWait", w), need, self._last_run) or self._last_run
            tis = None
            if run is not None and w.narrowed:
                tis = await source.task_instances(w.external_dag_id, run.run_id, w.task_group_id)
                if w.task_ids:
                    tis = [ti for ti in tis if ti.task_id in w.task_ids]
        except NotFound:
            if w.check_existence:
                raise
            self._dag_known = False
            return Decision("waiting", f"{w.external_dag_id}: DAG not found upstream yet")
        if run is not None:
            self._last_run = run
        if self._decision is not None and self._seen_run == run and self._seen_tis == tis:
            return self._decision  # the same object: a shared poll skips it
        url = client.run_url(w.external_dag_id, run.run_id) if run else None
        decision = decide_dag_run(
            run,
            w.rules,
            dag_id=w.external_dag_id,
            what=w.selector,
            url=url,
            task_instances=tis,
            task_ids=w.task_ids,
        )
        self._seen_run, self._seen_tis, self._decision = run, tis, decision
        return decision


@dataclass(frozen=True)
class AssetRef:
    """One watched upstream asset: by URI, or by name (Airflow 3)."""

    uri: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.uri or self.name or ""

    def lookup_key(self, names: bool) -> tuple[str, str]:
        """By URI, or by name where the upstream has names (API v2)."""
        return ("name", self.label) if self.uri is None and names else ("uri", self.label)

    def matches(self, asset: Asset) -> bool:
        return asset.is_("uri", self.uri) if self.uri is not None else asset.is_("name", self.name or "")


PARTITION_MARK = " #partition="


class PartitionRule(Protocol):
    """Which upstream partition keys feed a wait's key (Airflow's partition mappers, from above)."""

    @property
    def rollup(self) -> bool:
        """True: the wait ends when a window of upstream keys has arrived, as a wait policy says."""
        ...

    def feeds(self, upstream_key: str | None) -> bool: ...

    def expected(self) -> frozenset[str]: ...

    def satisfied(self, arrived: set[str]) -> tuple[bool, str | None]:
        """(whether the arrived keys end the wait, why they never can: ``None`` while they can)."""
        ...


@dataclass(frozen=True)
class ExactKey:
    """The rule without a mapper: an event feeds the wait when its key is exactly the wait's."""

    key: str
    rollup: bool = False

    def feeds(self, upstream_key: str | None) -> bool:
        return upstream_key == self.key

    def expected(self) -> frozenset[str]:
        return frozenset({self.key})

    def satisfied(self, arrived: set[str]) -> tuple[bool, str | None]:
        return self.key in arrived, None


def _some(keys: list[str], shown: int = 6) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def cursor_key(label: str, partition_key: str | None) -> str:
    """A cursor's key in a task's cursor store: the asset's label, then the partition key if any."""
    return label if partition_key is None else f"{label}{PARTITION_MARK}{partition_key}"


@dataclass(frozen=True)
class AssetWait:
    """What an asset wait looks for; every field is a plain JSON value.

    ``cursors``: :meth:`cursor_key` -> ``Cursor`` dict; with ``since``, events at or after it are new
    instead. With ``partition_key`` only events of that partition count, each consumed once per key.
    """

    assets: list[dict[str, str | None]]
    require: str = "all"
    source_dag_id: str | None = None
    since: str | None = None
    cursors: dict[str, dict[str, Any]] = field(default_factory=dict)
    check_existence: bool = True
    partition_key: str | None = None
    # label -> Airflow's encoded partition mapper (JSON text of what a serialized DAG holds): which
    # upstream keys count
    partition_mappers: dict[str, str] | None = None

    def to_kwargs(self) -> dict[str, Any]:
        """Plain JSON values (no partition fields: a stored trigger of a release before partitions)."""
        unset = ("partition_key", "partition_mappers")
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in unset}

    def cursor_key(self, label: str) -> str:
        """Where an asset's consumed events are recorded: per asset, and per partition key if any."""
        return cursor_key(label, self.partition_key)

    @property
    def refs(self) -> list[AssetRef]:
        return [AssetRef(a.get("uri"), a.get("name")) for a in self.assets]


class AssetProbe:
    """Looks for new upstream events of the watched assets; asset ids are resolved once.

    Matched events wait in ``pending`` until the decision (``require="all"``: one may wait for another).
    """

    def __init__(
        self,
        watch: AssetWait,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        rules: dict[str, PartitionRule] | None = None,
    ):
        """:param rules: per asset label, which upstream partition keys count (default: exactly the key)."""
        self.watch = watch
        self.log = logger or log
        self.refs = watch.refs
        self.since = parse_dt(watch.since)
        self.ids: dict[str, int] = {}
        self.cursors = {
            ref.label: Cursor.from_dict(watch.cursors.get(watch.cursor_key(ref.label))) for ref in watch.refs
        }
        self.partition_key = key = watch.partition_key
        self.rules: dict[str, PartitionRule] = {}
        if key is not None:
            exact: dict[str, PartitionRule] = {ref.label: ExactKey(key) for ref in watch.refs}
            self.rules = exact | (rules or {})
        self._partitions_checked = key is None
        self.feeds: dict[str, Feed] = {}  # when it polls alone
        self.caught_up = False  # read from each cursor to now once: then a shared poll suffices
        self.source_dag_id = watch.source_dag_id
        self.pending: dict[str, dict[int | str, AssetEvent]] = {ref.label: {} for ref in watch.refs}
        self._last: Decision | None = None
        self.records: dict[str, Asset] = {}  # label -> the asset as listed when resolved
        # label -> its producing DAGs whose events the user may not see (Airflow 3.3+), told once
        self.hidden: dict[str, list[str]] = {}
        self._looked: set[str] = set()  # labels whose producers were looked at

    async def _resolve(self, source: DirectSource | BatchSource) -> list[str]:
        """Fill ``self.ids``; return the labels still unknown upstream."""
        client = source.client
        dialect = await client.dialect()
        keys = [ref.lookup_key(dialect.has_asset_names) for ref in self.refs if ref.label not in self.ids]
        for ref in self.refs:
            if ref.label in self.ids:
                continue
            key = ref.lookup_key(dialect.has_asset_names)
            asset_id = source.known_asset(key)
            record = None
            if asset_id is None:
                found = await source.assets(key, among=keys)
                exact = [a for a in found if ref.matches(a) or AssetRef(uri=ref.label).matches(a)]
                record = exact[0] if exact else None
                asset_id = record.id if record else None
            if asset_id is not None:
                self.ids[ref.label] = asset_id
                if record is not None:
                    self.records[ref.label] = record
                    source.remember_asset(key, record)
                self.caught_up = False  # a newly found asset needs its own catch-up
        missing = [ref.label for ref in self.refs if ref.label not in self.ids]
        if missing and self.watch.check_existence:
            known = await client.list_assets()
            names = sorted({a.uri for a in known} | {a.name for a in known})
            nearby = sorted({m for label in missing for m in close_matches(label, names)})
            raise NotFound(
                f"asset(s) {', '.join(missing)} do not exist upstream at {client.config.where}",
                hint=(f"close matches: {', '.join(nearby)}" if nearby else "check the asset URI or name")
                + "; or set check_existence=False to wait for it to appear",
            )
        return missing

    async def _check_producers(self, source: DirectSource | BatchSource) -> None:
        """Say once, at the first look, which producers' events the user cannot see (Airflow 3.3+ leaves
        them out of the listing in silence); fail when ``source_dag_id`` is one: nothing could count."""
        labels = [label for label in self.ids if label not in self._looked]
        if not labels:
            return
        client = source.client
        if not await client.events_scoped():
            self._looked.update(labels)
            return
        dialect = await client.dialect()
        records: dict[str, Asset] = {}
        for ref in self.refs:
            if ref.label not in labels:
                continue
            record = self.records.get(ref.label) or source.asset_record(self.ids[ref.label])
            if record is None:
                found = await source.assets(ref.lookup_key(dialect.has_asset_names))
                record = next((a for a in found if a.id == self.ids[ref.label]), None)
            if record is not None:
                records[ref.label] = record
        hidden = await source.hidden_producers(list(records.values()), self.source_dag_id)
        self._looked.update(labels)  # looked at (a failed look above is tried again at the next one)
        for label, record in records.items():
            dags = hidden.get(record.id)
            if not dags:
                continue
            if self.source_dag_id in dags:
                raise source_not_visible(client, self.source_dag_id)
            self.hidden[label] = dags
            self.log.warning("%s; waiting for events it can see", producers_line(client, label, dags))

    def adopt_ids(self, known: dict[tuple[str, str], int], by_name: bool) -> None:
        """Take asset ids the shared poll resolved for other waits."""
        for ref in self.refs:
            key = ref.lookup_key(by_name)
            if ref.label not in self.ids and key in known:
                self.ids[ref.label] = known[key]
                self.caught_up = False

    def unchanged(self, source: DirectSource | BatchSource) -> Decision | None:
        """Never known without a step."""
        return None

    def need(self) -> AssetNeed:
        """What a shared poll must read for this wait: its resolved assets' events."""
        return AssetNeed(frozenset(self.ids.values()))

    def start(self, label: str) -> datetime | None:
        """The earliest event time that can count: ``since``, else the cursor's floor."""
        return self.since or self.cursors[label].start

    def _is_new(self, label: str, event: AssetEvent) -> bool:
        rule = self.rules.get(label)
        if rule is not None and not rule.feeds(event.partition_key):
            return False  # not this partition's (exactly; or as the mapper says)
        return event.timestamp >= self.since if self.since else self.cursors[label].is_new(event)

    async def _check_partitions(self, client: RemoteAirflowClient) -> None:
        """A partition wait needs an upstream whose events carry partition keys (Airflow 3.2+)."""
        if not await client.partitions():
            raise ConfigurationError(
                f"partition_key={self.partition_key!r}: the upstream at {client.config.where} runs Airflow "
                f"{await client.version() or 'before 3.2'}, whose asset events have no partition keys "
                "(Airflow 3.2+)",
                hint="wait without partition_key there, or upgrade the upstream to Airflow 3.2 or later",
            )
        self._partitions_checked = True

    async def __call__(self, client: RemoteAirflowClient) -> Decision:
        return await self.step(DirectSource(client))

    def _windows(self, new: dict[str, list[AssetEvent]]) -> tuple[dict[str, list[AssetEvent]], list[str]]:
        """A roll-up's events count only once its window is complete as its wait policy says: until
        then its asset has none; and a line per roll-up of the keys arrived and missing."""
        counted, lines = dict(new), []
        for label, rule in self.rules.items():
            if not rule.rollup:
                continue
            expected = rule.expected()
            arrived = {e.partition_key for e in new[label] if e.partition_key is not None} & expected
            done, never = rule.satisfied(arrived)
            if never is not None:
                raise ConfigurationError(
                    f"{label}: partition {self.partition_key} can never be complete: {never}",
                    hint="check the roll-up's window and wait policy",
                )
            line = f"{label}: {len(arrived)} of {len(expected)} partitions of {self.partition_key} arrived"
            if not done:
                counted[label] = []
                line += f"; missing {_some(sorted(expected - arrived))}"
            lines.append(line)
        return counted, lines

    async def step(self, source: DirectSource | BatchSource) -> Decision:
        """One look, through ``source`` (direct requests, or a shared poll)."""
        w = self.watch
        client = source.client
        if not self._partitions_checked:
            await self._check_partitions(client)
        missing = await self._resolve(source)
        await self._check_producers(source)
        events = await source.asset_events(self) if self.ids else []
        for event in events:
            if w.source_dag_id is not None and event.source_dag_id != w.source_dag_id:
                continue
            for label, asset_id in self.ids.items():
                if event.asset_id == asset_id and self._is_new(label, event):
                    self.pending[label][event_key(event)] = event
        new = {
            label: sorted(self.pending[label].values(), key=lambda e: (e.timestamp, e.id))
            for label in self.pending
        }
        new, windows = self._windows(new)
        decision = decide_assets(new, require="any" if w.require == "any" else "all")
        message = decision.message + (f"; not upstream yet: {', '.join(missing)}" if missing else "")
        message += "".join(f"; {line}" for line in windows)
        message += "".join(
            f"; {label}: cannot see producer {', '.join(d)}" for label, d in self.hidden.items()
        )
        if not decision.done:
            if self._last is not None and self._last.message == message:
                return self._last  # the same object: nothing changed
            self._last = Decision("waiting", message)
            return self._last
        cursors = {
            w.cursor_key(label): self.cursors[label].advance(evts).to_dict() for label, evts in new.items()
        }
        url = client.asset_url(self.ids[self.refs[0].label]) if self.refs[0].label in self.ids else None
        return Decision(
            "success",
            message,
            {
                "events": decision.result,
                "cursors": cursors,
                "url": url,
                "started_from": w.cursors,
                "upstream": client.config.ui_base,
            },
        )
