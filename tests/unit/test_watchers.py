"""AssetWatcher triggers: serialization and hashing, cursor persistence, shared-stream filtering."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from aioresponses import aioresponses

from tests.conftest import upstream_mock

from airflow.triggers.base import BaseEventTrigger
from xdep_sensors.client import AssetEvent, DagRun
from xdep_sensors.triggers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger
from xdep_sensors.watchers import SUBSCRIBERS

BASE = "http://up.test:8080"
NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def remote_conn(monkeypatch):
    conn = {"conn_type": "remote_airflow", "host": BASE, "password": "tok", "extra": {"api_version": "v2"}}
    monkeypatch.setenv("AIRFLOW_CONN_UPSTREAM", json.dumps(conn))


class FakeStore:
    """Stands in for the asset state store the triggerer injects on Airflow 3.3+."""

    def __init__(self):
        self.data: dict = {}

    async def aget(self, key, default=None):
        return self.data.get(key, default)

    async def aset(self, key, value):
        self.data[key] = json.loads(json.dumps(value))


def event(i, ts, uri="file://bears", **extra):
    return AssetEvent(id=i, asset_id=1, uri=uri, name=uri, timestamp=ts, extra=extra, source_dag_id="p")


def asset_trigger(**kwargs):
    return RemoteAssetEventTrigger(remote_conn_id="upstream", asset_uri="file://bears", poll_interval=5, **kwargs)


class TestSerialization:
    def test_asset_trigger_round_trip_and_stable_hash(self):
        classpath, kwargs = asset_trigger().serialize()
        again = RemoteAssetEventTrigger(**kwargs).serialize()
        assert again == (classpath, kwargs)
        assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again)
        assert "tok" not in json.dumps(kwargs)
        other = RemoteAssetEventTrigger(remote_conn_id="upstream", asset_uri="file://cubs", poll_interval=5)
        assert BaseEventTrigger.hash(*other.serialize()) != BaseEventTrigger.hash(classpath, kwargs)

    def test_run_trigger_round_trip(self):
        t = RemoteDagRunEventTrigger(remote_conn_id="upstream", external_dag_id="producer", states=["failed"])
        classpath, kwargs = t.serialize()
        assert RemoteDagRunEventTrigger(**kwargs).serialize() == (classpath, kwargs)

    @pytest.mark.parametrize(
        ("cls", "kwargs", "match"),
        [
            (RemoteAssetEventTrigger, {"asset_uri": "a", "asset_name": "b"}, "exactly one of asset_uri, asset_name"),
            (RemoteAssetEventTrigger, {}, "exactly one of asset_uri, asset_name"),
            (RemoteAssetEventTrigger, {"asset_uri": "a", "poll_interval": 0}, "poll_interval must be a positive"),
            (RemoteDagRunEventTrigger, {"external_dag_id": "d", "states": ["running"]}, "states must be"),
            (RemoteDagRunEventTrigger, {"external_dag_id": ""}, "external_dag_id"),
        ],
    )
    def test_bad_arguments(self, cls, kwargs, match):
        with pytest.raises(ValueError, match=match):
            cls(remote_conn_id="upstream", **kwargs)

    def test_shared_stream_key_groups_by_connection_and_interval(self):
        a = asset_trigger()
        b = RemoteAssetEventTrigger(remote_conn_id="upstream", asset_name="cubs", poll_interval=5)
        c = RemoteAssetEventTrigger(remote_conn_id="other", asset_name="cubs", poll_interval=5)
        assert a.shared_stream_key() == b.shared_stream_key() != c.shared_stream_key()


class TestCursorPersistence:
    async def test_first_start_is_from_now_and_stored(self):
        t = asset_trigger()
        t.asset_state_store = FakeStore()
        await t.load_cursor()
        stored = t.asset_state_store.data["xdep_sensors:assets:upstream:file://bears"]
        assert abs(datetime.fromisoformat(stored["timestamp"]) - datetime.now(timezone.utc)) < timedelta(seconds=5)

    async def test_without_a_state_store_it_starts_from_now(self, caplog):
        """Airflow < 3.3 injects no asset state store: start from now, and say so."""
        t = asset_trigger()
        assert t.asset_state_store is None
        await t.load_cursor()
        start = datetime.fromisoformat(t.cursor.timestamp)
        assert abs(start - datetime.now(timezone.utc)) < timedelta(seconds=5)
        old = event(1, start - timedelta(seconds=1))
        assert [e async for e in t.emit([old], BASE)] == []  # what happened before is not replayed

    async def test_emits_once_each_and_resumes_after_restart(self):
        store = FakeStore()
        t = asset_trigger()
        t.asset_state_store = store
        await t.load_cursor()
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        batch = [event(1, later, n=1), event(2, later, n=2), event(3, later, uri="file://other")]
        fired = [e async for e in t.emit(batch, BASE)]
        assert [e.payload["event"]["id"] for e in fired] == [1, 2]
        assert fired[0].payload["upstream"] == BASE and fired[0].payload["event"]["extra"] == {"n": 1}
        assert [e async for e in t.emit(batch, BASE)] == []  # the same poll result again: nothing new

        # "restart": a new trigger instance with the same store sees only what came later
        t2 = asset_trigger()
        t2.asset_state_store = store
        await t2.load_cursor()
        batch2 = batch + [event(4, later + timedelta(seconds=1), n=4)]
        assert [e.payload["event"]["id"] async for e in t2.emit(batch2, BASE)] == [4]

    async def test_cursor_written_only_after_handover(self):
        store = FakeStore()
        t = asset_trigger()
        t.asset_state_store = store
        await t.load_cursor()
        before = dict(store.data)
        gen = t.emit([event(1, datetime.now(timezone.utc) + timedelta(seconds=1))], BASE)
        await gen.__anext__()  # event handed over, generator paused at the yield
        assert store.data == before
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        assert store.data != before

    async def test_run_trigger_fires_per_finished_run_in_states(self):
        t = RemoteDagRunEventTrigger(remote_conn_id="upstream", external_dag_id="producer", states=["failed"])
        t.asset_state_store = FakeStore()
        await t.load_cursor()
        end = datetime.now(timezone.utc) + timedelta(seconds=1)
        runs = [DagRun("producer", "r1", "failed", None, end, end_date=end),
                DagRun("producer", "r2", "success", None, end, end_date=end),
                DagRun("other", "r3", "failed", None, end, end_date=end)]
        fired = [e.payload["run"]["run_id"] async for e in t.emit(runs, BASE)]
        assert fired == ["r1"]


class TestPolling:
    async def test_standalone_run_polls_and_sleeps(self):
        t = asset_trigger()
        url = re.compile(re.escape(BASE + "/api/v2/assets/events") + r"\?.*")
        future = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
        body = {"asset_events": [{"id": 9, "asset_id": 1, "uri": "file://bears", "name": "file://bears",
                                  "timestamp": future, "extra": {"p": 1}}], "total_entries": 1}
        with upstream_mock() as m, mock.patch("xdep_sensors.watchers.asyncio.sleep", new=mock.AsyncMock()) as sleep:
            m.get(url, status=503, body="down", repeat=4)
            m.get(url, payload=body)
            first = await asyncio.wait_for(t.run().__anext__(), 10)
        assert first.payload["event"]["id"] == 9
        assert sleep.await_count == 4  # 3 retries inside the client, then one backoff before the next poll

    async def test_shared_stream_filters_per_trigger(self):
        a = asset_trigger()
        b = RemoteAssetEventTrigger(remote_conn_id="upstream", asset_uri="file://cubs", poll_interval=5)
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        batch = {"items": [event(1, later), event(2, later, uri="file://cubs")], "upstream": BASE}

        async def stream():
            yield batch

        got_a = [e.payload["event"]["id"] async for e in a.filter_shared_stream(stream())]
        got_b = [e.payload["event"]["id"] async for e in b.filter_shared_stream(stream())]
        assert (got_a, got_b) == ([1], [2])
        assert SUBSCRIBERS.by_key == {}  # both left cleanly

    async def test_shared_poll_covers_every_subscriber_in_one_request(self):
        a = RemoteDagRunEventTrigger(remote_conn_id="upstream", external_dag_id="d1", poll_interval=5)
        b = RemoteDagRunEventTrigger(remote_conn_id="upstream", external_dag_id="d2", poll_interval=5)
        for t in (a, b):
            await t.load_cursor()
            SUBSCRIBERS.add(t.shared_stream_key(), t)
        try:
            with upstream_mock() as m:
                m.post(BASE + "/api/v2/dags/~/dagRuns/list", payload={"dag_runs": [], "total_entries": 0})
                stream = RemoteDagRunEventTrigger.open_shared_stream(a.serialize()[1])
                batch = await stream.__anext__()
                (call,) = [c for key, calls in m.requests.items() if key[0] == "POST" for c in calls]
            assert batch["items"] == [] and call.kwargs["json"]["dag_ids"] == ["d1", "d2"]
            await stream.aclose()
        finally:
            for t in (a, b):
                SUBSCRIBERS.remove(t.shared_stream_key(), t)
