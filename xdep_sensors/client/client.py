"""``RemoteAirflowClient``: typed, version-independent reads of an upstream Airflow REST API."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from typing import Any, AsyncIterator, Callable

from xdep_sensors.client.dialects import DIALECTS, PAGE_LIMIT, V2, Page, Request, listing_ends
from xdep_sensors.client.records import Asset, Dag, DagRun, TaskInstance
from xdep_sensors.client.session import BaseTransport, ClientConfig, new_transport
from xdep_sensors.errors import BadResponse, ConfigurationError, NotFound, XdepError

log = logging.getLogger(__name__)

MAX_PAGES = 50  # per listing and poll: a broken or hostile upstream cannot make us read on


def version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


class RemoteAirflowClient:
    """Async client for one upstream deployment; speaks API v1 or v2 and hides their differences."""

    def __init__(self, config: ClientConfig, *, transport: BaseTransport | None = None):
        self.config = config
        self.transport = transport or new_transport(config)
        self._dialect: V2 | None = DIALECTS.get(config.api_version)
        if self._dialect is not None:
            self.transport.dialect_name = self._dialect.name
        self._probe_lock = asyncio.Lock()
        self.upstream_version: str | None = None

    async def __aenter__(self) -> RemoteAirflowClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    # version ---------------------------------------------------------------------------------

    async def dialect(self) -> V2:
        """Return the API dialect: probed once (``auto``), or checked once against the upstream."""
        if self._dialect is not None and self.upstream_version is not None:
            return self._dialect
        async with self._probe_lock:
            if self._dialect is None:
                await self._probe()
            elif self.upstream_version is None:
                await self._check(self._dialect)
        assert self._dialect is not None
        return self._dialect

    async def _probe(self) -> None:
        odd: list[BadResponse] = []
        for name in ("v2", "v1"):
            candidate = DIALECTS[name]
            try:
                body = await self.transport.send(candidate.version())
                self.upstream_version = candidate.parse_version(body)
            except NotFound:
                continue
            except (BadResponse, KeyError, TypeError) as err:
                if isinstance(err, BadResponse):
                    odd.append(err)
                continue
            self._dialect = candidate
            self.transport.dialect_name = name
            return
        if odd:  # something answered, but not the Airflow API (an SSO page, a proxy): say what
            raise odd[0]
        raise ConfigurationError(
            f"no Airflow REST API found at {self.config.base_url}",
            url=self.config.base_url,
            hint="check the connection's host (scheme, host, port and any path prefix such as "
            "an Astro deployment's /<slug>)",
        )

    async def _check(self, dialect: V2) -> None:
        try:
            self.upstream_version = dialect.parse_version(await self.transport.send(dialect.version()))
        except (NotFound, KeyError, TypeError):
            other = "v2" if dialect.name == "v1" else "v1"
            raise ConfigurationError(
                f"connection {self.config.conn_id!r} says api_version={dialect.name}, "
                f"but the upstream has no {dialect.prefix}",
                url=self.config.base_url + dialect.version().path,
                hint=f"set the extra api_version to auto (or {other})",
            ) from None

    @property
    def known_dialect(self) -> V2 | None:
        """The API dialect if already known, without asking the upstream."""
        return self._dialect

    async def version(self) -> str:
        """Return the upstream Airflow version string."""
        await self.dialect()
        return self.upstream_version or ""

    async def alternatives(self) -> bool:
        """Whether listings take ``*_prefix_pattern`` filters with ``|`` between alternatives (3.2+)."""
        dialect = await self.dialect()
        return dialect.name == "v2" and _release(self.upstream_version) >= (3, 2)

    # plumbing --------------------------------------------------------------------------------

    async def call(self, build: Callable[[V2], Request], parse: Callable[[V2, Any], Any]) -> Any:
        dialect = await self.dialect()
        request = build(dialect)
        body = await self.transport.send(request)
        try:
            return parse(dialect, body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponse(
                f"unexpected answer shape from {request.method} {request.path} ({type(exc).__name__}: {exc})",
                url=self.config.base_url + request.path,
                hint=f"upstream API {dialect.name} {self.upstream_version or ''}".rstrip()
                + "; please report it",
            ) from None

    async def _pages(
        self,
        build: Callable[[V2, int], Request],
        parse: Callable[[V2, Any], Page],
        *,
        max_pages: int | None = None,
        on_cap: bool = True,
    ) -> AsyncIterator[Page]:
        """The pages of a listing not read as a feed, to its total (or an empty page).

        ``on_cap``: warn when ``max_pages`` stops the read before the listing's end.
        """
        offset = 0
        max_pages = max_pages or MAX_PAGES
        for _ in range(max_pages):
            page: Page = await self.call(lambda d: build(d, offset), parse)
            yield page
            if listing_ends(offset, len(page.items), page.total):
                return
            offset += len(page.items)
        if on_cap:
            log.warning(
                "stopped reading a listing from %s after %d items (%d pages): the rest is ignored",
                self.config.base_url,
                offset,
                max_pages,
            )

    async def _all(self, build: Callable[[V2, int], Request], parse: Callable[[V2, Any], Page]) -> list[Any]:
        items: list[Any] = []
        async for page in self._pages(build, parse):
            items.extend(page.items)
        return items

    # DAGs and runs ---------------------------------------------------------------------------

    async def get_dag(self, dag_id: str) -> Dag:
        """Return one DAG; raise :class:`NotFound` when the upstream does not have it."""
        return await self.call(lambda d: d.dag(dag_id), lambda d, b: d.parse_dag(b))

    async def list_dags(self, pattern: str | None = None) -> list[Dag]:
        """Return DAGs whose id contains ``pattern`` (all DAGs when ``None``)."""
        return await self._all(lambda d, off: d.dags(pattern, offset=off), lambda d, b: d.parse_dags(b))

    async def find_dags(self, dag_ids: list[str]) -> dict[str, Dag]:
        """Those of ``dag_ids`` one listing shows (a page per id at most); :meth:`get_dag` the rest."""
        wanted = set(dag_ids)
        if not wanted:
            return {}
        found: dict[str, Dag] = {}
        common = os.path.commonprefix([min(wanted), max(wanted)])
        listed = False
        if common or not await self.alternatives():
            # their common prefix as a substring filter: a superset
            listed = await self._find_dags(wanted, found, pattern=common or None)
        missing = sorted(wanted - set(found))
        if not listed and len(missing) > 1 and await self.alternatives():
            # the ids themselves as prefixes (3.2+): about one page per hundred ids
            for chunk in alternatives([m for m in missing if _alternative(m)]):
                await self._find_dags(wanted, found, prefixes=chunk)
        return found

    async def _find_dags(
        self, wanted: set[str], found: dict[str, Dag], pattern: str | None = None, prefixes: str | None = None
    ) -> bool:
        """Add the wanted DAGs one listing shows to ``found``; whether it was read to its end."""
        async for page in self._pages(
            lambda d, off: d.dags(pattern, prefixes=prefixes, offset=off),
            lambda d, b: d.parse_dags(b),
            max_pages=min(MAX_PAGES, len(wanted)),
            on_cap=False,
        ):
            found.update((dag.dag_id, dag) for dag in page.items if dag.dag_id in wanted)
            if len(found) == len(wanted):
                return True
            if page.items and page.total is not None and -(-page.total // len(page.items)) > len(wanted):
                return False  # more pages than ids: not worth reading on
        return True

    async def get_dag_run(self, dag_id: str, run_id: str) -> DagRun | None:
        """Return one run, or ``None`` when it does not exist (yet)."""
        dialect = await self.dialect()
        if not self.transport.fits(dialect.dag_run(dag_id, run_id)):
            return await self._dag_run_by_listing(dag_id, run_id)
        try:
            return await self.call(lambda d: d.dag_run(dag_id, run_id), lambda d, b: d.parse_dag_run(b))
        except NotFound:
            return None

    async def _dag_run_by_listing(self, dag_id: str, run_id: str) -> DagRun | None:
        """A run whose path is too long for the transport (MWAA), read through listings, matched exactly:
        the DAG's runs filtered by id (3.1+), else one of its task instances' date and the runs then."""
        page: Page
        if await self._run_id_patterns():
            page = await self.call(
                lambda d: d.dag_run_by_pattern(dag_id, run_id), lambda d, b: d.parse_dag_runs(b)
            )
        else:
            dated = await self.call(
                lambda d: d.run_task_instances(dag_id, run_id, limit=1), lambda d, b: d.parse_run_date(b)
            )
            if dated is None:
                return None  # no task instance: the run does not exist (yet)
            page = await self.call(lambda d: d.runs_dated(dag_id, *dated), lambda d, b: d.parse_dag_runs(b))
        return next((run for run in page.items if run.run_id == run_id), None)

    async def partitions(self) -> bool:
        """Whether the upstream has partitioned runs and events (Airflow 3.2+)."""
        dialect = await self.dialect()
        return dialect.name == "v2" and _release(self.upstream_version) >= (3, 2)

    async def events_scoped(self) -> bool:
        """Whether the event listing leaves out events of DAGs the caller may not read (Airflow 3.3+)."""
        dialect = await self.dialect()
        return dialect.name == "v2" and _release(self.upstream_version) >= (3, 3)

    async def newest_partition_run(self, dag_id: str, key: str) -> DagRun | None:
        """The run of ``dag_id`` for partition ``key`` (exactly) with the newest ``run_after``, if any."""
        async for page in self._pages(
            lambda d, off: d.partition_runs(dag_id, key, offset=off), lambda d, b: d.parse_dag_runs(b)
        ):
            run = next((r for r in page.items if r.partition_key == key), None)
            if run is not None:
                return run
        return None

    async def _run_id_patterns(self) -> bool:
        """Whether run listings take ``run_id_pattern`` (Airflow 3.1+)."""
        dialect = await self.dialect()
        return dialect.name == "v2" and _release(self.upstream_version) >= (3, 1)

    async def list_dag_runs(
        self,
        dag_id: str,
        *,
        logical_date: datetime | None = None,
        run_after_gte: datetime | None = None,
        limit: int = PAGE_LIMIT,
    ) -> list[DagRun]:
        """Return runs of ``dag_id``, newest ``run_after`` first (one page of at most ``limit``)."""
        page: Page = await self.call(
            lambda d: d.dag_runs(dag_id, logical_date=logical_date, run_after_gte=run_after_gte, limit=limit),
            lambda d, b: d.parse_dag_runs(b),
        )
        return page.items

    async def newest_runs(
        self, dag_ids: list[str], *, run_after_gte: datetime | None = None, max_pages: int = 1
    ) -> tuple[list[DagRun], bool]:
        """Runs of many DAGs from ``run_after_gte``, newest first: the runs, and whether that is all."""
        runs: list[DagRun] = []
        complete = False
        async for page in self._pages(
            lambda d, off: d.runs_batch(dag_ids, run_after_gte, offset=off),
            lambda d, b: d.parse_dag_runs(b),
            max_pages=max_pages,
            on_cap=False,
        ):
            complete = listing_ends(len(runs), len(page.items), page.total)
            runs += page.items
        return runs, complete

    async def list_task_instances(
        self, dag_id: str, run_id: str, *, task_group_id: str | None = None
    ) -> list[TaskInstance]:
        """Return the run's task instances, of ``task_group_id`` if given."""
        dialect = await self.dialect()
        server_side = None
        if task_group_id and dialect.name == "v2" and version_tuple(await self.version()) >= (3, 1):
            server_side = task_group_id  # Airflow 3.0 ignores this filter: there we match the prefix below
        if self.transport.fits(dialect.task_instances(dag_id, run_id, task_group_id=server_side)):
            items = await self._all(
                lambda d, off: d.task_instances(dag_id, run_id, task_group_id=server_side, offset=off),
                lambda d, b: d.parse_task_instances(b),
            )
        else:  # a path too long for the transport (MWAA): the batch listing, its body names the run
            server_side = None
            items = await self._all(
                lambda d, off: d.run_task_instances(dag_id, run_id, offset=off),
                lambda d, b: d.parse_task_instances(b),
            )
        if task_group_id and server_side is None:
            items = [ti for ti in items if ti.task_id.startswith(f"{task_group_id}.")]
        return items

    async def list_task_instances_in_states(
        self, dag_ids: list[str] | None, states: list[str]
    ) -> list[TaskInstance]:
        """Return task instances of ``dag_ids`` currently in ``states`` (e.g. running)."""
        return await self._all(
            lambda d, off: d.task_instances_in_states(dag_ids, states, offset=off),
            lambda d, b: d.parse_task_instances(b),
        )

    async def list_runs_in_states(self, dag_ids: list[str] | None, states: list[str]) -> list[DagRun]:
        """Return runs of ``dag_ids`` currently in ``states`` (e.g. running)."""
        return await self._all(
            lambda d, off: d.runs_in_states(dag_ids, states, offset=off), lambda d, b: d.parse_dag_runs(b)
        )

    async def last_finished_run(self, dag_id: str, states: list[str], *, before: datetime) -> DagRun | None:
        """Return the run of ``dag_id`` in ``states`` that ended last at or before ``before``, if any."""
        page: Page = await self.call(
            lambda d: d.last_finished_run(dag_id, states, before), lambda d, b: d.parse_dag_runs(b)
        )
        ended = [r for r in page.items if r.end_date is not None and r.end_date <= before]
        return max(ended, key=lambda r: r.end_date, default=None)

    async def list_task_ids(self, dag_id: str) -> list[str]:
        """Return the task ids of an upstream DAG."""
        return await self.call(lambda d: d.tasks(dag_id), lambda d, b: d.parse_task_ids(b))

    # assets ----------------------------------------------------------------------------------

    async def list_assets(
        self, *, uri_pattern: str | None = None, name_pattern: str | None = None
    ) -> list[Asset]:
        """Return assets (datasets on v1) whose URI or name contains the pattern."""
        return await self._all(
            lambda d, off: d.assets(uri_pattern=uri_pattern, name_pattern=name_pattern, offset=off),
            lambda d, b: d.parse_assets(b),
        )

    async def find_assets(self, by: str, values: list[str]) -> list[Asset]:
        """Assets whose ``by`` (``"uri"`` or ``"name"``) starts with one of ``values`` (Airflow 3.2+)."""
        found: list[Asset] = []
        for chunk in alternatives([v for v in values if _alternative(v)]):

            def build(d: V2, off: int, c: str = chunk) -> Request:
                prefix: dict[str, Any] = {f"{by}_prefix_pattern": c}
                return d.assets(**prefix, offset=off)

            found += await self._all(build, lambda d, b: d.parse_assets(b))
        return found

    # links (empty when no UI address is known: an MWAA environment without its web server URL) ---

    def run_url(self, dag_id: str, run_id: str) -> str:
        """Return the upstream UI URL of a run (API v2 layout unless v1 is known)."""
        dialect = self._dialect or DIALECTS["v2"]
        return self.config.ui_base and self.config.ui_base + dialect.ui_run_path(dag_id, run_id)

    def task_url(self, ti: TaskInstance) -> str:
        """Return the upstream UI URL of a task instance."""
        dialect = self._dialect or DIALECTS["v2"]
        return self.config.ui_base and self.config.ui_base + dialect.ui_task_path(
            ti.dag_id, ti.run_id, ti.task_id, ti.map_index
        )

    def asset_url(self, asset_id: int) -> str:
        """Return the upstream UI URL of an asset."""
        dialect = self._dialect or DIALECTS["v2"]
        return self.config.ui_base and self.config.ui_base + dialect.ui_asset_path(asset_id)


__all__ = ["RemoteAirflowClient", "ClientConfig", "XdepError"]


def _release(version: str | None) -> tuple[int, ...]:
    """``"3.2.1"`` -> ``(3, 2)``; anything unreadable -> ``()``."""
    parts = []
    for part in (version or "").split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            return ()
        parts.append(int(digits))
    return tuple(parts)


def _alternative(value: str) -> bool:
    """Whether ``value`` can be one alternative of a pattern (the server splits on ``|`` and strips)."""
    return bool(value) and "|" not in value and value == value.strip()


def alternatives(values: list[str], limit: int = 1500, per: int = PAGE_LIMIT) -> list[str]:
    """``values`` joined by ``|`` into patterns of at most ``limit`` characters and ``per`` values."""
    chunks: list[list[str]] = [[]]
    size = 0
    for value in values:
        if chunks[-1] and (size + 1 + len(value) > limit or len(chunks[-1]) >= per):
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += len(value) + 1
    return ["|".join(chunk) for chunk in chunks if chunk]
