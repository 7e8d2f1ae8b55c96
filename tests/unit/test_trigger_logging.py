"""What a waiting trigger logs (changes, a heartbeat, detail at DEBUG) and what a shared poll hands it."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from tests.helpers import instant_sleep
from xdep_sensors.client import ClientConfig
from xdep_sensors.core import pacing
from xdep_sensors.core import poller as polling
from xdep_sensors.core.decisions import Decision
from xdep_sensors.core.needs import AssetNeed
from xdep_sensors.triggers import RemoteDagRunTrigger

BASE = "http://up.test:8080"
CONFIG = ClientConfig(base_url=BASE, password="t", api_version="v2", conn_id="up")


pytestmark = pytest.mark.usefixtures("remote_conn")


def fake_clock(monkeypatch, times):
    """``polling._clock`` returns these readings, then keeps the last: no wall clock involved."""
    readings = itertools.chain(times, itertools.repeat(times[-1]))
    monkeypatch.setattr(polling, "_clock", lambda: next(readings))


class Script:
    """A probe that sees a scripted sequence of views; an unchanged view is the same decision object."""

    def __init__(self, messages):
        self.decisions = []
        for message in messages:
            same = self.decisions and self.decisions[-1].message == message
            status = "success" if message.endswith("success") else "waiting"
            self.decisions.append(
                self.decisions[-1] if same else Decision(status, message, {} if status != "waiting" else None)
            )
        self.looks = 0

    refs: tuple = ()  # no asset to resolve: a shared poll reads nothing for it
    ids: dict = {}

    def need(self):
        return AssetNeed()

    def unchanged(self, source):
        return None

    async def step(self, source):
        self.looks += 1
        return self.decisions[min(self.looks, len(self.decisions)) - 1]

    async def __call__(self, client):
        return await self.step(None)


VIEWS = ["p: running, 1/3 tasks done"] * 3 + ["p: running, 2/3 tasks done"] * 2 + ["p -> success"]


async def delivered(probe, every_look=False):
    out = []
    async with polling.POLLERS.get(CONFIG, 5).subscribe(probe, every_look) as updates:
        while True:
            out.append(await updates.get())
            if out[-1].done:
                return out


class TestSharedPollHandsOver:
    async def test_only_changes(self):
        with instant_sleep(pacing):
            out = await delivered(Script(VIEWS))
        assert [d.message for d in out] == [
            "p: running, 1/3 tasks done",
            "p: running, 2/3 tasks done",
            "p -> success",
        ]

    async def test_every_look_when_the_trigger_logs_debug(self):
        with instant_sleep(pacing):
            out = await delivered(Script(VIEWS), every_look=True)
        assert len(out) == len(VIEWS)

    async def test_unchanged_view_again_after_the_heartbeat_period(self, monkeypatch):
        fake_clock(
            monkeypatch, [0.0, 100.0, polling.HEARTBEAT_S + 1, polling.HEARTBEAT_S + 2, 1300.0, 1400.0]
        )
        with instant_sleep(pacing):
            out = await delivered(Script(VIEWS))
        # looks at t=0, 100, 601 (heartbeat: the 1/3 view again), 602 (2/3: changed), 1300, 1400 (success)
        assert [d.message for d in out] == ["p: running, 1/3 tasks done"] * 2 + [
            "p: running, 2/3 tasks done",
            "p -> success",
        ]


class TestTriggerLogsChanges:
    async def run_trigger(self, monkeypatch, caplog, views, shared=False):
        monkeypatch.setattr(polling, "SHARED_POLLING", shared)
        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream", external_dag_id="p", run_id="r1", poke_interval=5
        )
        logger = logging.getLogger("test.xdep.trigger")
        logger.setLevel(logging.DEBUG)
        trigger._log = logger
        probe = Script(views)
        monkeypatch.setattr(trigger, "_make_probe", lambda: probe)
        with instant_sleep(pacing), caplog.at_level(logging.DEBUG, logger="test.xdep.trigger"):
            event = await asyncio.wait_for(trigger.run().__anext__(), 10)
        assert event.payload["status"] == "success"
        return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.xdep.trigger"]

    async def test_info_on_change_debug_otherwise(self, monkeypatch, caplog):
        fake_clock(monkeypatch, [0.0])
        lines = await self.run_trigger(monkeypatch, caplog, VIEWS)
        assert [m for level, m in lines if level == "INFO"] == [
            "p: running, 1/3 tasks done",
            "p: running, 2/3 tasks done",
            "p -> success",
        ]
        assert [m for level, m in lines if level == "DEBUG"] == ["p: running, 1/3 tasks done"] * 2 + [
            "p: running, 2/3 tasks done"
        ]

    async def test_heartbeat_while_nothing_changes(self, monkeypatch, caplog):
        fake_clock(monkeypatch, [0.0, 300.0, 650.0, 700.0, 1300.0, 1301.0])
        views = ["p: running, 0/3 tasks done"] * 5 + ["p -> success"]
        lines = await self.run_trigger(monkeypatch, caplog, views)
        assert [(level, m) for level, m in lines if level == "INFO"] == [
            ("INFO", "p: running, 0/3 tasks done"),
            ("INFO", "still waiting: p: running, 0/3 tasks done"),  # 650 s after the first line
            ("INFO", "still waiting: p: running, 0/3 tasks done"),  # 650 s after the heartbeat
            ("INFO", "p -> success"),
        ]

    async def test_shared_poll_trigger_with_debug_sees_every_look(self, monkeypatch, caplog):
        fake_clock(monkeypatch, [0.0])
        lines = await self.run_trigger(monkeypatch, caplog, VIEWS, shared=True)
        assert len(lines) == len(VIEWS)  # its logger is at DEBUG: every look is handed over and logged


def test_triggers_of_a_class_share_one_logger_under_airflows_name():
    """Thousands of waits keep no logger each; the line keeps the name Airflow's per-trigger one had."""
    from xdep_sensors.triggers import RemoteAssetTrigger

    first, second = (RemoteDagRunTrigger(remote_conn_id="u", external_dag_id=d, run_id="r") for d in "pq")
    assert first.log is second.log
    assert first.log._logger_factory_args == ("xdep_sensors.triggers.RemoteDagRunTrigger",)
    asset = RemoteAssetTrigger(remote_conn_id="u", assets=[{"uri": "s3://b/k"}])
    assert asset.log is not first.log
    assert asset.log._logger_factory_args == ("xdep_sensors.triggers.RemoteAssetTrigger",)

    class Mine(RemoteDagRunTrigger):  # a user's subclass logs under its own name, not its parent's
        pass

    mine = Mine(remote_conn_id="u", external_dag_id="p", run_id="r")
    assert mine.log._logger_factory_args == (f"{__name__}.Mine",)
    own = logging.getLogger("test.xdep.own")
    second._log = own  # a logger set on one trigger stays that trigger's
    assert second.log is own and first.log is not own
