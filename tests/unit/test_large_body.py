"""A JSON answer larger than one network read arrives whole (``StreamReader.read(n)`` returns what
has arrived)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from xdep_sensors.client import ClientConfig, RemoteAirflowClient


async def test_body_sent_in_pieces_is_read_whole():
    dags = [{"dag_id": f"dag_{i:04d}", "is_paused": False, "padding": "x" * 1000} for i in range(100)]
    body = json.dumps({"dags": dags, "total_entries": 100}).encode()  # ~110 KB

    async def listing(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for start in range(
            0, len(body), 16384
        ):  # in pieces, with pauses, as a slow upstream or proxy sends it
            await resp.write(body[start : start + 16384])
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/v2/version", lambda r: web.json_response({"version": "3.3.2"}))
    app.router.add_get("/api/v2/dags", listing)
    async with TestServer(app, host="127.0.0.1") as server:
        config = ClientConfig(
            base_url=str(server.make_url("")).rstrip("/"), password="t", api_version="v2", conn_id="up"
        )
        async with RemoteAirflowClient(config) as client:
            found = await client.list_dags()
    assert [d.dag_id for d in found] == [d["dag_id"] for d in dags]
