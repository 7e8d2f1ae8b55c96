"""AssetWatcher triggers: serialization and hashing, cursor persistence, shared-stream filtering."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from airflow.triggers.base import BaseEventTrigger

from tests.helpers import MemoryStateStore, memory_client, next_or_quiet, sleep_patched
from xdep_sensors.client import AssetEvent, DagRun
from xdep_sensors.core import pacing
from xdep_sensors.triggers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger
from xdep_sensors.triggers.watchers import SUBSCRIBERS

BASE = "http://up.test:8080"
NOW = datetime.now(timezone.utc)


pytestmark = pytest.mark.usefixtures("remote_conn")


def event_with_extra(i, ts, uri="file://bears", **extra):
    """An event of ``uri`` with ``extra``, produced by DAG ``p``."""
    return AssetEvent(id=i, asset_id=1, uri=uri, name=uri, timestamp=ts, extra=extra, source_dag_id="p")


def asset_trigger(**kwargs):
    return RemoteAssetEventTrigger(
        remote_conn_id="upstream", asset_uri="file://bears", poll_interval=5, **kwargs
    )


async def loaded(store):
    """An asset trigger on ``store`` that has loaded (or started) its state, as a triggerer starts it."""
    t = asset_trigger()
    t.asset_state_store = store
    await t.load_cursor()
    return t


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
            (
                RemoteAssetEventTrigger,
                {"asset_uri": "a", "asset_name": "b"},
                "exactly one of asset_uri, asset_name",
            ),
            (RemoteAssetEventTrigger, {}, "exactly one of asset_uri, asset_name"),
            (
                RemoteAssetEventTrigger,
                {"asset_uri": "a", "poll_interval": 0},
                "poll_interval must be a positive",
            ),
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
        t.asset_state_store = MemoryStateStore()
        await t.load_cursor()
        stored = t.asset_state_store.data["xdep_sensors:assets:upstream:file://bears"]
        assert abs(datetime.fromisoformat(stored["timestamp"]) - datetime.now(timezone.utc)) < timedelta(
            seconds=5
        )

    async def test_without_an_asset_state_store_state_goes_to_a_variable(self, monkeypatch):
        """Airflow < 3.3 injects no asset state store: the state lives in an Airflow Variable (real
        triggerers of 3.0-3.2 are exercised by tests/versions); here the Variable calls are recorded."""
        from xdep_sensors.triggers import state as durable

        box: dict = {}
        monkeypatch.setattr(durable, "_variable_get", lambda key: box.get(key))
        monkeypatch.setattr(durable, "_variable_set", lambda key, value: box.__setitem__(key, value))
        t = asset_trigger()
        t.asset_state_store = None
        await t.load_cursor()
        assert list(box) == [durable.variable_key(t._state_key)]
        t2 = asset_trigger()
        t2.asset_state_store = None
        await t2.load_cursor()
        assert t2.cursor == t.cursor  # resumed, not restarted from now

    async def test_emits_once_each_and_resumes_after_restart(self):
        store = MemoryStateStore()
        t = await loaded(store)
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        batch = [
            event_with_extra(1, later, n=1),
            event_with_extra(2, later, n=2),
            event_with_extra(3, later, uri="file://other"),
        ]
        fired = [e async for e in t.emit(batch, BASE)]
        assert [e.payload["event"]["id"] for e in fired] == [1, 2]
        assert fired[0].payload["upstream"] == BASE and fired[0].payload["event"]["extra"] == {"n": 1}
        assert [e async for e in t.emit(batch, BASE)] == []  # the same poll result again: nothing new

        # "restart": a new trigger instance with the same store sees only what came later
        t2 = await loaded(store)
        batch2 = batch + [event_with_extra(4, later + timedelta(seconds=1), n=4)]
        assert [e.payload["event"]["id"] async for e in t2.emit(batch2, BASE)] == [4]

    async def test_cursor_written_only_after_handover(self):
        store = MemoryStateStore()
        t = await loaded(store)
        before = dict(store.data)
        gen = t.emit([event_with_extra(1, datetime.now(timezone.utc) + timedelta(seconds=1))], BASE)
        await gen.__anext__()  # event handed over, generator paused at the yield
        assert store.data == before
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        assert store.data != before

    async def test_a_copy_left_running_after_a_handover_does_not_fire_again(self):
        """A stalled triggerer's copy of the watcher resumes with its old position; the other triggerer
        has fired the item meanwhile (and stored that): the old copy fires nothing and adopts it."""
        store = MemoryStateStore()
        stale, other = await loaded(store), await loaded(store)
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        assert [e.payload["event"]["id"] async for e in other.emit([event_with_extra(1, later)], BASE)] == [1]
        assert [e async for e in stale.emit([event_with_extra(1, later)], BASE)] == []
        # adopted: the next poll skips it without asking
        assert not stale.cursor.is_new(event_with_extra(1, later))
        nxt = [event_with_extra(1, later), event_with_extra(2, later + timedelta(seconds=1))]
        assert [e.payload["event"]["id"] async for e in stale.emit(nxt, BASE)] == [2]

    async def test_the_stored_state_alone_fires_an_item(self):
        """Control for the test above: with nobody else firing, the same copy fires the item."""
        store = MemoryStateStore()
        t = await loaded(store)
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        assert [e.payload["event"]["id"] async for e in t.emit([event_with_extra(1, later)], BASE)] == [1]

    async def test_an_unreadable_store_before_firing_fires_the_item(self, caplog, capsys):
        class Flaky(MemoryStateStore):
            fail = False

            async def aget(self, key, default=None):
                if self.fail:
                    raise OSError("state store unavailable")
                return await super().aget(key, default)

        store = Flaky()
        t = await loaded(store)
        store.fail = True
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        assert [e.payload["event"]["id"] async for e in t.emit([event_with_extra(1, later)], BASE)] == [1]
        logged = caplog.text + capsys.readouterr().out  # Airflow's structlog writes to stdout
        assert "could not read the stored state" in logged and "state store unavailable" in logged

    async def test_run_trigger_fires_per_finished_run_in_states(self):
        t = RemoteDagRunEventTrigger(remote_conn_id="upstream", external_dag_id="producer", states=["failed"])
        t.asset_state_store = MemoryStateStore()
        await t.load_cursor()
        end = datetime.now(timezone.utc) + timedelta(seconds=1)
        runs = [
            DagRun("producer", "r1", "failed", None, end, end_date=end),
            DagRun("producer", "r2", "success", None, end, end_date=end),
            DagRun("other", "r3", "failed", None, end, end_date=end),
        ]
        fired = [e.payload["run"]["run_id"] async for e in t.emit(runs, BASE)]
        assert fired == ["r1"]


class TestPolling:
    """Watchers read feeds: a poll costs what is new upstream, never its history."""

    @pytest.fixture
    def upstream(self, monkeypatch):
        from devtools.memory_upstream import MemoryUpstream
        from xdep_sensors.hooks import RemoteAirflowHook

        up = MemoryUpstream(api="v2")

        async def client(self):
            return memory_client(up, self.client_for(await self.aget_config()).config)

        monkeypatch.setattr(RemoteAirflowHook, "aget_client", client)
        return up

    @staticmethod
    def events_requests(up) -> int:
        return up.requests["/api/v2/assets/events"]

    async def test_quiet_asset_watcher_in_a_busy_upstream(self, upstream):
        """The reported case: 5,200 events of a busy asset; a watcher on a quiet one still fires, cheaply."""
        now = datetime.now(timezone.utc)
        for i in range(5200):
            upstream.add_event(1, now - timedelta(minutes=30) + timedelta(milliseconds=300 * i))
        upstream.assets.add(2)
        t = RemoteAssetEventTrigger(
            remote_conn_id="upstream", asset_uri="s3://bucket/asset-2", poll_interval=5
        )
        t.asset_state_store = MemoryStateStore()
        polls = []

        async def sleep(seconds):
            polls.append(self.events_requests(upstream))
            if len(polls) == 3:  # the quiet asset's event comes while the watcher polls
                upstream.add_event(2, datetime.now(timezone.utc), {"path": "s3://x"})

        with sleep_patched(sleep, pacing):
            fired = await asyncio.wait_for(t.run().__anext__(), 10)
        assert fired.payload["event"]["extra"] == {"path": "s3://x"}
        per_poll = [b - a for a, b in zip([0, *polls], polls)]
        assert max(per_poll) <= 2, per_poll  # never the busy asset's history
        assert "timestamp" in t.asset_state_store.data[t._state_key]  # the cursor moves once handed over

    async def test_restart_resumes_where_it_read(self, upstream):
        """A restarted watcher starts from its stored read position: nothing lost, nothing twice."""
        store = MemoryStateStore()
        now = datetime.now(timezone.utc)
        t = RemoteDagRunEventTrigger(
            remote_conn_id="upstream", external_dag_id="hourly", states=["failed"], poll_interval=5
        )
        t.asset_state_store = store
        await store.aset(t._state_key, {"timestamp": (now - timedelta(hours=1)).isoformat()})
        for i in range(3000):  # a busy DAG that always succeeds: the failed-runs watcher reads past them
            upstream.add_run(
                "hourly", f"ok_{i}", "success", now - timedelta(hours=1) + timedelta(seconds=1.2 * i)
            )
        upstream.add_run("hourly", "bad_1", "failed", now - timedelta(seconds=1))
        with sleep_patched(mock.AsyncMock(), pacing) as sleep:
            gen = t.run()
            first = await asyncio.wait_for(gen.__anext__(), 10)
            # the triggerer resumes the watcher (handover complete); its next polls find nothing new
            assert await next_or_quiet(gen, lambda: sleep.await_count) is None
        assert first.payload["run"]["run_id"] == "bad_1"
        upstream.add_run(
            "hourly", "bad_2", "failed", now + timedelta(seconds=5)
        )  # while the triggerer is down
        t2 = RemoteDagRunEventTrigger(
            remote_conn_id="upstream", external_dag_id="hourly", states=["failed"], poll_interval=5
        )
        t2.asset_state_store = store
        before = upstream.requests["/api/v2/dags/~/dagRuns/list"]
        with sleep_patched(mock.AsyncMock(), pacing):
            second = await asyncio.wait_for(t2.run().__anext__(), 10)
        assert second.payload["run"]["run_id"] == "bad_2"  # bad_1 is not repeated
        assert (
            upstream.requests["/api/v2/dags/~/dagRuns/list"] - before <= 2
        )  # from the read mark, not from bad_1

    async def test_shared_stream_serves_watchers_after_their_catch_up(self, upstream):
        """Two asset watchers on one shared read; a busy third asset costs them pages of new items only."""
        now = datetime.now(timezone.utc)
        for i in range(2000):
            upstream.add_event(1, now - timedelta(minutes=20) + timedelta(milliseconds=500 * i))
        upstream.assets |= {2, 3}
        before_start = upstream.add_event(2, now - timedelta(seconds=1))  # stored cursor below: a restart
        watchers = [
            RemoteAssetEventTrigger(
                remote_conn_id="upstream", asset_uri=f"s3://bucket/asset-{a}", poll_interval=5
            )
            for a in (2, 3)
        ]
        store = MemoryStateStore()
        for w in watchers:
            w.asset_state_store = store
        await store.aset(watchers[0]._state_key, {"timestamp": (now - timedelta(seconds=2)).isoformat()})
        queues = [asyncio.Queue() for _ in watchers]
        fired: list[list[int]] = [[], []]
        cycles = []

        async def fan_out():
            stream = RemoteAssetEventTrigger.open_shared_stream(watchers[0].serialize()[1])
            async for batch in stream:
                cycles.append(self.events_requests(upstream))
                if len(cycles) == 3:
                    upstream.add_event(3, datetime.now(timezone.utc))
                    for i in range(150):  # a burst on the busy asset
                        upstream.add_event(1, datetime.now(timezone.utc))
                if len(cycles) == 4:
                    upstream.add_event(2, datetime.now(timezone.utc))
                for q in queues:
                    q.put_nowait(batch)
                if len(cycles) == 7:
                    for q in queues:
                        q.put_nowait(None)
                    await stream.aclose()
                    return

        async def listen(i):
            async def batches():
                while (b := await queues[i].get()) is not None:
                    yield b

            async for event in watchers[i].filter_shared_stream(batches()):
                fired[i].append(event.payload["event"]["id"])

        with sleep_patched(mock.AsyncMock(), pacing):
            await asyncio.wait_for(asyncio.gather(fan_out(), listen(0), listen(1)), 20)
        assert fired[0][0] == before_start and len(fired[0]) == 2 and len(fired[1]) == 1
        per_cycle = [b - a for a, b in zip(cycles, cycles[1:])]
        assert max(per_cycle) <= 2 + 2 + 1, per_cycle  # new items' pages + the anchor (+ catch-ups at first)
        assert SUBSCRIBERS.by_key == {}


class TestOneReadForSensorsAndWatchers:
    async def test_the_sensors_poll_and_the_watchers_stream_share_one_read_per_interval(self, monkeypatch):
        """In one triggerer, deferred asset sensors and asset watchers on one connection: one events
        listing per interval for both, and every consumer gets every new event once."""
        from devtools.memory_upstream import MemoryUpstream
        from xdep_sensors.core import poller as polling
        from xdep_sensors.core import shared_reads as streams
        from xdep_sensors.core.probes import AssetProbe, AssetWait
        from xdep_sensors.hooks import RemoteAirflowHook

        up = MemoryUpstream(api="v2")
        clients: dict = {}

        async def client(self):  # the hook's client: the same connection (id and URL) as the poll's
            config = self.client_for(await self.aget_config()).config
            return clients.setdefault("c", memory_client(up, config))

        monkeypatch.setattr(RemoteAirflowHook, "aget_client", client)
        clock = [0.0]
        monkeypatch.setattr(streams, "_clock", lambda: clock[0])
        start = datetime.now(timezone.utc)
        assets = range(1, 4)
        for a in assets:
            up.add_event(a, start - timedelta(minutes=5))  # history: before every consumer's start
        config = (await client(RemoteAirflowHook("upstream"))).config
        poller = polling.SharedPoller(config, 5, on_empty=lambda: None)
        poller.client = clients["c"]

        def sensor(a: int) -> polling._Subscriber:
            return polling._Subscriber(
                AssetProbe(
                    AssetWait(
                        assets=[{"uri": f"s3://bucket/asset-{a}", "name": None}], since=start.isoformat()
                    )
                )
            )

        subs = [sensor(a) for a in assets]
        watchers = [
            RemoteAssetEventTrigger(
                remote_conn_id="upstream", asset_uri=f"s3://bucket/asset-{a}", poll_interval=5
            )
            for a in assets
        ]
        store = MemoryStateStore()
        for w in watchers:
            w.asset_state_store = store
            await store.aset(w._state_key, {"timestamp": start.isoformat()})
        queues = [asyncio.Queue() for _ in watchers]
        got: dict[str, list[int]] = {}

        async def listen(i):
            async def batches():
                while (b := await queues[i].get()) is not None:
                    yield b

            async for e in watchers[i].filter_shared_stream(batches()):
                got.setdefault(f"w{i}", []).append(e.payload["event"]["id"])

        made: list[tuple[int, int]] = []  # (asset, event id)
        per_interval: list[int] = []
        with sleep_patched(mock.AsyncMock(), pacing):
            stream = RemoteAssetEventTrigger.open_shared_stream(watchers[0].serialize()[1])
            listeners = [asyncio.ensure_future(listen(i)) for i in range(len(watchers))]
            for interval in range(8):
                clock[0] += 5
                before = up.requests["/api/v2/assets/events"]
                if interval >= 2:  # after both have resolved their assets and caught up
                    made += [(a, up.add_event(a, datetime.now(timezone.utc))) for a in assets]
                source = poller._needs(subs)
                for i, decision in enumerate(await asyncio.gather(*(s.probe.step(source) for s in subs))):
                    if decision.status == "success":
                        got.setdefault(f"s{i}", []).extend(e["id"] for e in decision.result["events"])
                        subs[i] = polling._Subscriber(
                            AssetProbe(
                                AssetWait(
                                    assets=subs[i].probe.watch.assets, cursors=decision.result["cursors"]
                                )
                            )
                        )
                batch = await stream.__anext__()
                for q in queues:
                    q.put_nowait(batch)
                for _ in range(20):
                    await asyncio.sleep(0)
                per_interval.append(up.requests["/api/v2/assets/events"] - before)
            for q in queues:
                q.put_nowait(None)
            await asyncio.gather(*listeners)
            await stream.aclose()
        assert per_interval[3:] == [1] * 5, per_interval  # one listing per interval serves both
        for i, a in enumerate(assets):
            mine = [e for asset, e in made if asset == a]
            assert got[f"s{i}"] == mine and got[f"w{i}"] == mine, (i, got)
