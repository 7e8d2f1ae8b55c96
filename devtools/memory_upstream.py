"""An in-memory upstream for feed tests and the asset benchmark: the listing semantics of the REST API.

It answers the requests ``RemoteAirflowClient`` builds for asset events (v2 ``/api/v2/assets/events``
with ``asset_id``, ``timestamp_gte``, ``order_by``; v1 ``/api/v1/datasets/events``, newest first and
no time filter) and for runs that ended (``POST .../dagRuns/list`` with ``end_date_gte``), with
``limit``/``offset`` paging and ``total_entries`` as Airflow computes them. Bodies go through
``json.dumps``/``json.loads`` so a client pays for decoding as it would over HTTP. Every request is
counted. Items can be added with any timestamp, so late-visible items can be simulated.

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

from xdep_sensors.client.dialects import Request, parse_dt
from xdep_sensors.errors import NotFound

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass
class MemoryUpstream:
    """Asset events and finished runs, kept sorted by (time, id) like the upstream's ORDER BY."""

    api: str = "v2"
    events: list[tuple[datetime, int, int, dict]] = field(default_factory=list)  # (ts, id, asset_id, extra)
    runs: list[tuple[datetime, str, str, str]] = field(default_factory=list)  # (end_date, dag_id, run_id, state)
    requests: Counter = field(default_factory=Counter)
    assets: set[int] = field(default_factory=set)  # assets that exist without events yet
    by_asset: dict[int, list] = field(default_factory=dict)
    cpu: float = 0.0  # process CPU seconds spent answering (json.dumps and filtering)
    _next_id: int = 1

    # writing -------------------------------------------------------------------------------------

    def add_event(self, asset_id: int, when: datetime, extra: dict | None = None) -> int:
        event_id = self._next_id
        self._next_id += 1
        row = (when, event_id, asset_id, extra or {})
        bisect.insort(self.events, row, key=lambda e: (e[0], e[1]))
        bisect.insort(self.by_asset.setdefault(asset_id, []), row, key=lambda e: (e[0], e[1]))
        return event_id

    def add_run(self, dag_id: str, run_id: str, state: str, end: datetime) -> None:
        bisect.insort(self.runs, (end, dag_id, run_id, state), key=lambda r: (r[0], r[1], r[2]))

    # the transport interface ----------------------------------------------------------------------

    dialect_name: str | None = None

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
        params = dict(request.params)
        if request.path.endswith("/version"):
            if not request.path.startswith(f"/api/{self.api}/"):
                raise NotFound("no such API", url=request.path)
            return json.dumps({"version": "3.3.2" if self.api == "v2" else "2.11.2"})
        if request.path in ("/api/v2/assets/events", "/api/v1/datasets/events"):
            body = self._events(params)
        elif request.path in ("/api/v2/assets", "/api/v1/datasets"):
            body = self._assets(params)
        elif request.path.endswith("/dags/~/dagRuns/list"):
            body = self._runs(request.json)
        else:
            raise NotFound(f"memory upstream has no {request.method} {request.path}", url=request.path)
        return json.dumps(body)

    def _events(self, params: dict[str, str]) -> dict:
        asset = params.get("asset_id") or params.get("dataset_id")
        since = parse_dt(params.get("timestamp_gte")) if self.api == "v2" else None
        rows = self.events if asset is None else self.by_asset.get(int(asset), [])
        low = bisect.bisect_left(rows, since, key=lambda e: e[0]) if since is not None else 0
        offset, limit = int(params.get("offset", 0)), min(int(params.get("limit", 50)), 100)
        if params.get("order_by", "timestamp").startswith("-"):
            high = len(rows) - offset
            page = rows[max(low, high - limit):max(high, low)][::-1]
        else:
            page = rows[low + offset:low + offset + limit]
        total = len(rows) - low
        if self.api == "v2":
            items = [{"id": i, "asset_id": a, "uri": f"s3://bucket/asset-{a}", "name": f"asset-{a}", "extra": x,
                      "timestamp": _iso(t), "source_dag_id": "producer", "source_task_id": "t",
                      "source_run_id": "r", "source_map_index": -1} for t, i, a, x in page]
            return {"asset_events": items, "total_entries": total}
        items = [{"id": i, "dataset_id": a, "dataset_uri": f"s3://bucket/asset-{a}", "extra": x,
                  "timestamp": _iso(t), "source_dag_id": "producer", "source_task_id": "t", "source_run_id": "r",
                  "source_map_index": -1} for t, i, a, x in page]
        return {"dataset_events": items, "total_entries": total}

    def _assets(self, params: dict[str, str]) -> dict:
        pattern = params.get("uri_pattern") or params.get("name_pattern") or ""
        ids = sorted(set(self.by_asset) | self.assets)
        rows = [{"id": a, "uri": f"s3://bucket/asset-{a}", "name": f"asset-{a}", "extra": {}} for a in ids
                if pattern in f"s3://bucket/asset-{a}" or pattern in f"asset-{a}"]
        return {"assets" if self.api == "v2" else "datasets": rows, "total_entries": len(rows)}

    def _runs(self, body: dict) -> dict:
        dag_ids = body.get("dag_ids")
        states = set(body.get("states") or ())
        since = parse_dt(body.get("end_date_gte"))
        rows = [r for r in self.runs if (dag_ids is None or r[1] in dag_ids) and (not states or r[3] in states)
                and (since is None or r[0] >= since)]
        offset, limit = int(body.get("page_offset", 0)), min(int(body.get("page_limit", 50)), 100)
        page = rows[offset:offset + limit]
        items = [{"dag_id": d, "dag_run_id": r, "state": s, "logical_date": _iso(e - timedelta(hours=1)),
                  "run_after": _iso(e - timedelta(hours=1)), "execution_date": _iso(e - timedelta(hours=1)),
                  "start_date": _iso(e - timedelta(minutes=5)), "end_date": _iso(e), "run_type": "scheduled",
                  "conf": {}} for e, d, r, s in page]
        return {"dag_runs": items, "total_entries": len(rows)}

    def describe(self, request: Request) -> str:
        return f"{request.method} {request.path}?{urlencode(request.params)}"
