"""Helpers shared by the test modules (fixtures are in the ``conftest.py`` files).

Importing this module imports no Airflow (``xdep_sensors.client`` imports none): ``tests/conftest.py``
imports it before its ``pytest_configure`` gives Airflow the test home.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import aioresponses

from xdep_sensors.client import ClientConfig, RemoteAirflowClient

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = "http://up.test:8080"  # the upstream that ``upstream_mock`` answers for
SCHEDULED_RUN_ID = "scheduled__2026-11-20T00:00:00+00:00"  # the daily run of 2026-11-20, as Airflow names it

_REAL_SLEEP = asyncio.sleep  # what the helpers below yield with, whatever a test patches


# --- the mocked upstream (aioresponses) --------------------------------------------------------------


@contextlib.contextmanager
def upstream_mock(base: str = UPSTREAM, version: str = "3.3.2"):
    """aioresponses with the upstream's version endpoints answering (a configured API version is
    checked once)."""
    with aioresponses.aioresponses() as mocked:
        mocked.get(f"{base}/api/v2/version", payload={"version": version}, repeat=True)
        mocked.get(f"{base}/api/v1/version", payload={"version": "2.11.2"}, repeat=True)
        yield mocked


def url(path: str) -> re.Pattern:
    """The mocked upstream's ``path``, with any query string."""
    return re.compile(re.escape(UPSTREAM + path) + r"(\?.*)?$")


def set_upstream_conn(monkeypatch, password: str = "tok") -> None:
    """Connection ``upstream`` (an ``AIRFLOW_CONN_UPSTREAM`` variable, for this test only): the mocked
    upstream, API v2."""
    conn = {
        "conn_type": "remote_airflow",
        "host": UPSTREAM,
        "password": password,
        "extra": {"api_version": "v2"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_UPSTREAM", json.dumps(conn))


def mocked_client(version: str = "v2") -> RemoteAirflowClient:
    """A client of the mocked upstream over aiohttp (requests, retries and sleeps of its own)."""
    return RemoteAirflowClient(ClientConfig(base_url=UPSTREAM, password="t", api_version=version))


def scheduled_run_json(
    dag_id: str,
    state: str = "running",
    run_id: str = SCHEDULED_RUN_ID,
    run_after: datetime = datetime(2026, 11, 21, tzinfo=timezone.utc),
) -> dict:
    """An upstream DAG run as API v2 lists it: by default the daily run of 2026-11-20, due a day later."""
    return {
        "dag_run_id": run_id,
        "dag_id": dag_id,
        "state": state,
        "logical_date": "2026-11-20T00:00:00+00:00",
        "run_after": run_after.isoformat(),
        "conf": {},
    }


# --- the in-memory upstream (devtools.memory_upstream) --------------------------------------------------


def memory_client(upstream, config: ClientConfig | None = None) -> RemoteAirflowClient:
    """A client whose requests the in-memory upstream answers (``config``: by default its API version)."""
    config = config or ClientConfig("http://up.test", password="t", api_version=upstream.api)
    return RemoteAirflowClient(config, transport=upstream)  # type: ignore[arg-type]


def calls(upstream) -> int:
    """The requests the in-memory upstream answered, version checks aside."""
    return sum(n for path, n in upstream.requests.items() if not path.endswith("/version"))


# --- sleeps: patched in the modules that call ``asyncio.sleep``, never process-wide ----------------------


class _AsyncioWithSleep:
    """``asyncio`` as one module sees it while a test replaces its ``sleep``: the rest is the real one."""

    def __init__(self, sleep):
        self.sleep = sleep

    def __getattr__(self, name):
        return getattr(asyncio, name)


@contextlib.contextmanager
def sleep_patched(new, *modules):
    """Make ``asyncio.sleep`` be ``new`` for the code of ``modules`` only (each one's ``asyncio`` name);
    every other caller, the test's own and aiohttp's included, sleeps as usual. Yields ``new``.

    A module whose code calls ``asyncio.sleep`` is patched, not the callers of its functions: the polling
    loop's ``pacing.sleep`` is patched for every trigger that pauses through it, however they import it.
    """
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch.object(module, "asyncio", _AsyncioWithSleep(new)))
        yield new


@contextlib.contextmanager
def instant_sleep(*modules):
    """``asyncio.sleep`` returns at once (still yielding to the loop) in ``modules``; yields the requested
    delays, in order."""
    delays: list[float] = []

    async def fake(seconds, *args, **kwargs):
        delays.append(seconds)
        await _REAL_SLEEP(0)

    with sleep_patched(fake, *modules):
        yield delays


# --- triggers and shared polls ---------------------------------------------------------------------------


async def next_or_quiet(agen, polls_done, polls: int = 3, guard_s: float = 120.0):
    """The next item of ``agen`` (a trigger's ``run()``), or ``None`` once its trigger has made ``polls``
    more polls without one.

    ``polls_done()`` counts the trigger's polls: the delays ``instant_sleep`` recorded, a sleep mock's
    ``await_count``, requests the upstream answered. "Nothing happened" is proven by polls, never by a
    fixed time, so a slow machine proves as much as a fast one (``guard_s`` only stops a hung test). A
    generator left waiting is closed (as a triggerer cancels a trigger).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(agen.__anext__())
    target, give_up = polls_done() + polls, loop.time() + guard_s
    try:
        while loop.time() < give_up:
            if task.done():
                return task.result()
            if polls_done() >= target:
                return None
            await _REAL_SLEEP(0.001)
        raise AssertionError(f"neither an item nor {polls} more polls in {guard_s:g} s")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await task


async def first_results(poller, probes):
    """Subscribe every probe to one shared poll at once and return each one's first outcome."""

    async def one(probe):
        async with poller.subscribe(probe) as updates:
            return await updates.get()

    return await asyncio.gather(*(one(p) for p in probes))


class MemoryStateStore:
    """The asset state store's interface (``aget``/``aset``) over a dict, keeping JSON like the real one."""

    def __init__(self):
        self.data: dict = {}

    async def aget(self, key, default=None):
        return self.data.get(key, default)

    async def aset(self, key, value):
        self.data[key] = json.loads(json.dumps(value))


# --- event loops and their shared clients ----------------------------------------------------------------


async def close_loop_clients() -> None:
    """Close the HTTP clients this event loop shared (``RemoteAirflowHook.client_for``)."""
    from xdep_sensors.hooks import remote_airflow as hook  # imports Airflow: only once a test runs

    for client in hook.CLIENTS.drop_loop(asyncio.get_running_loop()):
        await client.close()


def close_shared_clients_then(coro):
    """``asyncio.run(coro)``, then close the clients shared on that loop (as after each test)."""

    async def run():
        try:
            return await coro
        finally:
            await close_loop_clients()

    return asyncio.run(run())
