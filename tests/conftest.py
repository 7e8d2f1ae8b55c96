"""Test-wide setup: an isolated downstream AIRFLOW_HOME, and the aioresponses/aiohttp 3.14 shim."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The test process is the *downstream* deployment: give it its own home before Airflow is imported.
if "XDEP_TEST_HOME" not in os.environ:
    os.environ["XDEP_TEST_HOME"] = tempfile.mkdtemp(prefix="xdep-downstream-")
_home = Path(os.environ["XDEP_TEST_HOME"])
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "tests" / "integration" / "downstream_dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

import aiohttp  # noqa: E402
import aioresponses  # noqa: E402
import aioresponses.core  # noqa: E402
import pytest  # noqa: E402


class _ShimResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass ``stream_writer``, which aiohttp >= 3.14 requires."""

    def __init__(self, *args, stream_writer=None, **kwargs):
        if stream_writer is None:
            stream_writer = types.SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=stream_writer, **kwargs)


aioresponses.core.ClientResponse = _ShimResponse


@pytest.fixture(autouse=True)
async def _close_shared_clients():
    """After each test, close the HTTP clients its event loop shared (``RemoteAirflowHook.client_for``).

    A triggerer's loop and its clients live as long as the process; a test's loop ends with the test,
    and a client left open is only found by the garbage collector (aiohttp's "Unclosed client session").
    """
    yield
    await _close_loop_clients()


async def _close_loop_clients() -> None:
    from xdep_sensors.hooks import remote_airflow as hook

    for client in hook._clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


def close_shared_clients_then(coro):
    """``asyncio.run(coro)``, then close the clients shared on that loop (see ``_close_shared_clients``)."""

    async def run():
        try:
            return await coro
        finally:
            await _close_loop_clients()

    return asyncio.run(run())


@contextlib.contextmanager
def upstream_mock(base: str = "http://up.test:8080", version: str = "3.3.2"):
    """aioresponses with the upstream's version endpoints answering (a configured API version is checked once)."""
    with aioresponses.aioresponses() as mocked:
        mocked.get(f"{base}/api/v2/version", payload={"version": version}, repeat=True)
        mocked.get(f"{base}/api/v1/version", payload={"version": "2.11.2"}, repeat=True)
        yield mocked


@contextlib.contextmanager
def instant_sleep():
    """Patch ``asyncio.sleep`` to return at once (still yielding to the loop); yields the requested delays."""
    import asyncio
    from unittest import mock

    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def fake(seconds, *args, **kwargs):
        delays.append(seconds)
        await real_sleep(0)

    with mock.patch("asyncio.sleep", fake):
        yield delays


_REAL_SLEEP = asyncio.sleep  # what the helpers below yield with, whatever a test patches


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


class MemoryStateStore:
    """The asset state store's interface (``aget``/``aset``) over a dict, keeping JSON like the real one."""

    def __init__(self):
        self.data: dict = {}

    async def aget(self, key, default=None):
        return self.data.get(key, default)

    async def aset(self, key, value):
        import json

        self.data[key] = json.loads(json.dumps(value))
