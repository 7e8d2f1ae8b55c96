"""A chaos upstream: a loopback reverse proxy that misbehaves on demand, then passes through.

It runs its own event loop in a thread, so the code under test (a trigger in the test's loop, or a
sensor's synchronous ``poke``) meets it exactly as it would meet a real, flaky upstream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from devtools.airflow_local import free_port

TRANSIENT = ("500", "502", "503", "429", "reset", "hang", "refuse")
PERMANENT = ("html", "truncated", "content_type", "redirect")
LOGIN_PAGE = "<!DOCTYPE html><html><body><form action='/login'>Sign in with SSO</form></body></html>"


@dataclass
class Fault:
    kind: str
    until: float
    requests: int = 0


@dataclass
class Redirected:
    """The other host a redirect points at: it records the Authorization headers it was sent."""

    port: int = field(default_factory=free_port)
    authorizations: list[str | None] = field(default_factory=list)


class ChaosProxy:
    """Reverse proxy to ``target``; ``inject(kind, seconds)`` makes it misbehave for a while."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fault: Fault | None = None
        self.total = 0
        self.paths: Counter[str] = Counter()  # requests per path (a pass-through request counter)
        self.user_agents: Counter[str | None] = Counter()  # requests per User-Agent header
        self.other = Redirected()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="chaos-proxy")
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # lifecycle ------------------------------------------------------------------------------

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()
        other = web.Application()
        other.router.add_route("*", "/{tail:.*}", self._other_host)
        self._other_runner = web.AppRunner(other, access_log=None)
        await self._other_runner.setup()
        await web.TCPSite(self._other_runner, "127.0.0.1", self.other.port).start()

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    def stop(self) -> None:
        async def _stop():
            await self._runner.cleanup()
            await self._other_runner.cleanup()
            await self._session.close()

        self._call(_stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # faults -----------------------------------------------------------------------------------

    def inject(self, kind: str, seconds: float) -> Fault:
        """Misbehave for ``seconds``; ``refuse`` closes the listening socket for that long."""
        assert kind in TRANSIENT + PERMANENT, kind
        fault = self.fault = Fault(kind, time.monotonic() + seconds)
        if kind == "refuse":
            self._call(self._site.stop())

            async def reopen():
                await asyncio.sleep(seconds)
                await self._listen()

            asyncio.run_coroutine_threadsafe(reopen(), self._loop)
        return fault

    def clear(self) -> None:
        self.fault = None

    def _active(self) -> Fault | None:
        fault = self.fault
        return fault if fault is not None and time.monotonic() < fault.until else None

    async def _other_host(self, request: web.Request) -> web.Response:
        self.other.authorizations.append(request.headers.get("Authorization"))
        return web.json_response({"version": "3.3.2"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.total += 1
        self.paths[request.path] += 1
        self.user_agents[request.headers.get("User-Agent")] += 1
        fault = self._active()
        if fault is None:
            return await self._pass(request)
        fault.requests += 1
        kind = fault.kind
        if kind in ("500", "502", "503"):
            return web.Response(status=int(kind), text=f"<html>{kind} upstream deploying</html>",
                                content_type="text/html")
        if kind == "429":
            return web.json_response({"detail": "rate limited"}, status=429, headers={"Retry-After": "2"})
        if kind == "reset":
            request.transport.abort()
            await asyncio.sleep(0.1)
            return web.Response(status=500)
        if kind == "hang":
            await asyncio.sleep(max(fault.until - time.monotonic(), 0) + 5)
            return await self._pass(request)
        if kind == "html":
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        if kind == "truncated":
            return web.Response(text='{"dag_run_id": "x", "state": ', content_type="application/json")
        if kind == "content_type":
            return web.Response(text="OK", content_type="text/plain")
        if kind == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.other.port}{request.path_qs}")
        return await self._pass(request)  # refuse: nothing reaches here while closed

    async def _pass(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body = await request.read()
        async with self._session.request(request.method, self.target + request.path_qs, headers=headers,
                                         data=body or None, allow_redirects=False) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if k.lower() in ("content-type", "retry-after", "location", "content-encoding")}
            return web.Response(status=upstream.status, body=payload, headers=out)
