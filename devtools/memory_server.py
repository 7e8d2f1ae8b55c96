"""Serve a ``MemoryUpstream`` over HTTP on loopback, in its own process (for benchmarks/assets.py).

    python -m devtools.memory_server [--api v2]       # prints "PORT <n>" once listening

REST routes as the model answers them (any bearer token is accepted), plus control routes that
are not part of the API: ``POST /_events`` ``[[asset_id, iso timestamp(, partition key)], ...]`` -> event ids,
``POST /_runs`` ``[[dag_id, run_id, state, logical, start, end], ...]`` (dates ISO or null),
``GET /_stats`` -> ``{"requests": {...}, "cpu": <process CPU seconds>}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from aiohttp import web

from devtools.memory_upstream import MemoryUpstream
from xdep_sensors.client.dialects import Request
from xdep_sensors.client.records import parse_dt


def app_for(upstream: MemoryUpstream) -> web.Application:
    async def api(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        req = Request(request.method, request.path, tuple(request.query.items()), body)
        try:
            text = upstream._answer(req)
        except Exception as exc:  # noqa: BLE001 - a model gap answers 404, as a missing route would
            return web.json_response({"detail": str(exc)}, status=404)
        return web.Response(text=text, content_type="application/json")

    async def add_events(request: web.Request) -> web.Response:
        rows = await request.json()
        return web.json_response(
            [upstream.add_event(int(a), parse_dt(t), partition_key=(k or [None])[0]) for a, t, *k in rows]
        )

    async def put_runs(request: web.Request) -> web.Response:
        for dag_id, run_id, state, logical, start, end in await request.json():
            upstream.put_run(
                dag_id,
                run_id,
                state,
                logical_date=parse_dt(logical),
                start=parse_dt(start),
                end=parse_dt(end),
            )
        return web.json_response({})

    async def stats(request: web.Request) -> web.Response:
        body = {"requests": dict(upstream.requests), "cpu": time.process_time()}
        if request.query.get("log"):  # and the requests since the previous ?log=1, then forget them
            body["log"], upstream.log = upstream.log or [], []
        return web.json_response(body)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/_events", add_events)
    app.router.add_post("/_runs", put_runs)
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:api/.*}", api)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", default="v2")
    args = parser.parse_args()
    upstream = MemoryUpstream(api=args.api)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app_for(upstream), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        return runner

    import asyncio

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start())

    async def watch_parent() -> None:
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(1)
        sys.exit(0)

    loop.run_until_complete(watch_parent())


if __name__ == "__main__":
    main()
