"""Busy upstreams, for real: what a wait costs and whether it fires must not depend on history.

Each real upstream (Airflow 3.3 / API v2 and Airflow 2.11 / API v1) gets 5,200 events of a busy
asset and 5,200 finished runs of a busy DAG over the last 30 minutes (seeded into its DB; every
read goes through its API server). Requests are counted by a pass-through proxy in front of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.chaos import ChaosProxy
from tests.helpers import next_or_quiet, sleep_patched
from tests.integration.conftest import HERE
from xdep_sensors.core import pacing
from xdep_sensors.core.listings import list_asset_events, open_feed, read_feed
from xdep_sensors.core.probes import AssetProbe, AssetWait
from xdep_sensors.hooks import RemoteAirflowHook
from xdep_sensors.triggers import RemoteAssetTrigger, RemoteDagRunEventTrigger, RemoteDagRunTrigger

pytestmark = pytest.mark.integration

BUSY = "s3://xdep-feed/orders.parquet"
QUIET = "s3://xdep-feed/customers.parquet"
QUIET2 = "s3://xdep-feed/suppliers.parquet"
DAG = "xdep_feed_busy"
HISTORY = 5200


def seed(server, *args: str) -> None:
    python = Path(server.airflow_bin).parent / "python"
    res = subprocess.run(
        [str(python), str(HERE / "seed_history.py"), *args],
        env=server.env,
        cwd=server.home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def _asset_ids(server) -> dict[str, int]:
    path = "/api/v2/assets?limit=100" if server.major == 3 else "/api/v1/datasets?limit=100"
    body = server.api("GET", path)
    return {a["uri"]: a["id"] for a in body.get("assets", body.get("datasets", []))}


@pytest.fixture(scope="module")
def busy(_upstreams):
    """Both upstreams with 5,200 busy-asset events and 5,200 finished runs, each behind a counting proxy."""
    out = {}
    for api, up in _upstreams.items():
        up.server.wait_for_dag(DAG, timeout=180)
        deadline = time.monotonic() + 120
        while not {BUSY, QUIET, QUIET2} <= set(_asset_ids(up.server)):
            assert time.monotonic() < deadline, "the feed test assets were not registered upstream"
            time.sleep(1)
        seed(up.server, "events", BUSY, str(HISTORY), "1800")
        seed(up.server, "runs", DAG, str(HISTORY), "1800", "success", "ok")
        proxy = ChaosProxy(up.server.base_url).start()
        conn_id = f"feed_{api}"
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "remote_airflow", "host": proxy.url, "login": "viewer", "password": "viewer"}
        )
        out[api] = (up, proxy, conn_id)
    yield out
    for _, proxy, _ in out.values():
        proxy.stop()


@pytest.fixture(params=["v2", "v1"])
def feed_upstream(request, busy):
    return busy[request.param]


def events_path(up) -> str:
    return "/api/v2/assets/events" if up.api == "v2" else "/api/v1/datasets/events"


def runs_path(up) -> str:
    return f"/api/{up.api}/dags/~/dagRuns/list"


class TestAssetWaits:
    async def test_quiet_asset_found_within_two_polls_at_bounded_cost(self, feed_upstream):
        """The reported case: a busy asset's long history never delays or inflates a quiet asset's wait."""
        up, proxy, conn_id = feed_upstream
        hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
        # two assets: the union would be the busy upstream's whole history; per-asset listings are not
        watch = AssetWait(
            assets=[{"uri": QUIET, "name": None}, {"uri": QUIET2, "name": None}],
            require="any",
            cursors={QUIET: {"timestamp": hour_ago}, QUIET2: {"timestamp": hour_ago}},
        )
        probe = AssetProbe(watch)
        client = await RemoteAirflowHook(conn_id).aget_client()
        try:
            assert (await probe(client)).status == "waiting"
            for _ in range(3):
                before = proxy.paths[events_path(up)]
                assert (await probe(client)).status == "waiting"
                assert proxy.paths[events_path(up)] - before <= 2  # one listing per watched asset
            await asyncio.to_thread(seed, up.server, "events", QUIET, "1", "0", '{"path": "s3://x/1.csv"}')
            polls = 0
            while (decision := await probe(client)).status == "waiting":
                polls += 1
                assert polls < 2, "the new event was not found within two polls"
            assert [e["extra"]["path"] for e in decision.result["events"]] == ["s3://x/1.csv"]
        finally:
            await client.close()

    @pytest.mark.parametrize("shared", [True, False], ids=["shared-poll", "own-poll"])
    async def test_deferred_sensor_fires_in_a_busy_upstream(self, feed_upstream, shared, monkeypatch):
        """The trigger a deferred RemoteAssetSensor runs: fires on the quiet asset's event, whatever
        the busy one did."""
        from xdep_sensors.core import poller as polling

        monkeypatch.setattr(polling, "SHARED_POLLING", shared)
        up, proxy, conn_id = feed_upstream
        start = datetime.now(timezone.utc)  # only what happens from here (the other variant's event is older)
        path = f"s3://x/{'shared' if shared else 'own'}.csv"
        trigger = RemoteAssetTrigger(
            remote_conn_id=conn_id,
            assets=[{"uri": QUIET2, "name": None}],
            poke_interval=1,
            timeout_at=time.time() + 120,
            cursors={QUIET2: {"timestamp": start.isoformat()}},
        )
        per_poll: list[int] = []  # event-listing requests each poll sent
        seeded: list[int] = []
        base = proxy.paths[events_path(up)]
        real_sleep = asyncio.sleep

        async def sleep(seconds, *args, **kwargs):  # the poll sleeps once per cycle (shared or its own)
            per_poll.append(proxy.paths[events_path(up)] - base - sum(per_poll))
            if not seeded and len(per_poll) >= 3:  # it has polled: the event happens while it waits
                await asyncio.to_thread(
                    seed, up.server, "events", QUIET2, "1", "0", json.dumps({"path": path})
                )
                seeded.append(len(per_poll))
            await real_sleep(0.2)

        with sleep_patched(sleep, pacing):
            event = await asyncio.wait_for(trigger.run().__anext__(), 120)
        assert event.payload["status"] == "success", event.payload
        assert [e["extra"]["path"] for e in event.payload["result"]["events"]] == [path]
        print(f"{up.api} {'shared' if shared else 'own'} poll: event requests per poll {per_poll}")
        assert len(per_poll) - seeded[0] <= 2  # found by the first or second poll after it happened
        # each poll is one small request, not 52 pages of the busy asset's history
        assert max(per_poll) <= 2, per_poll


class TestRareFailedRun:
    async def test_found_within_two_polls_and_a_restart_neither_loses_nor_repeats(self, feed_upstream):
        """RemoteDagRunEventTrigger(states=["failed"]) on a DAG with 5,200 successful runs since its
        last event."""
        up, proxy, conn_id = feed_upstream
        store: dict = {}

        class Store:  # the watcher's durable state, kept across the "restart" below
            async def aget(self, key, default=None):
                return store.get(key, default)

            async def aset(self, key, value):
                store[key] = json.loads(json.dumps(value))

        def watcher() -> RemoteDagRunEventTrigger:
            t = RemoteDagRunEventTrigger(
                remote_conn_id=conn_id, external_dag_id=DAG, states=["failed"], poll_interval=1
            )
            t.asset_state_store = Store()
            return t

        first = watcher()
        store[first._state_key] = {"timestamp": (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()}
        per_poll: list[int] = []
        seeded: list[int] = []

        async def sleep(
            seconds,
        ):  # one call per poll: count its requests, seed a failure once reads are cheap
            per_poll.append(proxy.paths[runs_path(up)] - sum(per_poll))
            if not seeded and len(per_poll) >= 4 and max(per_poll[-2:]) <= 2:
                await asyncio.to_thread(seed, up.server, "runs", DAG, "1", "0", "failed", "bad_a")
                seeded.append(len(per_poll))

        proxy.paths[runs_path(up)] = 0
        with sleep_patched(sleep, pacing):
            gen = first.run()
            event = await asyncio.wait_for(gen.__anext__(), 120)
            assert event.payload["run"]["run_id"] == "bad_a_0"
            print(
                f"{up.api}: runs-listing requests per poll: {per_poll} "
                f"(failure seeded after poll {seeded[0]})"
            )
            assert len(per_poll) - seeded[0] <= 1  # found by the first or second poll after it happened
            # the catch-up over 5,200 runs is paged across polls; afterwards a poll is one or two requests
            assert sum(per_poll[:3]) <= 60 and max(per_poll[3:]) <= 2, per_poll
            # the triggerer resumes the watcher (handover complete); its next two polls find nothing new
            assert await next_or_quiet(gen, lambda: len(per_poll), polls=2) is None
            await gen.aclose()

            # the triggerer is down while another run fails; then a new triggerer starts the watcher
            await asyncio.to_thread(seed, up.server, "runs", DAG, "1", "0", "failed", "bad_b")
            per_poll.clear()
            proxy.paths[runs_path(up)] = 0
            seeded.append(0)
            second = watcher()
            event = await asyncio.wait_for(second.run().__anext__(), 60)
        assert event.payload["run"]["run_id"] == "bad_b_0"  # bad_a is not repeated, bad_b not lost
        assert proxy.paths[runs_path(up)] <= 2  # from the stored read position, not from the old cursor


def _run(up, run_id: str) -> dict:
    return up.server.api("GET", f"/api/{up.api}/dags/{DAG}/dagRuns/{run_id}")


def _sent(proxy) -> int:
    return sum(n for path, n in proxy.paths.items() if not path.endswith("/version"))


class TestDagRunWaits:
    """RemoteDagRunTrigger against 5,200 finished runs of one DAG: history neither hides a run nor
    costs polls."""

    @pytest.mark.parametrize("shared", [True, False], ids=["shared-poll", "own-poll"])
    async def test_the_oldest_run_is_found_at_the_first_look(self, feed_upstream, shared, monkeypatch):
        """The reported case: the run exists and succeeded, 5,200 runs back; the wait timed out after
        703 requests."""
        from xdep_sensors.core import poller as polling

        monkeypatch.setattr(polling, "SHARED_POLLING", shared)
        up, proxy, conn_id = feed_upstream
        oldest = _run(up, "ok_0")
        logical = oldest.get("logical_date") or oldest["execution_date"]
        before = _sent(proxy)
        trigger = RemoteDagRunTrigger(
            remote_conn_id=conn_id,
            external_dag_id=DAG,
            logical_date=logical,
            poke_interval=2,
            timeout_at=time.time() + 60,
        )
        event = await asyncio.wait_for(trigger.run().__anext__(), 60)
        assert event.payload["status"] == "success" and event.payload["result"]["run_id"] == "ok_0", (
            event.payload
        )
        assert _sent(proxy) - before <= 10, proxy.paths

    async def test_a_bound_before_the_history_costs_little_and_a_backfill_fires_within_two_polls(
        self, feed_upstream
    ):
        """A run that does not exist yet, for a date before the 5,200 runs; then it is backfilled."""
        up, proxy, conn_id = feed_upstream
        wanted = (datetime.now(timezone.utc) - timedelta(days=3)).replace(microsecond=0)
        trigger = RemoteDagRunTrigger(
            remote_conn_id=conn_id,
            external_dag_id=DAG,
            logical_date=wanted.isoformat(),
            poke_interval=1,
            timeout_at=time.time() + 120,
        )
        per_poll: list[int] = []
        seeded: list[int] = []
        base = _sent(proxy)
        real_sleep = asyncio.sleep

        async def sleep(seconds, *args, **kwargs):  # the shared poll sleeps once per cycle
            per_poll.append(_sent(proxy) - base - sum(per_poll))
            if not seeded and len(per_poll) >= 5:
                await asyncio.to_thread(
                    seed, up.server, "runs", DAG, "1", "0", "success", "backfill", wanted.isoformat()
                )
                seeded.append(len(per_poll))
            await real_sleep(0.2)

        with sleep_patched(sleep, pacing):
            event = await asyncio.wait_for(trigger.run().__anext__(), 120)
        assert event.payload["status"] == "success" and event.payload["result"]["run_id"] == "backfill_0"
        print(f"{up.api}: requests per poll {per_poll} (backfill seeded after poll {seeded[0]})")
        assert len(per_poll) - seeded[0] <= 2  # found by the first or second poll after it happened
        # the poll after the first look starts the two change feeds one overlap window (60 s) before it:
        # a page or two each, even right after the seeding; then a poll is what started or ended since
        assert per_poll[1] <= 6 and max(per_poll[2:]) <= 3, per_poll

    async def test_a_triggerer_restart_in_between_loses_and_repeats_nothing(self, feed_upstream):
        """The wait polls a while, its triggerer stops, the run is backfilled meanwhile, a new triggerer
        starts the trigger again from its kwargs: it fires once, at its first look, at first-look cost."""
        up, proxy, conn_id = feed_upstream
        wanted = (datetime.now(timezone.utc) - timedelta(days=4)).replace(microsecond=0)
        kwargs = dict(
            remote_conn_id=conn_id,
            external_dag_id=DAG,
            logical_date=wanted.isoformat(),
            poke_interval=1,
            timeout_at=time.time() + 120,
        )
        polls: list[int] = []
        real_sleep = asyncio.sleep

        async def sleep(seconds, *args, **kw):  # the shared poll sleeps once per cycle
            polls.append(_sent(proxy))
            await real_sleep(0.2)

        with sleep_patched(sleep, pacing):
            first = RemoteDagRunTrigger(**kwargs).run()
            waiting = asyncio.ensure_future(first.__anext__())
            while len(polls) < 4:
                assert not waiting.done()  # the run does not exist yet
                await real_sleep(0.1)
            waiting.cancel()  # the triggerer stops: it cancels its triggers
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await first.aclose()
            await asyncio.to_thread(
                seed, up.server, "runs", DAG, "1", "0", "success", "restarted", wanted.isoformat()
            )
            before = _sent(proxy)
            events = []
            second = RemoteDagRunTrigger(**kwargs).run()  # a new triggerer runs the trigger from its kwargs
            events.append(await asyncio.wait_for(second.__anext__(), 60))
            await second.aclose()
        assert [e.payload["result"]["run_id"] for e in events] == ["restarted_0"]
        assert events[0].payload["status"] == "success"
        assert _sent(proxy) - before <= 10, proxy.paths  # its first look: the run is asked for exactly


class TestServerPageSize:
    """The session's upstreams run with ``[api] maximum_page_limit = 25``: short pages are not the end."""

    async def test_the_cap_is_real_and_a_listing_loses_and_repeats_nothing(self, feed_upstream):
        up, proxy, conn_id = feed_upstream
        asset_id = _asset_ids(up.server)[BUSY]
        query = f"asset_id={asset_id}" if up.api == "v2" else f"dataset_id={asset_id}"
        raw_ids: list[int] = []
        newest: dict = {}
        for offset in range(0, 300, 25):
            body = up.server.api(
                "GET", f"{events_path(up)}?{query}&order_by=-timestamp&limit=100&offset={offset}"
            )
            page = body.get("asset_events", body.get("dataset_events"))
            assert len(page) == 25  # the server's page size, whatever we ask for
            raw_ids += [e["id"] for e in page]
            newest = page[-1]
        since = datetime.fromisoformat(newest["timestamp"].replace("Z", "+00:00"))
        client = await RemoteAirflowHook(conn_id).aget_client()
        try:
            events = await list_asset_events(client, asset_ids=[asset_id], since=since)
        finally:
            await client.close()
        got = [e.id for e in events]
        assert len(got) == len(set(got)) and set(raw_ids) <= set(got), (len(got), len(raw_ids))


class TestVisibilityLag:
    def test_items_are_listed_before_the_overlap_window_passes_them(self, busy):
        """The evidence behind the overlap window, in the upstream's own timestamps.

        Real producer runs emit an asset event from a task; a poller lists events and finished runs
        newest first. A feed's read position is the newest timestamp it has listed; it looks back
        ``OVERLAP`` behind it. So the promise is an ordering, not a speed: when one of these items is
        first listed, no listing before it showed an item newer than its timestamp plus the window.
        The items are told apart by their own producer runs (not by age: earlier tests' events are
        there too). Wall-clock lags are printed for the docs, not asserted.
        """
        from xdep_sensors.core.feeds import OVERLAP

        def stamp(value: str) -> datetime:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))

        lags: dict[str, list[float]] = {}
        for api, (up, _, _) in busy.items():
            server = up.server
            events = "/api/v2/assets/events" if api == "v2" else "/api/v1/datasets/events"
            runs = f"/api/{api}/dags/~/dagRuns/list"
            run_ids = [
                up.trigger("xdep_test_assets", conf={"which": "bears", "extra": {"lag": i}}) for i in range(3)
            ]
            # per listing: when each of our items was first listed, and the newest time listed before that
            first: dict[str, dict[str, tuple[datetime, datetime | None, float]]] = {
                "asset events": {},
                "runs (end_date)": {},
            }
            newest: dict[str, datetime | None] = {"asset events": None, "runs (end_date)": None}

            def look(listing: str, items: list[tuple[str | None, datetime]]) -> None:
                now = datetime.now(timezone.utc)
                for own, when in items:
                    if own in run_ids and own not in first[listing]:
                        first[listing][own] = (when, newest[listing], (now - when).total_seconds())
                for _, when in items:
                    newest[listing] = when if newest[listing] is None else max(newest[listing], when)

            deadline = time.monotonic() + 300
            while not all(len(seen) == 3 for seen in first.values()):
                assert time.monotonic() < deadline, (
                    f"{api}: not all producer runs and their events were listed: {first}"
                )
                body = server.api("GET", f"{events}?order_by=-timestamp&limit=20")
                look(
                    "asset events",
                    [
                        (e.get("source_run_id"), stamp(e["timestamp"]))
                        for e in body.get("asset_events", body.get("dataset_events", []))
                    ],
                )
                listed = server.api(
                    "POST",
                    runs,
                    {
                        "dag_ids": ["xdep_test_assets"],
                        "states": ["success", "failed"],
                        "order_by": "-end_date",
                        "page_limit": 20,
                    },
                )
                look(
                    "runs (end_date)",
                    [
                        (r["dag_run_id"], stamp(r["end_date"]))
                        for r in listed["dag_runs"]
                        if r.get("end_date")
                    ],
                )
                time.sleep(0.05)
            for listing, seen in first.items():
                lags[f"{api} {listing}"] = [round(lag, 3) for _, _, lag in seen.values()]
                for own, (when, newest_before, _) in seen.items():
                    # the promise: a feed that had read up to newest_before still covers this item
                    assert newest_before is None or when >= newest_before - OVERLAP, (
                        f"{api} {listing}: {own} (at {when}) was first listed after an item at "
                        f"{newest_before}, more than the overlap window ({OVERLAP}) newer"
                    )
        print("visibility lag (s after the item's timestamp, within 50 ms of polling):", json.dumps(lags))


def seed_at(server, stamps: list[datetime]) -> list[int]:
    """Events of the busy asset at these timestamps, in one transaction; their ids."""
    python = Path(server.airflow_bin).parent / "python"
    args = [str(python), str(HERE / "seed_history.py"), "events_at", BUSY, *(s.isoformat() for s in stamps)]
    res = subprocess.run(args, env=server.env, cwd=server.home, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


class TestLateItems:
    """Runs last in this module: it adds events to the busy asset."""

    async def test_a_read_skips_the_page_below_the_top_where_late_items_lie_deep(self, busy):
        """Late-committed events (timestamps older than events already listed) placed at chosen ranks of
        the real listing, 25 a page (the session's ``maximum_page_limit``): once the feed has found
        them deep, it skips the page below the top and reads it only when the next page's offset says
        it holds one. Every event is delivered once, and the offsets are the unit tests' at 25 a page."""
        from xdep_sensors.core.listings import Listing

        up, _, conn_id = busy["v2"]  # v1 asset events have no time filter: read newest first, no skipping
        asset_id = _asset_ids(up.server)[BUSY]
        newest = up.server.api(
            "GET", f"/api/v2/assets/events?asset_id={asset_id}&order_by=-timestamp&limit=1"
        )
        top = datetime.fromisoformat(newest["asset_events"][0]["timestamp"].replace("Z", "+00:00"))
        top += timedelta(seconds=1)
        base = await asyncio.to_thread(
            seed_at, up.server, [top + timedelta(milliseconds=10 * i) for i in range(100)]
        )
        client = await RemoteAirflowHook(conn_id).aget_client()
        listing = Listing("asset_events", asset_id=asset_id)
        feed = await open_feed(client, listing, top - timedelta(milliseconds=1))
        offsets: list[int] = []
        absorb = feed.absorb

        def counted(step, items, total):
            offsets.append(step.offset)
            return absorb(step, items, total)

        feed.absorb = counted  # type: ignore[method-assign]

        async def read_with_late_at(rank: int | None) -> list[int]:
            """10 new events on top, and one committed late at ``rank`` of the newest-first listing."""
            nonlocal top
            top += timedelta(seconds=1, milliseconds=100)
            stamps = [top + timedelta(milliseconds=i) for i in range(10)]
            if rank is not None:  # just below the event that is at rank - 1 once the 10 new ones are on top
                at = up.server.api(
                    "GET",
                    f"/api/v2/assets/events?asset_id={asset_id}&order_by=-timestamp"
                    f"&limit=1&offset={rank - 11}",
                )["asset_events"][0]["timestamp"]
                stamps.append(datetime.fromisoformat(at.replace("Z", "+00:00")) - timedelta(microseconds=1))
            made = await asyncio.to_thread(seed_at, up.server, stamps)
            del offsets[:]
            got = await read_feed(client, feed, listing)
            assert sorted(e.id for e in got) == sorted(made), rank
            return list(offsets)

        try:
            assert sorted(e.id for e in await read_feed(client, feed, listing)) == sorted(base)
            assert await read_with_late_at(60) == [0, 25, 50]  # nothing learnt yet: page by page
            assert list(feed.late_depths) == [2]
            assert await read_with_late_at(60) == [0, 50]  # the page below the top is skipped
            assert await read_with_late_at(35) == [0, 50, 25]  # it held the late one: read after all
            assert await read_with_late_at(85) == [0, 50, 75]  # nothing unseen above 50: on below it
            assert await read_with_late_at(None) == [0]
            del offsets[:]
            assert await read_feed(client, feed, listing) == [] and offsets == [0]
        finally:
            await client.close()
