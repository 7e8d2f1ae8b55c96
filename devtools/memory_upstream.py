"""An in-memory upstream for feed tests and the asset benchmark: the listing semantics of the REST API.

It answers the requests ``RemoteAirflowClient`` builds for asset events (v2 ``/api/v2/assets/events``
with ``asset_id``, ``timestamp_gte``, ``order_by``; v1 ``/api/v1/datasets/events``, newest first and
no time filter), for DAGs and for runs (``POST .../dagRuns/list`` with the ``run_after``/``execution_date``,
``start_date`` and ``end_date`` bounds and ``order_by``; one run; one DAG's runs by logical date), with
``limit``/``offset`` paging and ``total_entries`` as Airflow computes them. ``page_limit`` plays
``[api] maximum_page_limit``: it caps a GET's page silently (the batch POSTs ignore it, as Airflow's
do). Bodies go through ``json.dumps``/``json.loads`` so a client pays for decoding as it would over
HTTP. Every request is counted. Items can be added with any timestamp, so late-visible items can be simulated.

It is a model of the API, checked against the real servers by the live tests; it is not the product.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from xdep_sensors.client.dialects import Request
from xdep_sensors.client.records import parse_dt
from xdep_sensors.errors import NotFound

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass
class MemoryUpstream:
    """Asset events and finished runs, kept sorted by (time, id) like the upstream's ORDER BY."""

    api: str = "v2"
    events: list[tuple[datetime, int, int, dict]] = field(default_factory=list)  # (ts, id, asset_id, extra)
    runs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (dag_id, run_id) -> run fields
    page_limit: int = 100  # the server's [api] maximum_page_limit
    requests: Counter = field(default_factory=Counter)
    version: str | None = None  # what /version answers (default: 3.3.2 for v2, 2.11.2 for v1)
    sources: dict[int, str] = field(default_factory=dict)  # event id -> its source DAG, when not "producer"
    partition_keys: dict[int, str] = field(default_factory=dict)  # event id -> its partition key, if any
    log: list | None = None  # every request's (path, params), when a caller sets a list here
    assets: set[int] = field(default_factory=set)  # assets that exist without events yet
    dags: set[str] = field(default_factory=set)  # DAGs that exist without runs yet
    by_asset: dict[int, list] = field(default_factory=dict)
    cpu: float = 0.0  # process CPU seconds spent answering (json.dumps and filtering)
    _next_id: int = 1

    # writing -------------------------------------------------------------------------------------

    def add_event(
        self,
        asset_id: int,
        when: datetime,
        extra: dict | None = None,
        source_dag_id: str = "producer",
        partition_key: str | None = None,
    ) -> int:
        event_id = self._next_id
        self._next_id += 1
        if partition_key is not None:
            self.partition_keys[event_id] = partition_key
        if source_dag_id != "producer":
            self.sources[event_id] = source_dag_id
        row = (when, event_id, asset_id, extra or {})
        bisect.insort(self.events, row, key=lambda e: (e[0], e[1]))
        bisect.insort(self.by_asset.setdefault(asset_id, []), row, key=lambda e: (e[0], e[1]))
        return event_id

    def add_run(self, dag_id: str, run_id: str, state: str, end: datetime) -> None:
        """A run that ended at ``end`` (started 5 minutes before, for a logical date an hour before)."""
        self.put_run(
            dag_id,
            run_id,
            state,
            logical_date=end - timedelta(hours=1),
            start=end - timedelta(minutes=5),
            end=end,
        )

    def put_run(
        self,
        dag_id: str,
        run_id: str,
        state: str,
        *,
        logical_date: datetime | None,
        run_after: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """Create or update a run (``run_after`` defaults to the logical date)."""
        self.runs[(dag_id, run_id)] = {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": state,
            "logical_date": logical_date,
            "run_after": run_after or logical_date,
            "start_date": start,
            "end_date": end,
        }

    # the transport interface ----------------------------------------------------------------------

    dialect_name: str | None = None

    def fits(self, request: Request) -> bool:  # no path limit, as HTTP
        return True

    async def close(self) -> None:
        return None

    async def send(self, request: Request) -> Any:
        started = time.process_time()
        try:
            text = self._answer(request)
        finally:
            self.cpu += time.process_time() - started  # the upstream's share, for benchmarks to leave out
        return json.loads(text)  # decoding is the client's work, as over HTTP

    def _answer(self, request: Request) -> Any:
        self.requests[request.path] += 1
        if self.log is not None:
            self.log.append((request.path, request.params))
        params = dict(request.params)
        if request.path.endswith("/version"):
            if not request.path.startswith(f"/api/{self.api}/"):
                raise NotFound("no such API", url=request.path)
            return json.dumps({"version": self.version or ("3.3.2" if self.api == "v2" else "2.11.2")})
        if request.path in ("/api/v2/assets/events", "/api/v1/datasets/events"):
            body = self._events(params)
        elif request.path in ("/api/v2/assets", "/api/v1/datasets"):
            body = self._assets(params)
        elif request.path.endswith("/dags/~/dagRuns/list"):
            body = self._runs(request.json)
        elif request.path.startswith(f"/api/{self.api}/dags"):
            body = self._dags(request.path, params)
        else:
            raise NotFound(f"memory upstream has no {request.method} {request.path}", url=request.path)
        return json.dumps(body)

    def _events(self, params: dict[str, str]) -> dict:
        asset = params.get("asset_id") or params.get("dataset_id")
        since = parse_dt(params.get("timestamp_gte")) if self.api == "v2" else None
        rows = self.events if asset is None else self.by_asset.get(int(asset), [])
        if params.get("source_dag_id"):
            rows = [r for r in rows if self.sources.get(r[1], "producer") == params["source_dag_id"]]
        low = bisect.bisect_left(rows, since, key=lambda e: e[0]) if since is not None else 0
        offset, limit = self._window(params)
        if params.get("order_by", "timestamp").startswith("-"):
            high = len(rows) - offset
            page = rows[max(low, high - limit) : max(high, low)][::-1]
        else:
            page = rows[low + offset : low + offset + limit]
        total = len(rows) - low
        if self.api == "v2":
            items = [
                {
                    "id": i,
                    "asset_id": a,
                    "uri": f"s3://bucket/asset-{a}",
                    "name": f"asset-{a}",
                    "extra": x,
                    "timestamp": _iso(t),
                    "source_dag_id": self.sources.get(i, "producer"),
                    "source_task_id": "t",
                    "source_run_id": "r",
                    "source_map_index": -1,
                    "partition_key": self.partition_keys.get(i),
                }
                for t, i, a, x in page
            ]
            return {"asset_events": items, "total_entries": total}
        items = [
            {
                "id": i,
                "dataset_id": a,
                "dataset_uri": f"s3://bucket/asset-{a}",
                "extra": x,
                "timestamp": _iso(t),
                "source_dag_id": self.sources.get(i, "producer"),
                "source_task_id": "t",
                "source_run_id": "r",
                "source_map_index": -1,
            }
            for t, i, a, x in page
        ]
        return {"dataset_events": items, "total_entries": total}

    def _assets(self, params: dict[str, str]) -> dict:
        ids = sorted(set(self.by_asset) | self.assets)
        rows = [
            {"id": a, "uri": f"s3://bucket/asset-{a}", "name": f"asset-{a}", "extra": {}}
            for a in ids
            if _matches(params, "uri", f"s3://bucket/asset-{a}") and _matches(params, "name", f"asset-{a}")
        ]
        offset, limit = self._window(params)
        return {
            "assets" if self.api == "v2" else "datasets": rows[offset : offset + limit],
            "total_entries": len(rows),
        }

    def _window(self, params: dict[str, str]) -> tuple[int, int]:
        """A GET's ``offset`` and ``limit``, the limit silently capped at the server's page limit."""
        return int(params.get("offset", 0)), min(int(params.get("limit", 50)), self.page_limit)

    def _run_json(self, run: dict) -> dict:
        return {
            "dag_id": run["dag_id"],
            "dag_run_id": run["run_id"],
            "state": run["state"],
            "logical_date": _iso(run["logical_date"]),
            "execution_date": _iso(run["logical_date"]),
            "run_after": _iso(run["run_after"]),
            "start_date": _iso(run["start_date"]),
            "end_date": _iso(run["end_date"]),
            "run_type": "scheduled",
            "conf": {},
        }

    def _select(self, rows: list[dict], *, bounds: dict[str, Any], order_by: str | None) -> list[dict]:
        for key, value in bounds.items():
            if value is None:
                continue
            field_name, op = key.rsplit("_", 1)
            field_name = "logical_date" if field_name == "execution_date" else field_name
            when = parse_dt(value)
            rows = [
                r
                for r in rows
                if r[field_name] is not None
                and (r[field_name] >= when if op == "gte" else r[field_name] <= when)
            ]
        if order_by:
            key = "logical_date" if order_by.lstrip("-") == "execution_date" else order_by.lstrip("-")
            far = datetime.max.replace(tzinfo=timezone.utc)  # NULLs sort last ascending, as on PostgreSQL
            rows = sorted(
                rows,
                key=lambda r: (r[key] or far, r["dag_id"], r["run_id"]),
                reverse=order_by.startswith("-"),
            )
        return rows

    def _runs(self, body: dict) -> dict:
        dag_ids = body.get("dag_ids")
        states = set(body.get("states") or ())
        rows = [
            r
            for r in self.runs.values()
            if (dag_ids is None or r["dag_id"] in dag_ids) and (not states or r["state"] in states)
        ]
        bounds = {
            k: body.get(k) for k in ("run_after_gte", "execution_date_gte", "start_date_gte", "end_date_gte")
        }
        rows = self._select(rows, bounds=bounds, order_by=body.get("order_by") or "run_after")
        offset, limit = int(body.get("page_offset", 0)), min(int(body.get("page_limit", 50)), 100)
        return {
            "dag_runs": [self._run_json(r) for r in rows[offset : offset + limit]],
            "total_entries": len(rows),
        }

    def _dags(self, path: str, params: dict[str, str]) -> dict:
        parts = path.split("/")[4:]  # after /api/vN/dags
        known = sorted({dag for dag, _ in self.runs} | self.dags)
        if not parts:
            rows = [d for d in known if _matches(params, "dag_id", d)]
            offset, limit = self._window(params)
            return {
                "dags": [{"dag_id": d, "is_paused": False} for d in rows[offset : offset + limit]],
                "total_entries": len(rows),
            }
        dag_id = parts[0]
        if dag_id not in known:
            raise NotFound(f"DAG {dag_id} not found", url=path)
        if len(parts) == 1:
            return {"dag_id": dag_id, "is_paused": False}
        if len(parts) == 3:
            run = self.runs.get((dag_id, parts[2]))
            if run is None:
                raise NotFound("run not found", url=path)
            return self._run_json(run)
        rows = [r for r in self.runs.values() if r["dag_id"] == dag_id]
        bounds = {
            k: params.get(k)
            for k in (
                "logical_date_gte",
                "logical_date_lte",
                "execution_date_gte",
                "execution_date_lte",
                "run_after_gte",
            )
        }
        rows = self._select(rows, bounds=bounds, order_by=params.get("order_by"))
        offset, limit = self._window(params)
        return {
            "dag_runs": [self._run_json(r) for r in rows[offset : offset + limit]],
            "total_entries": len(rows),
        }

    def describe(self, request: Request) -> str:
        return f"{request.method} {request.path}?{urlencode(request.params)}"


def _matches(params: dict[str, str], field: str, value: str) -> bool:
    """Airflow's ``<field>_pattern`` (case-insensitive substring) and, as from 3.2, ``<field>_prefix_pattern``
    (case-sensitive prefix), each with ``|`` between alternatives (3.2+; v1 and the model's 3.x alike)."""
    pattern, prefix = params.get(f"{field}_pattern"), params.get(f"{field}_prefix_pattern")
    if pattern and not any(t.strip().lower() in value.lower() for t in pattern.split("|") if t.strip()):
        return False
    return not prefix or any(value.startswith(t.strip()) for t in prefix.split("|") if t.strip())
