"""The shared poller: one batch request per interval, safe joins/leaves, one error for all."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from yarl import URL

from tests.helpers import (
    first_results,
    instant_sleep,
    memory_client,
    scheduled_run_json,
    set_upstream_conn,
    upstream_mock,
)
from xdep_sensors.client import ClientConfig, session
from xdep_sensors.core import pacing, sources
from xdep_sensors.core import poller as polling
from xdep_sensors.core.probes import AssetProbe, AssetWait, DagRunProbe, DagRunWait
from xdep_sensors.errors import UpstreamUnavailable

BASE = "http://up.test:8080"
CONFIG = ClientConfig(base_url=BASE, password="t", api_version="v2", conn_id="up")
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
LIST = URL(BASE + "/api/v2/dags/~/dagRuns/list")


def known_probe(dag_id: str) -> DagRunProbe:
    probe = DagRunProbe(DagRunWait(external_dag_id=dag_id, logical_date=T0.isoformat()))
    probe._dag_known = True  # existence was checked on the subscriber's first look
    return probe


class TestSharedPoller:
    async def test_one_failure_reaches_every_subscriber_as_the_same_error(self):
        probes = [known_probe(f"dag_{i}") for i in range(3)]
        with upstream_mock() as m, instant_sleep(pacing, session):
            m.post(str(LIST), status=503, body="deploying", repeat=True)
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
            attempts = len(m.requests[("POST", LIST)])
        assert all(isinstance(r, UpstreamUnavailable) for r in results)
        assert len({id(r) for r in results}) == 1 and attempts == 4  # one request (+3 retries), not three

    async def test_a_bug_in_the_loop_fails_every_wait_instead_of_leaving_it_hanging(self, monkeypatch):
        async def broken(subs, source):
            raise RuntimeError("a bug")

        monkeypatch.setattr(polling.SharedPoller, "_step_all", staticmethod(broken))
        probes = [known_probe(f"dag_{i}") for i in range(3)]
        with upstream_mock() as m, instant_sleep(pacing, session):
            m.post(str(LIST), payload={"dag_runs": [], "total_entries": 0}, repeat=True)
            results = await asyncio.wait_for(first_results(polling.POLLERS.get(CONFIG, 5), probes), 30)
        assert [str(r) for r in results] == ["a bug"] * 3

    async def test_cancelled_subscribers_leave_and_the_poll_stops(self):
        with upstream_mock() as m, instant_sleep(pacing):
            m.post(str(LIST), payload={"dag_runs": [], "total_entries": 0}, repeat=True)
            poller = polling.POLLERS.get(CONFIG, 5)

            async def wait_forever(probe):
                async with poller.subscribe(probe) as updates:
                    while True:
                        await updates.get()

            tasks = [asyncio.ensure_future(wait_forever(known_probe(f"d{i}"))) for i in range(2000)]
            for _ in range(100):  # loop turns, not seconds: each turn lets every task run one step
                if len(poller.subscribers) == 2000:
                    break
                await asyncio.sleep(0)
            assert len(poller.subscribers) == 2000
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)
        assert poller.subscribers == {} and polling.POLLERS.pollers.here() == {}
        assert poller._task is not None and poller._task.done()

    async def test_asset_waits_share_the_upstream_feed(self, monkeypatch):
        """40 asset waits: each catches up once on its own asset, then one shared read serves them all."""
        from datetime import timedelta

        from devtools.memory_upstream import MemoryUpstream

        upstream = MemoryUpstream(api="v2")
        for i in range(3000):  # a busy upstream's history (not watched)
            upstream.add_event(99, T0 - timedelta(hours=1) + timedelta(seconds=i))
        for i in range(0, 40, 2):
            upstream.add_event(i, T0 + timedelta(seconds=i), {"i": i})
        monkeypatch.setattr(polling, "RemoteAirflowClient", lambda config: memory_client(upstream, config))

        def asset_probe(i):
            watch = AssetWait(
                assets=[{"uri": f"file://a{i}", "name": None}],
                cursors={f"file://a{i}": {"timestamp": T0.isoformat()}},
            )
            probe = AssetProbe(watch)
            probe.ids = {f"file://a{i}": i}
            return probe

        def events_requests():
            return upstream.requests["/api/v2/assets/events"]

        poller = polling.POLLERS.get(CONFIG, 7)
        probes = [asset_probe(i) for i in range(40)]
        queues: dict[int, asyncio.Queue] = {}
        done = asyncio.Event()

        async def one(i, probe):
            async with poller.subscribe(probe, every_look=True) as updates:
                queues[i] = updates
                await done.wait()

        with instant_sleep(pacing):
            tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(probes)]
            while len(queues) < 40:
                await asyncio.sleep(0)
            first = [await queues[i].get() for i in range(40)]
            # the first cycle: the shared feed starts at the newest event (2 requests), one catch-up per asset
            assert events_requests() <= 2 + 40
            assert [r.status for r in first] == ["success" if i % 2 == 0 else "waiting" for i in range(40)]
            assert first[2].result["events"][0]["extra"] == {"i": 2}
            for cycle in range(3):
                before = events_requests()
                fresh = upstream.add_event(2 * cycle + 1, T0 + timedelta(minutes=5, seconds=cycle))
                got = [await queues[i].get() for i in range(40)]
                assert events_requests() - before <= 2  # the anchor page and what is new: not the history
                winner = got[2 * cycle + 1]
                assert winner.status == "success" and [e["id"] for e in winner.result["events"]] == [fresh]
            done.set()
            await asyncio.gather(*tasks)


class TestKnownRuns:
    async def test_known_running_runs_cost_two_small_requests(self):
        """300 waits whose runs are known and running: a cycle reads the runs that started and that ended."""
        from devtools.memory_upstream import MemoryUpstream
        from xdep_sensors.core.shared_reads import RunChanges

        upstream = MemoryUpstream()
        for i in range(300):
            upstream.put_run(f"dag_{i}", f"scheduled__{T0.date()}", "running", logical_date=T0, start=T0)
        probes = [known_probe(f"dag_{i}") for i in range(300)]
        changes = RunChanges()
        async with memory_client(upstream, CONFIG) as client:
            first = sources.BatchSource(client, {}, changes, None, set())
            await first.prefetch()
            assert changes.fresh  # the feeds start here: each wait asks for its run once, exactly
            assert {(await p.step(first)).message for p in probes[:3]} >= {
                f"dag_0 run scheduled__{T0.date()}: running"
            }
            for p in probes[3:]:
                await p.step(first)
            before = sum(upstream.requests.values())
            upstream.put_run(
                "dag_7",
                f"scheduled__{T0.date()}",
                "success",
                logical_date=T0,
                start=T0,
                end=datetime.now(timezone.utc),
            )
            second = sources.BatchSource(client, {}, changes, None, set())
            await second.prefetch()
            results = [p.unchanged(second) or await p.step(second) for p in probes]
            assert sum(upstream.requests.values()) - before == 2  # whatever the number of waits
        assert [i for i, r in enumerate(results) if r.status == "success"] == [7]
        assert results[0].message.endswith(": running")  # the others keep their last known state


class TestSubscriberMailbox:
    """A wait's mailbox: outcomes in order, none lost, and a deadline that ends the wait for one."""

    async def test_outcomes_come_in_order_and_none_is_lost(self):
        sub = polling._Subscriber(probe=None)
        sub.put("a")
        sub.put("b")
        assert [await sub.get(), await sub.get()] == ["a", "b"]
        taker = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)
        sub.put("c")
        assert await taker == "c"

    async def test_a_deadline_gives_none_and_a_later_outcome_waits_to_be_taken(self):
        sub = polling._Subscriber(probe=None)
        assert await sub.get(timeout=0) is None
        sub.put("late")
        assert await sub.get(timeout=0) == "late"

    async def test_a_trigger_past_its_deadline_reports_timeout_while_the_poll_sleeps(self, monkeypatch):
        """The shared poll looks every 60 s; the trigger's deadline, 0.05 s away, still ends it then."""
        import time

        set_upstream_conn(monkeypatch, password="t")

        from xdep_sensors.triggers import RemoteDagRunTrigger

        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream",
            external_dag_id="dag_1",
            run_id="r1",
            poke_interval=60,
            timeout_at=time.time() + 0.05,
        )
        with upstream_mock() as m:
            m.get(str(URL(BASE + "/api/v2/dags/dag_1")), payload={"dag_id": "dag_1"}, repeat=True)
            m.get(
                str(URL(BASE + "/api/v2/dags/dag_1/dagRuns/r1")),
                payload=scheduled_run_json("dag_1", run_id="r1", run_after=T0),
                repeat=True,
            )
            event = await asyncio.wait_for(trigger.run().__anext__(), 30)
        assert event.payload["status"] == "timeout"

    async def test_waits_whose_dag_changed_nothing_need_no_step(self):
        """After a look, a cycle answers such waits from the change feeds: only the DAG that changed
        is stepped."""
        from devtools.memory_upstream import MemoryUpstream
        from xdep_sensors.core.shared_reads import RunChanges

        upstream = MemoryUpstream()
        for i in range(5):
            upstream.put_run(f"dag_{i}", f"scheduled__{T0.date()}", "running", logical_date=T0, start=T0)
        probes = [known_probe(f"dag_{i}") for i in range(5)]
        changes = RunChanges()
        async with memory_client(upstream, CONFIG) as client:
            fresh = sources.BatchSource(client, {}, changes, None, set())
            assert [p.unchanged(fresh) for p in probes] == [None] * 5  # nothing read yet
            await fresh.prefetch()
            assert [p.unchanged(fresh) for p in probes] == [None] * 5  # the feeds just started: ask exactly
            first = [await p.step(fresh) for p in probes]
            quiet = sources.BatchSource(client, {}, changes, None, set())
            await quiet.prefetch()
            assert [p.unchanged(quiet) for p in probes] == first  # the same decision objects
            upstream.put_run(
                "dag_3",
                f"scheduled__{T0.date()}",
                "success",
                logical_date=T0,
                start=T0,
                end=datetime.now(timezone.utc),
            )
            ended = sources.BatchSource(client, {}, changes, None, set())
            await ended.prefetch()
            again = [p.unchanged(ended) for p in probes]
            assert again[:3] + again[4:] == first[:3] + first[4:] and again[3] is None
            assert (await probes[3].step(ended)).status == "success"


class TestPerLoopRegistry:
    def test_a_value_per_event_loop_seen_from_outside_and_dropped_with_its_loop(self):
        from xdep_sensors.core.registry import PerLoop

        registry: PerLoop[str, object] = PerLoop()

        async def mine():
            made = registry.get("k", object)
            assert registry.get("k", object) is made  # made once per loop
            return made

        loops = [asyncio.new_event_loop() for _ in range(2)]
        try:
            first, second = (loop.run_until_complete(mine()) for loop in loops)
            assert first is not second
            assert {id(v) for v in registry.everywhere()} == {id(first), id(second)}  # no loop needed
            assert registry.drop_loop(loops[0]) == [first]
            assert registry.everywhere() == [second]
        finally:
            for loop in loops:
                loop.close()
