"""A stub of an upstream Airflow 3 REST API (v2) for ``benchmarks/run.py``: fast, counting, loopback only.

Run it as its own process (so its CPU never counts as the triggerer's)::

    python benchmarks/stub_upstream.py --mode ours --port 0

It prints ``PORT <n>`` on stdout once it listens on 127.0.0.1. The benchmark then sends the runs and
their completion schedule with ``POST /_schedule``; from then on each run is ``running`` until its
completion time (epoch seconds, the shared wall clock) and ``success`` after.

Modes:

* ``ours``: every run exists from the start (``GET .../dagRuns/{run_id}`` answers 200 with
  ``state: running``, then ``success``), as the upstream looks while the runs execute;
* ``http``: ``GET .../dagRuns/{run_id}`` answers 404 until the run has completed, 200 after: the
  model behind an ``HttpSensorTrigger`` on the run endpoint ("wait until the endpoint says done"),
  which fires on the first 2xx.

Routes (all JSON; every ``/api/v2`` route but ``/version`` needs ``Authorization: Bearer bench-token``):

* ``GET  /api/v2/version``
* ``GET  /api/v2/dags`` (``dag_id_pattern``: case-insensitive substring, ``_`` any character; ``limit``,
  ``offset``; ordered by ``dag_id``)
* ``GET  /api/v2/dags/{dag_id}``
* ``GET  /api/v2/dags/{dag_id}/dagRuns/{run_id}``
* ``POST /api/v2/dags/~/dagRuns/list`` (``dag_ids``, ``states``, ``run_after_gte``, ``start_date_gte``,
  ``end_date_gte``, ``order_by`` ``end_date`` or by id, ``page_offset``, ``page_limit``)
* ``POST /_schedule``, ``POST /_reset``, ``GET /_stats`` (control, not counted)

``/_stats`` returns request counts and bytes per route in 0.1 s buckets of arrival time, so the
benchmark can take any steady-state window after the fact. The process exits on SIGTERM/SIGINT,
when its parent process goes away, or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from aiohttp import web

TOKEN = "bench-token"
RUN_ID = "scheduled__2026-11-20T00:00:00+00:00"
LOGICAL = datetime(2026, 11, 20, tzinfo=timezone.utc)
RUN_AFTER = datetime(2026, 11, 21, tzinfo=timezone.utc)  # end of the data interval, as for a daily run
BUCKET = 0.1  # seconds per stats bucket
JSON = "application/json"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def run_json(dag_id: str, state: str, end: float | None) -> dict:
    """A DAGRunResponse as Airflow 3.1 serves it."""
    start = RUN_AFTER + timedelta(seconds=2)
    return {
        "dag_run_id": RUN_ID,
        "dag_id": dag_id,
        "logical_date": iso(LOGICAL),
        "queued_at": iso(RUN_AFTER + timedelta(seconds=1)),
        "start_date": iso(start),
        "end_date": iso(datetime.fromtimestamp(end, timezone.utc)) if end is not None else None,
        "duration": None if end is None else round(end - start.timestamp(), 3),
        "data_interval_start": iso(LOGICAL),
        "data_interval_end": iso(RUN_AFTER),
        "run_after": iso(RUN_AFTER),
        "last_scheduling_decision": iso(RUN_AFTER + timedelta(seconds=3)),
        "run_type": "scheduled",
        "state": state,
        "triggered_by": "timetable",
        "triggering_user_name": None,
        "conf": {},
        "note": None,
        "dag_versions": [],
        "bundle_version": None,
        "dag_display_name": dag_id,
    }


def dag_json(dag_id: str) -> dict:
    """A DAGResponse as Airflow 3.1 serves it."""
    return {
        "dag_id": dag_id,
        "dag_display_name": dag_id,
        "is_paused": False,
        "is_stale": False,
        "last_parsed_time": iso(RUN_AFTER),
        "last_expired": None,
        "bundle_name": "dags-folder",
        "bundle_version": None,
        "relative_fileloc": f"{dag_id}.py",
        "fileloc": f"/opt/airflow/dags/{dag_id}.py",
        "description": None,
        "timetable_summary": "@daily",
        "timetable_description": "At 00:00",
        "tags": [{"name": "bench", "dag_id": dag_id}],
        "max_active_tasks": 16,
        "max_active_runs": 16,
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False,
        "has_import_errors": False,
        "next_dagrun_logical_date": iso(RUN_AFTER),
        "next_dagrun_data_interval_start": iso(RUN_AFTER),
        "next_dagrun_data_interval_end": iso(RUN_AFTER + timedelta(days=1)),
        "next_dagrun_run_after": iso(RUN_AFTER + timedelta(days=1)),
        "owners": ["airflow"],
        "file_token": "Ii9vcHQvYWlyZmxvdy9kYWdzL2JlbmNoLnB5Ig.bench",
    }


class Upstream:
    def __init__(self, mode: str):
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.index: dict[str, int] = {}  # dag_id -> run index
        self.dag_ids: list[str] = []
        self.done_at: list[float] = []
        self.running: list[bytes] = []
        self.success: list[bytes] = []
        self.dags: list[bytes] = []
        self.sorted_ids: list[str] = []
        self.counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.bytes_in: dict[str, int] = defaultdict(int)
        self.bytes_out: dict[str, int] = defaultdict(int)
        self.statuses: dict[str, int] = defaultdict(int)
        self.cpu0 = time.process_time()

    def schedule(self, dag_ids: list[str], done_at: list[float]) -> None:
        self.reset()
        self.dag_ids = list(dag_ids)
        self.done_at = [float(t) for t in done_at]
        self.index = {d: i for i, d in enumerate(self.dag_ids)}
        dumps = json.dumps
        self.running = [dumps(run_json(d, "running", None)).encode() for d in self.dag_ids]
        self.success = [dumps(run_json(d, "success", t)).encode() for d, t in zip(self.dag_ids, self.done_at)]
        self.dags = [dumps(dag_json(d)).encode() for d in self.dag_ids]
        self.sorted_ids = sorted(self.dag_ids)

    def run_body(self, i: int, now: float) -> bytes:
        return self.success[i] if now >= self.done_at[i] else self.running[i]

    def count(self, route: str, now: float, size_in: int, size_out: int, status: int) -> None:
        self.counts[route][int(now / BUCKET)] += 1
        self.bytes_in[route] += size_in
        self.bytes_out[route] += size_out
        self.statuses[f"{route} {status}"] += 1

    def stats(self) -> dict:
        return {
            "bucket_s": BUCKET,
            "counts": {route: {str(k): v for k, v in b.items()} for route, b in self.counts.items()},
            "totals": {route: sum(b.values()) for route, b in self.counts.items()},
            "bytes_in": dict(self.bytes_in),
            "bytes_out": dict(self.bytes_out),
            "statuses": dict(self.statuses),
            "cpu_s": time.process_time() - self.cpu0,
            "mode": self.mode,
            "runs": len(self.dag_ids),
        }


def make_app(up: Upstream) -> web.Application:
    def answer(route: str, now: float, body: bytes, status: int = 200, size_in: int = 0) -> web.Response:
        up.count(route, now, size_in, len(body), status)
        return web.Response(body=body, status=status, content_type=JSON)

    def not_found(route: str, now: float, detail: str) -> web.Response:
        return answer(route, now, json.dumps({"detail": detail}).encode(), 404)

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def unauthorized(route: str, now: float) -> web.Response:
        return answer(route, now, b'{"detail":"Not authenticated"}', 401)

    async def version(request: web.Request) -> web.Response:
        return answer("version", time.time(), b'{"version":"3.1.3","git_version":".release:bench"}')

    async def get_dag(request: web.Request) -> web.Response:
        now = time.time()
        if not authorized(request):
            return unauthorized("dag", now)
        dag_id = request.match_info["dag_id"]
        i = up.index.get(dag_id)
        if i is None:
            return not_found("dag", now, f"Dag with id {dag_id} was not found")
        return answer("dag", now, up.dags[i])

    async def list_dags(request: web.Request) -> web.Response:
        now = time.time()
        if not authorized(request):
            return unauthorized("dags", now)
        try:
            pattern = request.query.get("dag_id_pattern")
            offset = max(int(request.query.get("offset") or 0), 0)
            limit = min(max(int(request.query.get("limit") or 50), 1), 100)
        except ValueError:
            return answer("dags", now, b'{"detail":"bad request"}', 422)
        ids = up.sorted_ids
        if pattern:  # SQL ILIKE '%pattern%': "_" matches any one character
            rx = re.compile(
                ".*".join(
                    [""] + [".".join(map(re.escape, part.split("_"))) for part in pattern.split("%")] + [""]
                ),
                re.I,
            )
            ids = [d for d in ids if rx.fullmatch(d)]
        page = ids[offset : offset + limit]
        out = (
            b'{"dags":['
            + b",".join(up.dags[up.index[d]] for d in page)
            + b'],"total_entries":'
            + str(len(ids)).encode()
            + b"}"
        )
        return answer("dags", now, out)

    async def get_run(request: web.Request) -> web.Response:
        now = time.time()
        if not authorized(request):
            return unauthorized("dag_run", now)
        dag_id, run_id = request.match_info["dag_id"], request.match_info["run_id"]
        i = up.index.get(dag_id)
        if i is None or run_id != RUN_ID or (up.mode == "http" and now < up.done_at[i]):
            return not_found(
                "dag_run", now, f"The DagRun with dag_id: `{dag_id}` and run_id: `{run_id}` was not found"
            )
        return answer("dag_run", now, up.run_body(i, now))

    async def list_runs(request: web.Request) -> web.Response:
        now = time.time()
        raw = await request.read()
        if not authorized(request):
            return unauthorized("runs_list", now)
        try:
            body = json.loads(raw)
            wanted = body.get("dag_ids")
            states = body.get("states")
            offset = max(int(body.get("page_offset") or 0), 0)
            limit = min(max(int(body.get("page_limit") or 50), 1), 100)  # Airflow's maximum_page_limit
            after = body.get("run_after_gte")
            after_dt = datetime.fromisoformat(after.replace("Z", "+00:00")) if after else None
            started = body.get("start_date_gte")
            started_dt = datetime.fromisoformat(started.replace("Z", "+00:00")) if started else None
            ended = body.get("end_date_gte")
            ended_ts = datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp() if ended else None
            order_by = str(body.get("order_by") or "id")
        except (ValueError, TypeError, AttributeError):
            return answer("runs_list", now, b'{"detail":"bad request"}', 422, len(raw))
        index, done_at = up.index, up.done_at
        if after_dt is not None and RUN_AFTER < after_dt:  # every stub run has the same run_after
            matches: list[int] = []
        elif started_dt is not None and RUN_AFTER + timedelta(seconds=2) < started_dt:  # ... and start_date
            matches = []
        elif wanted is None:
            matches = list(range(len(up.dag_ids)))
        else:
            matches = sorted(index[d] for d in set(wanted) if d in index)  # ties sort by primary key
        if states is not None:
            wanted_states = set(states)
            matches = [i for i in matches if ("success" if now >= done_at[i] else "running") in wanted_states]
        if ended_ts is not None:  # only finished runs have an end_date
            matches = [i for i in matches if now >= done_at[i] and done_at[i] >= ended_ts]
        if order_by.lstrip("-") == "end_date":  # unfinished runs (no end_date) last
            matches.sort(key=lambda i: (now < done_at[i], done_at[i]), reverse=order_by.startswith("-"))
        page = matches[offset : offset + limit]
        runs = b",".join(up.run_body(i, now) for i in page)
        out = b'{"dag_runs":[' + runs + b'],"total_entries":' + str(len(matches)).encode() + b"}"
        up.count("runs_list", now, len(raw), len(out), 200)
        return web.Response(body=out, content_type=JSON)

    async def other(request: web.Request) -> web.Response:
        return not_found("other", time.time(), "Not Found")

    async def schedule(request: web.Request) -> web.Response:
        body = await request.json()
        up.schedule(body["dag_ids"], body["done_at"])
        return web.json_response({"runs": len(up.dag_ids)})

    async def reset(request: web.Request) -> web.Response:
        up.reset()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(up.stats())

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/api/v2/version", version)
    app.router.add_post("/api/v2/dags/{dag_id}/dagRuns/list", list_runs)
    app.router.add_get("/api/v2/dags/{dag_id}/dagRuns/{run_id}", get_run)
    app.router.add_get("/api/v2/dags/{dag_id}", get_dag)
    app.router.add_get("/api/v2/dags", list_dags)
    app.router.add_post("/_schedule", schedule)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


async def serve(mode: str, port: int, max_seconds: float) -> None:
    up = Upstream(mode)
    runner = web.AppRunner(make_app(up), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096, reuse_address=True)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    print(f"PORT {sockets[0].getsockname()[1]}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("ours", "http"), default="ours")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free loopback port")
    parser.add_argument(
        "--max-seconds", type=float, default=900.0, help="exit after this long, whatever happens"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.mode, args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
