"""An aiohttp app on loopback (127.0.0.1, a free port), served from a daemon thread with its own loop.

The test doubles of the clouds' sides (devtools/mwaa_double.py, devtools/google_doubles.py) and the
small echo upstreams of their unit tests are such apps.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Callable

import aiohttp
from aiohttp import web


class Loopback:
    """An aiohttp app served on 127.0.0.1:<free port> from a daemon thread with its own loop."""

    _thread_name = "loopback"

    def __init__(self, routes: Callable[[web.Application], None] | None = None) -> None:
        self._add_routes = routes
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    def start(self) -> str:
        """Serve from a daemon thread; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self._thread_name, daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=30)
        self._base_url = f"http://127.0.0.1:{port}"
        return self._base_url

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("not started")
        return self._base_url

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _routes(self, app: web.Application) -> None:
        """The app's routes: the ``routes`` given, or a subclass's."""
        if self._add_routes is None:
            raise NotImplementedError
        self._add_routes(app)

    async def _setup(self) -> None:
        """Called on the double's loop before serving."""

    async def _teardown(self) -> None:
        """Called on the double's loop after serving."""

    async def _open(self) -> int:
        await self._setup()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        return int(sock.getsockname()[1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._teardown()


class Front(Loopback):
    """A loopback server in front of another (a cloud's side of Airflow's API): every request goes to
    ``_handle``, which may forward it with ``self._session`` (no cookies kept between callers)."""

    upstream_timeout = aiohttp.ClientTimeout(total=60)

    def __init__(self) -> None:
        super().__init__()
        self._session: aiohttp.ClientSession | None = None

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self.upstream_timeout, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def _teardown(self) -> None:
        if self._session is not None:
            await self._session.close()
