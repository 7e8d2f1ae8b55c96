"""Alert triggers: arguments, serialization, what fires (once), durable state, requests, errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from airflow.triggers.base import BaseEventTrigger

from tests.helpers import MemoryStateStore, instant_sleep, next_or_quiet, upstream_mock
from xdep_sensors.client import TaskInstance, session
from xdep_sensors.client.dialects import DIALECTS
from xdep_sensors.core import pacing
from xdep_sensors.triggers import (
    RemoteDagRunDeadlineTrigger,
    RemoteDagRunDurationTrigger,
    RemoteTaskInstanceEventTrigger,
)
from xdep_sensors.triggers.alerts import EndedTask
from xdep_sensors.triggers.watchers import SUBSCRIBERS

BASE = "http://up.test:8080"


@contextlib.contextmanager
def alert_upstream():
    """The mocked upstream, where DAG ``producer`` exists (an alert looks at it first: is it visible?)."""
    with upstream_mock() as m:
        m.get(BASE + "/api/v2/dags/producer", payload={"dag_id": "producer", "is_paused": False}, repeat=True)
        yield m


TI_LIST = BASE + "/api/v2/dags/~/dagRuns/~/taskInstances/list"
RUN_LIST = BASE + "/api/v2/dags/~/dagRuns/list"
UTC = timezone.utc


pytestmark = pytest.mark.usefixtures("remote_conn")


@pytest.fixture(autouse=True)
def variables(monkeypatch):
    """Without an asset state store a trigger keeps its state in an Airflow Variable: a dict here."""
    from xdep_sensors.triggers import state as durable

    box: dict = {}
    monkeypatch.setattr(durable, "_variable_get", lambda key: box.get(key))
    monkeypatch.setattr(durable, "_variable_set", lambda key, value: box.__setitem__(key, value))
    return box


class StaleCopyStore(MemoryStateStore):
    """A store shared with another copy of the trigger: the copy under test loads ``loaded`` (its
    position before it stalled) and then sees what the other copy stored meanwhile."""

    def __init__(self, shared: MemoryStateStore, loaded: dict):
        super().__init__()
        self.data, self.loaded = shared.data, loaded

    async def aget(self, key, default=None):
        loaded, self.loaded = self.loaded, None
        return loaded if loaded is not None else await super().aget(key, default)


class UnreadableAfterLoad(MemoryStateStore):
    """A store that answers the trigger's first read (its start) and then cannot be read."""

    def __init__(self, loaded: dict):
        super().__init__()
        self.loaded, self.reads = loaded, 0

    async def aget(self, key, default=None):
        self.reads += 1
        if self.reads > 1:
            raise RuntimeError("state store unreachable")
        return self.loaded


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def ti_json(
    task_id="grp.boom",
    state="failed",
    end=None,
    run="r1",
    try_number=2,
    map_index=-1,
    start=None,
    dag_id="producer",
):
    return {
        "dag_id": dag_id,
        "dag_run_id": run,
        "task_id": task_id,
        "state": state,
        "map_index": map_index,
        "try_number": try_number,
        "start_date": start or ago(30),
        "end_date": end,
    }


def manual_run_json(run_id="r1", state="running", start=None, end=None, dag_id="producer"):
    """A manual run (no logical date) of ``dag_id`` as API v2 lists it, due a minute ago."""
    return {
        "dag_id": dag_id,
        "dag_run_id": run_id,
        "state": state,
        "logical_date": None,
        "run_after": ago(60),
        "start_date": start,
        "end_date": end,
        "run_type": "manual",
        "conf": {},
    }


def assert_round_trip(trigger):
    classpath, kwargs = trigger.serialize()
    again = type(trigger)(**kwargs).serialize()
    assert again == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again)
    assert "tok" not in json.dumps(kwargs)
    assert classpath.startswith("xdep_sensors.")


class TestRemoteTaskInstanceEventTrigger:
    def make(self, **kwargs):
        return RemoteTaskInstanceEventTrigger(
            remote_conn_id="upstream", external_dag_id="producer", poll_interval=5, **kwargs
        )

    def test_serialization(self):
        t = self.make(task_group_id="grp", states=["upstream_failed", "failed"])
        assert_round_trip(t)
        assert t.serialize()[1] == {
            "remote_conn_id": "upstream",
            "poll_interval": 5.0,
            "external_dag_id": "producer",
            "task_ids": None,
            "task_group_id": "grp",
            "states": ["failed", "upstream_failed"],
        }

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"states": ["running"]}, "states must be"),
            ({"states": "failed"}, "states must be"),
            ({"states": []}, "states must be"),
            ({"task_ids": ["a"], "task_group_id": "g"}, "at most one of task_ids, task_group_id"),
            ({"task_ids": "a"}, "task_ids must be"),
            ({"task_group_id": ""}, "task_group_id must be"),
            ({"external_dag_id": ""}, "external_dag_id must be"),
            ({"poll_interval": 0}, "poll_interval must be"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        base = {"remote_conn_id": "upstream", "external_dag_id": "producer"}
        with pytest.raises(ValueError, match=match):
            RemoteTaskInstanceEventTrigger(**{**base, **kwargs})

    def test_filters_by_dag_state_and_tasks(self):
        end = datetime.now(UTC)

        def ended(task_id, state="failed", dag_id="producer"):
            return EndedTask(TaskInstance(dag_id, "r1", task_id, state, end_date=end, try_number=1), "u")

        assert self.make().mine(ended("load")) and not self.make().mine(ended("load", "success"))
        assert not self.make().mine(ended("load", dag_id="other"))
        grouped = self.make(task_group_id="grp")
        assert grouped.mine(ended("grp.a")) and grouped.mine(ended("grp.inner.b"))
        assert not grouped.mine(ended("grpx.a")) and not grouped.mine(ended("grp"))
        assert self.make(task_ids=["a"]).mine(ended("a")) and not self.make(task_ids=["a"]).mine(ended("b"))

    async def test_fires_once_per_final_state_with_payload_and_resumes_after_restart(self):
        store = MemoryStateStore()
        t = self.make(task_group_id="grp")
        t.asset_state_store = store
        end = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        body = {
            "task_instances": [
                ti_json("grp.boom", "failed", end),
                ti_json("grp.ok", "success", end),
                ti_json("grp.retry", "up_for_retry", end),
            ],
            "total_entries": 3,
        }
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(TI_LIST, payload=body, repeat=True)
            gen = t.run()
            first = await asyncio.wait_for(gen.__anext__(), 5)
            assert (
                await next_or_quiet(gen, lambda: len(delays)) is None
            )  # the same listing again: nothing new
            (call, *_) = [c for k, calls in m.requests.items() if k[0] == "POST" for c in calls]
            t2 = self.make(task_group_id="grp")  # "restart" on the same store
            t2.asset_state_store = store
            assert await next_or_quiet(t2.run(), lambda: len(delays)) is None
        ti = first.payload["task_instance"]
        assert first.payload["upstream"] == BASE
        assert (ti["task_id"], ti["state"], ti["try_number"], ti["map_index"]) == (
            "grp.boom",
            "failed",
            2,
            -1,
        )
        assert ti["url"] == BASE + "/dags/producer/runs/r1/tasks/grp.boom"
        sent = call.kwargs["json"]
        assert sent["dag_ids"] == ["producer"] and sent["order_by"] == "end_date" and "end_date_gte" in sent
        assert sorted(sent["state"]) == ["failed", "skipped", "success", "upstream_failed"]

    async def test_a_cleared_task_that_fails_again_fires_again(self):
        t = self.make()
        t.asset_state_store = MemoryStateStore()
        await t.load_cursor()
        end1 = datetime.now(UTC) + timedelta(seconds=1)
        first = EndedTask(TaskInstance("producer", "r1", "load", "failed", end_date=end1, try_number=1), "u")
        again = EndedTask(
            TaskInstance(
                "producer", "r1", "load", "failed", end_date=end1 + timedelta(seconds=9), try_number=2
            ),
            "u",
        )
        assert len([e async for e in t.emit([first], BASE)]) == 1
        assert [e.payload["task_instance"]["try_number"] async for e in t.emit([first, again], BASE)] == [2]

    async def test_shared_poll_covers_every_watched_dag_in_one_request(self):
        a = self.make()
        b = RemoteTaskInstanceEventTrigger(
            remote_conn_id="upstream", external_dag_id="other", poll_interval=5
        )
        assert a.shared_stream_key() == b.shared_stream_key()
        for t in (a, b):
            await t.load_cursor()
            t.target_id = t.target  # resolved (as filter_shared_stream does on its first batch)
            SUBSCRIBERS.add(t.shared_stream_key(), t)
        try:
            with alert_upstream() as m:
                m.post(TI_LIST, payload={"task_instances": [], "total_entries": 0})
                stream = RemoteTaskInstanceEventTrigger.open_shared_stream(a.serialize()[1])
                await stream.__anext__()
                (call,) = [c for k, calls in m.requests.items() if k[0] == "POST" for c in calls]
                await stream.aclose()
            assert call.kwargs["json"]["dag_ids"] == ["other", "producer"]
        finally:
            for t in (a, b):
                SUBSCRIBERS.remove(t.shared_stream_key(), t)

    async def test_v1_request_has_no_order_by_and_links_to_the_grid(self):
        req = DIALECTS["v1"].ended_task_instances(["producer"], ["failed"], datetime(2026, 1, 1, tzinfo=UTC))
        assert req.path == "/api/v1/dags/~/dagRuns/~/taskInstances/list"
        assert "order_by" not in req.json and req.json["end_date_gte"] == "2026-01-01T00:00:00+00:00"
        assert (
            DIALECTS["v1"].ui_task_path("d", "r 1", "t", 3)
            == "/dags/d/grid?dag_run_id=r%201&task_id=t&map_index=3"
        )

    async def test_errors_back_off_and_never_end_the_watcher(self):
        t = self.make()
        end = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(TI_LIST, status=503, body="down", repeat=4)
            m.post(TI_LIST, status=403, payload={"detail": "Forbidden"})
            m.post(TI_LIST, payload={"task_instances": [ti_json(end=end)], "total_entries": 1})
            event = await asyncio.wait_for(t.run().__anext__(), 5)
        assert event.payload["task_instance"]["run_id"] == "r1"
        assert 300 in delays  # a permission problem waits long (someone must fix the token), then retries


class TestRemoteDagRunDurationTrigger:
    def make(self, **kwargs):
        return RemoteDagRunDurationTrigger(
            remote_conn_id="upstream", external_dag_id="producer", max_duration=60, poll_interval=5, **kwargs
        )

    def test_serialization(self):
        t = RemoteDagRunDurationTrigger(
            remote_conn_id="upstream",
            external_dag_id="producer",
            max_duration=timedelta(minutes=90),
            task_ids=["load"],
        )
        assert_round_trip(t)
        assert t.serialize()[1]["max_duration"] == 5400.0  # a plain number, whatever was given

    @pytest.mark.parametrize("value", [0, -1, timedelta(0), "60", True, None])
    def test_bad_max_duration(self, value):
        with pytest.raises(ValueError, match="max_duration must be a positive"):
            RemoteDagRunDurationTrigger(
                remote_conn_id="upstream", external_dag_id="producer", max_duration=value
            )

    async def test_fires_once_per_run_over_the_limit_while_it_runs(self):
        store = MemoryStateStore()
        t = self.make()
        t.asset_state_store = store
        await store.aset(t._state_key, {"since": ago(3600), "fired": []})
        body = {
            "dag_runs": [
                manual_run_json("long", start=ago(120)),
                manual_run_json("short", start=ago(10)),
                manual_run_json("other", start=ago(500), dag_id="x"),
            ],
            "total_entries": 3,
        }
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(RUN_LIST, payload=body, repeat=True)
            gen = t.run()
            event = await asyncio.wait_for(gen.__anext__(), 5)
            assert await next_or_quiet(gen, lambda: len(delays)) is None
            t2 = self.make()  # restart: the stored state says "long" fired already
            t2.asset_state_store = store
            assert await next_or_quiet(t2.run(), lambda: len(delays)) is None
            sent = [c for k, calls in m.requests.items() if k[0] == "POST" for c in calls][0].kwargs["json"]
        assert event.payload["run"]["run_id"] == "long" and event.payload["run"]["state"] == "running"
        assert 119 < event.payload["running_for"] < 130 and event.payload["upstream"] == BASE
        assert event.payload["run"]["url"] == BASE + "/dags/producer/runs/long"
        assert sent["states"] == ["running"] and sent["dag_ids"] == ["producer"]

    async def test_a_copy_left_running_on_a_stalled_triggerer_does_not_alert_again(self):
        store = MemoryStateStore()
        before = {"since": ago(3600), "fired": []}
        other, stale = self.make(), self.make()
        other.asset_state_store = store
        await store.aset(other._state_key, before)
        body = {"dag_runs": [manual_run_json("long", start=ago(120))], "total_entries": 1}
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(RUN_LIST, payload=body, repeat=True)
            gen = other.run()
            event = await asyncio.wait_for(gen.__anext__(), 5)
            assert await next_or_quiet(gen, lambda: len(delays)) is None  # handed over, then stored
            stale.asset_state_store = StaleCopyStore(store, before)  # resumes with "nothing fired"
            assert await next_or_quiet(stale.run(), lambda: len(delays)) is None
        assert event.payload["run"]["run_id"] == "long"

    async def test_an_unreadable_store_before_alerting_still_alerts(self, capsys):
        t = self.make()
        t.asset_state_store = UnreadableAfterLoad({"since": ago(3600), "fired": []})
        body = {"dag_runs": [manual_run_json("long", start=ago(120))], "total_entries": 1}
        with alert_upstream() as m, instant_sleep(pacing, session):
            m.post(RUN_LIST, payload=body, repeat=True)
            event = await asyncio.wait_for(t.run().__anext__(), 5)
        assert event.payload["run"]["run_id"] == "long"
        assert t.asset_state_store.reads == 2  # the start, then the read before the alert that failed
        out = capsys.readouterr().out
        assert "could not read the stored state" in out and "state store unreachable" in out

    async def test_limit_crossed_before_the_watcher_existed_does_not_fire(self):
        t = self.make()  # no store: starts "now"
        body = {
            "dag_runs": [manual_run_json("old", start=ago(3600)), manual_run_json("new", start=ago(59.5))],
            "total_entries": 2,
        }
        with alert_upstream() as m, instant_sleep(pacing, session):
            m.post(RUN_LIST, payload=body, repeat=True)
            event = await asyncio.wait_for(t.run().__anext__(), 5)
        assert event.payload["run"]["run_id"] == "new"

    async def test_forgets_runs_that_stopped_running(self):
        store = MemoryStateStore()
        t = self.make()
        t.asset_state_store = store
        await store.aset(t._state_key, {"since": ago(3600), "fired": ["gone@2026-01-01T00:00:00+00:00"]})
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(RUN_LIST, payload={"dag_runs": [], "total_entries": 0}, repeat=True)
            assert await next_or_quiet(t.run(), lambda: len(delays)) is None
        assert store.data[t._state_key]["fired"] == []

    async def test_task_duration_fires_per_task_try_with_its_run(self):
        t = self.make(task_ids=["load"])
        t.asset_state_store = MemoryStateStore()
        await t.asset_state_store.aset(t._state_key, {"since": ago(3600), "fired": []})
        tis = {
            "task_instances": [
                ti_json("load", "running", start=ago(90), try_number=3),
                ti_json("extract", "running", start=ago(90)),
            ],
            "total_entries": 2,
        }
        with alert_upstream() as m, instant_sleep(pacing, session):
            m.post(TI_LIST, payload=tis, repeat=True)
            m.get(BASE + "/api/v2/dags/producer/dagRuns/r1", payload=manual_run_json(start=ago(100)))
            event = await asyncio.wait_for(t.run().__anext__(), 5)
            sent = [c for k, calls in m.requests.items() if k[0] == "POST" for c in calls][0].kwargs["json"]
        ti = event.payload["task_instance"]
        assert (ti["task_id"], ti["try_number"], event.payload["run"]["run_id"]) == ("load", 3, "r1")
        assert 89 < event.payload["running_for"] < 100
        assert sorted(sent["state"]) == ["deferred", "running", "up_for_reschedule"]

    async def test_errors_back_off_and_never_end_the_watcher(self):
        t = self.make()
        t.asset_state_store = MemoryStateStore()
        await t.asset_state_store.aset(t._state_key, {"since": ago(3600), "fired": []})
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.post(RUN_LIST, status=503, body="down", repeat=4)
            m.post(RUN_LIST, payload={"dag_runs": [manual_run_json("r", start=ago(61))], "total_entries": 1})
            event = await asyncio.wait_for(t.run().__anext__(), 5)
        # after the failed poll: the interval, doubled with jitter (the client's one backoff rule)
        assert event.payload["run"]["run_id"] == "r" and any(5.0 <= d <= 10.0 for d in delays)


class TestRemoteDagRunDeadlineTrigger:
    def make(self, **kwargs):
        return RemoteDagRunDeadlineTrigger(
            remote_conn_id="upstream",
            external_dag_id="producer",
            deadline=kwargs.pop("deadline", "* * * * *"),
            poll_interval=5,
            **kwargs,
        )

    def test_serialization(self):
        t = RemoteDagRunDeadlineTrigger(
            remote_conn_id="upstream",
            external_dag_id="producer",
            deadline="30  6 * * 1-5",
            states=["success", "failed"],
            timezone="Europe/Amsterdam",
        )
        assert_round_trip(t)
        assert t.serialize()[1]["deadline"] == "30 6 * * 1-5"

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"deadline": "*/5 * * *"}, "deadline must be a 5-field cron"),
            ({"deadline": "0 0 * * * 5"}, "deadline must be a 5-field cron"),
            ({"deadline": "61 * * * *"}, "deadline must be a 5-field cron"),
            ({"deadline": "@daily"}, "deadline must be a 5-field cron"),
            ({"timezone": "Mars/Olympus"}, "timezone must be"),
            ({"states": ["running"]}, "states must be"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            self.make(**kwargs)

    def test_ticks_follow_the_time_zone(self):
        t = self.make(deadline="30 6 * * *", timezone="Europe/Amsterdam")
        ticks = t.ticks_after(datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))
        assert ticks == [
            datetime(2026, 3, 28, 5, 30, tzinfo=UTC),
            datetime(2026, 3, 29, 4, 30, tzinfo=UTC),
        ]  # DST
        assert t.previous_tick(ticks[1]) == ticks[0]

    async def run_until_quiet(self, t, runs_page):
        """Run the trigger against a fixed upstream answer; return its events until it goes quiet."""
        url = re.compile(re.escape(BASE + "/api/v2/dags/producer/dagRuns") + r"\?.*")
        events = []
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.get(url, payload=runs_page, repeat=True)
            gen = t.run()
            while (event := await next_or_quiet(gen, lambda: len(delays))) is not None:
                events.append(event)
            calls = [
                c
                for k, calls in m.requests.items()
                if k[0] == "GET" and "dagRuns" in str(k[1])
                for c in calls
            ]
        return events, calls

    async def test_missed_deadlines_fire_once_each_also_across_restarts(self):
        store = MemoryStateStore()
        t = self.make(deadline="*/10 * * * *")
        t.asset_state_store = store
        now = datetime.now(UTC)
        last_tick = t.previous_tick(now - timedelta(seconds=6) + timedelta(microseconds=1))
        # stored: handled the deadline 3 ticks back, then the triggerer was down for two more
        await store.aset(t._state_key, {"last_deadline": (last_tick - timedelta(minutes=20)).isoformat()})
        old_run = manual_run_json(
            "old", state="success", start=ago(10**5), end=(last_tick - timedelta(hours=5)).isoformat()
        )
        events, calls = await self.run_until_quiet(t, {"dag_runs": [old_run], "total_entries": 1})
        assert [e.payload["deadline"] for e in events] == [
            (last_tick - timedelta(minutes=10)).isoformat(),
            last_tick.isoformat(),
        ]
        assert all(e.payload["last_run"]["run_id"] == "old" and e.payload["upstream"] == BASE for e in events)
        assert events[0].payload["last_run"]["url"] == BASE + "/dags/producer/runs/old"
        params = calls[0].kwargs["params"]
        assert (
            ("order_by", "-end_date") in params
            and ("state", "success") in params
            and ("limit", "1") in params
        )
        assert store.data[t._state_key] == {"last_deadline": last_tick.isoformat()}

        t2 = self.make(deadline="*/10 * * * *")  # restart: nothing fires twice
        t2.asset_state_store = store
        assert (await self.run_until_quiet(t2, {"dag_runs": [old_run], "total_entries": 1}))[0] == []

    async def test_a_copy_left_running_on_a_stalled_triggerer_does_not_alert_again(self):
        store = MemoryStateStore()
        other, stale = self.make(deadline="*/10 * * * *"), self.make(deadline="*/10 * * * *")
        now = datetime.now(UTC)
        last_tick = other.previous_tick(now - timedelta(seconds=6) + timedelta(microseconds=1))
        before = {"last_deadline": (last_tick - timedelta(minutes=10)).isoformat()}
        other.asset_state_store = store
        await store.aset(other._state_key, before)
        old_run = manual_run_json(
            "old", state="success", start=ago(10**5), end=(last_tick - timedelta(hours=5)).isoformat()
        )
        page = {"dag_runs": [old_run], "total_entries": 1}
        assert [e.payload["deadline"] for e in (await self.run_until_quiet(other, page))[0]] == [
            last_tick.isoformat()
        ]
        stale.asset_state_store = StaleCopyStore(store, before)  # resumes before that deadline was judged
        assert (await self.run_until_quiet(stale, page))[0] == []

    async def test_an_unreadable_store_before_alerting_still_alerts(self):
        t = self.make(deadline="*/10 * * * *")
        now = datetime.now(UTC)
        last_tick = t.previous_tick(now - timedelta(seconds=6) + timedelta(microseconds=1))
        t.asset_state_store = UnreadableAfterLoad(
            {"last_deadline": (last_tick - timedelta(minutes=10)).isoformat()}
        )
        old_run = manual_run_json(
            "old", state="success", start=ago(10**5), end=(last_tick - timedelta(hours=5)).isoformat()
        )
        events = (await self.run_until_quiet(t, {"dag_runs": [old_run], "total_entries": 1}))[0]
        assert [e.payload["deadline"] for e in events] == [last_tick.isoformat()]

    async def test_a_run_finished_since_the_previous_deadline_meets_it(self):
        store = MemoryStateStore()
        t = self.make(deadline="*/10 * * * *")
        t.asset_state_store = store
        last_tick = t.previous_tick(datetime.now(UTC) - timedelta(seconds=6) + timedelta(microseconds=1))
        await store.aset(t._state_key, {"last_deadline": (last_tick - timedelta(minutes=10)).isoformat()})
        landed = manual_run_json(
            "landed", state="success", start=ago(10**4), end=(last_tick - timedelta(minutes=1)).isoformat()
        )
        events, _ = await self.run_until_quiet(t, {"dag_runs": [landed], "total_entries": 1})
        assert events == [] and store.data[t._state_key] == {"last_deadline": last_tick.isoformat()}

    async def test_first_start_judges_only_later_deadlines(self):
        t = self.make()  # no store: from now
        events, calls = await self.run_until_quiet(t, {"dag_runs": [], "total_entries": 0})
        assert events == [] and calls == []

    async def test_errors_back_off_and_never_end_the_watcher(self):
        store = MemoryStateStore()
        t = self.make(deadline="*/10 * * * *")
        t.asset_state_store = store
        last_tick = t.previous_tick(datetime.now(UTC) - timedelta(seconds=6) + timedelta(microseconds=1))
        await store.aset(t._state_key, {"last_deadline": (last_tick - timedelta(minutes=10)).isoformat()})
        url = re.compile(re.escape(BASE + "/api/v2/dags/producer/dagRuns") + r"\?.*")
        with alert_upstream() as m, instant_sleep(pacing, session) as delays:
            m.get(url, status=503, body="down", repeat=4)
            m.get(url, payload={"dag_runs": [], "total_entries": 0})
            event = await asyncio.wait_for(t.run().__anext__(), 5)
        assert event.payload == {"upstream": BASE, "deadline": last_tick.isoformat(), "last_run": None}
        assert any(5.0 <= d <= 10.0 for d in delays)  # the interval, doubled with jitter
