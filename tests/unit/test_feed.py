"""The feed: what a poll costs and what it finds must not depend on the upstream's history."""

from __future__ import annotations

import gc
import itertools
import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from devtools.memory_upstream import T0, MemoryUpstream
from tests.helpers import calls, memory_client
from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.core.feeds import OVERLAP, new_feed
from xdep_sensors.core.listings import Listing, latest_asset_event, list_asset_events, open_feed, read_feed


@pytest.fixture(params=["v2", "v1"])
def upstream(request) -> MemoryUpstream:
    return MemoryUpstream(api=request.param)


async def warm_asset_feed():
    """A v2 upstream with one event, and an asset-event feed that has read it: (upstream, client,
    listing, feed)."""
    upstream = MemoryUpstream(api="v2")
    client = memory_client(upstream)
    listing = Listing("asset_events")
    feed = await open_feed(client, listing, T0)
    upstream.add_event(1, T0)
    await read_feed(client, feed, listing)
    return upstream, client, listing, feed


async def logged_asset_feed():
    """A v2 upstream logging each request, and an asset-event feed from T0: (upstream, client,
    listing, feed)."""
    upstream = MemoryUpstream(api="v2")
    upstream.log = []
    client = memory_client(upstream)
    listing = Listing("asset_events")
    feed = await open_feed(client, listing, T0)
    return upstream, client, listing, feed


async def late_rounds():
    """A feed that has read 400 events 100 ms apart, and ``read_with_late_at(rank)``: 50 new events on
    top and one committed late at ``rank`` of the newest-first listing (None: none late), read once;
    it checks the read delivered exactly those and returns the offsets the read asked for."""
    upstream, client, listing, feed = await logged_asset_feed()
    for i in range(400):
        upstream.add_event(1, T0 + timedelta(milliseconds=100 * i))
    await read_feed(client, feed, listing)
    top = T0 + timedelta(seconds=40)

    async def read_with_late_at(rank: int | None) -> list[int]:
        nonlocal top
        top += timedelta(seconds=1)
        made = [upstream.add_event(1, top + timedelta(milliseconds=i)) for i in range(50)]
        if rank is not None:
            newest_first = sorted(upstream.events, key=lambda e: (e[0], e[1]), reverse=True)
            made.append(upstream.add_event(2, newest_first[rank - 1][0] - timedelta(microseconds=1)))
        del upstream.log[:]
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == sorted(made)
        return [int(dict(params)["offset"]) for _, params in upstream.log]

    return feed, read_with_late_at


class TestFeedOnAssetEvents:
    async def test_quiet_asset_in_busy_upstream_costs_one_request_and_fires(self, upstream):
        """The reported case: 5,200 events of a busy asset, then one of a quiet asset."""
        client = memory_client(upstream)
        start = T0
        for i in range(5200):
            upstream.add_event(1, start + timedelta(milliseconds=7 * i + 1))
        listing = Listing("asset_events", asset_id=2)
        feed = await open_feed(client, listing, start)
        assert await read_feed(client, feed, listing) == []
        before = calls(upstream)
        for _ in range(3):
            assert await read_feed(client, feed, listing) == []
        assert calls(upstream) - before == 3  # one request per quiet poll
        quiet = upstream.add_event(2, start + timedelta(seconds=60))
        before = calls(upstream)
        assert [e.id for e in await read_feed(client, feed, listing)] == [quiet]
        assert calls(upstream) - before == 1

    async def test_union_read_is_bounded_by_new_items_not_history(self, upstream):
        client = memory_client(upstream)
        for i in range(5200):
            upstream.add_event(1 + i % 7, T0 + timedelta(milliseconds=7 * i + 1))
        listing = Listing("asset_events")
        feed = await open_feed(client, listing, T0)
        first = await read_feed(
            client, feed, listing
        )  # history longer than the page cap: cut, then continued
        assert len(first) == 5000 and feed.behind
        second = await read_feed(client, feed, listing)
        assert len(second) == 200 and not feed.behind
        now = T0 + timedelta(seconds=40)
        for burst in (0, 1, 99, 100, 101, 350):
            new_ids = [upstream.add_event(3, now + timedelta(milliseconds=i)) for i in range(burst)]
            now += timedelta(seconds=5)
            before = calls(upstream)
            got = await read_feed(client, feed, listing)
            assert [e.id for e in got] == new_ids
            # a window of over 5,000 items (more than one read's pages): read from the last known
            # item, oldest first
            assert calls(upstream) - before <= math.ceil(burst / 100) + 1

    async def test_a_cut_read_never_pins_the_feed(self, upstream):
        """With more history than one poll may read, a newer item is still found by later polls."""
        client = memory_client(upstream)
        for i in range(12_000):
            upstream.add_event(1, T0 + timedelta(milliseconds=3 * i + 1))
        target = upstream.add_event(1, T0 + timedelta(minutes=20))
        listing = Listing("asset_events", asset_id=1)
        feed = await open_feed(client, listing, T0)
        found, polls = [], 0
        while target not in found or feed.behind:
            found += [e.id for e in await read_feed(client, feed, listing, max_pages=10)]
            polls += 1
            assert polls < 20
            if polls == 1 and upstream.api == "v1":  # v1 reads newest first: the newest item comes at once
                assert target in found
        assert len(found) == len(set(found)) == 12_001

    async def test_late_visible_item_inside_the_window_is_found_once(self, upstream):
        client = memory_client(upstream)
        listing = Listing("asset_events")
        feed = await open_feed(client, listing, T0)
        ids = [upstream.add_event(1, T0 + timedelta(seconds=s)) for s in range(1, 300)]
        assert [e.id for e in await read_feed(client, feed, listing)] == ids
        late = upstream.add_event(2, T0 + timedelta(seconds=299) - OVERLAP / 2)  # committed late
        got = await read_feed(client, feed, listing)
        assert [e.id for e in got] == [late]
        assert await read_feed(client, feed, listing) == []

    async def test_tied_timestamps_are_each_delivered_once(self, upstream):
        client = memory_client(upstream)
        listing = Listing("asset_events")
        feed = await open_feed(client, listing, T0)
        same = T0 + timedelta(seconds=5)
        ids = [upstream.add_event(1, same) for _ in range(250)]
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == ids
        more = [upstream.add_event(1, same) for _ in range(3)]
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == more

    async def test_a_late_item_costs_the_pages_down_to_it(self):
        """A warm read counts the window's unseen items (its total less what it has read) and reads newest
        first only until it has found them: new items and a late one 150 items deep cost two pages."""
        upstream = MemoryUpstream(api="v2")
        client = memory_client(upstream)
        listing = Listing("asset_events")
        feed = await open_feed(client, listing, T0)
        for i in range(300):
            upstream.add_event(1, T0 + timedelta(milliseconds=100 * i))
        await read_feed(client, feed, listing)
        top = T0 + timedelta(seconds=30)
        new = [upstream.add_event(1, top + timedelta(milliseconds=i)) for i in range(50)]
        before = calls(upstream)
        assert [e.id for e in await read_feed(client, feed, listing)] == new
        assert calls(upstream) - before == 1
        new = [upstream.add_event(1, top + timedelta(seconds=1, milliseconds=i)) for i in range(50)]
        late = upstream.add_event(2, top - timedelta(seconds=10))  # 100 known items below the new ones
        before = calls(upstream)
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == sorted(new + [late])
        assert calls(upstream) - before == 2
        before = calls(upstream)
        assert await read_feed(client, feed, listing) == []
        assert calls(upstream) - before == 1

    async def test_late_items_found_deep_lately_skip_the_page_below_the_top(self):
        """Where the late items lately lay two pages or more below the top, a read skips the page right
        below it and reads the next; the offset arithmetic there says whether the page skipped holds
        anything unseen. Each late item is found once, whichever page it is on."""
        feed, read_with_late_at = await late_rounds()
        assert await read_with_late_at(250) == [0, 100, 200]  # nothing learnt yet: down page by page
        assert list(feed.late_depths) == [2]
        assert await read_with_late_at(250) == [0, 200]  # skips the page below the top: nothing unseen in it
        assert await read_with_late_at(150) == [0, 200, 100]  # the skipped page held it: read after all
        assert await read_with_late_at(350) == [0, 200, 300]  # nothing unseen above the page read: on below
        assert await read_with_late_at(None) == [0]  # nothing late: the top page found all
        assert list(feed.late_depths) == [2, 2, 1, 3]
        assert await read_with_late_at(None) == [0]

    async def test_late_items_right_below_the_top_page_are_read_page_by_page(self):
        """Sub-second late commits (what real Airflow shows) land right below the top page: no skipping."""
        feed, read_with_late_at = await late_rounds()
        for rank, pages in ((120, [0, 100]), (250, [0, 100, 200]), (130, [0, 100]), (110, [0, 100])):
            assert await read_with_late_at(rank) == pages, rank
        assert not feed.skip_ahead()

    async def test_a_page_skipped_is_read_when_the_next_pages_first_item_ties_with_known_ones(self):
        """Known items tied with the first item of the page read after skipping one may be above it or
        below: counting only the known items strictly newer, a late item in the page skipped is found."""
        upstream, client, listing, feed = await logged_asset_feed()
        for i in range(200):
            upstream.add_event(1, T0 + timedelta(milliseconds=100 * i))
        tied = T0 + timedelta(seconds=20)
        for _ in range(150):
            upstream.add_event(1, tied)
        for i in range(100):
            upstream.add_event(1, tied + timedelta(milliseconds=100 * (i + 1)))  # up to 30 s
        await read_feed(client, feed, listing)
        feed.late_depths.extend([2, 2])  # late items lately lay two pages down
        made = [upstream.add_event(1, T0 + timedelta(seconds=31, milliseconds=i)) for i in range(50)]
        late = T0 + timedelta(seconds=25, microseconds=1)
        made.append(upstream.add_event(2, late))  # rank 100: in the page skipped
        del upstream.log[:]
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == sorted(made)
        # the page at 200 starts inside the tie (ranks 151-300): the tied items count as maybe above it
        assert [int(dict(params)["offset"]) for _, params in upstream.log] == [0, 200, 100]
        assert await read_feed(client, feed, listing) == []

    @pytest.mark.parametrize("seed", [3, 5, 8, 13])
    async def test_randomized_deep_late_items_with_skipping_each_exactly_once(self, seed):
        """A busy listing (20 items a second, ties) with late items up to 20 s deep: reads skip pages
        and read some skipped pages after all; every item is delivered once."""
        rng = random.Random(seed)
        upstream, client, listing, feed = await logged_asset_feed()
        now = T0 + OVERLAP
        made: list[int] = []
        delivered: list[int] = []
        for _ in range(80):
            for _ in range(rng.randint(60, 110)):
                now += timedelta(milliseconds=rng.choice([0, 50, 50, 60]))  # some tied
                lag = timedelta(seconds=rng.uniform(0, 20)) if rng.random() < 0.03 else timedelta()
                made.append(upstream.add_event(rng.randint(1, 5), now - lag))
            delivered += [e.id for e in await read_feed(client, feed, listing)]
        delivered += [e.id for e in await read_feed(client, feed, listing)]
        assert len(delivered) == len(set(delivered))
        assert sorted(delivered) == sorted(made)
        offsets = [int(dict(params)["offset"]) for path, params in upstream.log if path.endswith("/events")]
        skips = sum(1 for a, b in itertools.pairwise(offsets) if a == 0 and b == 200)
        backfills = sum(1 for a, b in itertools.pairwise(offsets) if a == 200 and b == 100)
        assert skips and backfills, (skips, backfills)

    async def test_new_items_cost_ceil_new_over_the_page_size(self):
        """The docs' "a busy one ceil(new / page size)" (How a wait reads the upstream): no anchor
        page before the new items."""
        upstream, client, listing, feed = await warm_asset_feed()
        top = T0
        for burst, cost in ((0, 1), (50, 1), (100, 1), (101, 2), (250, 3)):
            top += timedelta(seconds=1)
            new = [upstream.add_event(1, top + timedelta(microseconds=i)) for i in range(burst)]
            before = calls(upstream)
            assert [e.id for e in await read_feed(client, feed, listing)] == new
            assert calls(upstream) - before == cost, burst

    async def test_a_burst_beyond_the_pages_of_one_read_arrives_oldest_first(self):
        """A window too long to read newest first within one read is read oldest first, across reads:
        a consumer's cursor (which forgets what is older than its newest item less the overlap)
        accepts all."""
        from xdep_sensors.core.cursors import Cursor

        upstream, client, listing, feed = await warm_asset_feed()
        burst = [upstream.add_event(1, T0 + timedelta(seconds=1 + i * 0.2)) for i in range(1000)]  # 200 s
        upstream.add_event(2, T0 + timedelta(seconds=100))  # and a late one in the middle of it
        cursor, taken = Cursor(T0.isoformat()), []
        for _ in range(20):
            got = await read_feed(client, feed, listing, max_pages=3)
            taken += [e.id for e in got if cursor.is_new(e)]
            cursor = cursor.advance(got)
            if not feed.behind and not got:
                break
        assert sorted(taken) == sorted(burst + [upstream._next_id - 1])

    @pytest.mark.parametrize("seed", [7, 11, 23, 42])
    async def test_randomized_history_each_item_exactly_once(self, upstream, seed):
        """Random bursts (more than a poll may read), ties and late items within the window: nothing
        lost, nothing twice."""
        rng = random.Random(seed)
        client = memory_client(upstream)
        listing = Listing("asset_events")
        feed = await open_feed(client, listing, T0)
        now = T0 + OVERLAP  # late items never predate the feed's start
        made: list[int] = []
        delivered: list[int] = []
        for _ in range(60):
            for _ in range(rng.choice([0, 0, 1, 3, 40, 120, 260])):
                lag = (
                    timedelta(seconds=rng.random() * OVERLAP.total_seconds() * 0.9)
                    if rng.random() < 0.1
                    else timedelta()
                )
                made.append(upstream.add_event(rng.randint(1, 5), now - lag))
                if rng.random() < 0.7:
                    now += timedelta(milliseconds=rng.randint(0, 30))
            delivered += [e.id for e in await read_feed(client, feed, listing, max_pages=3)]
            now += timedelta(seconds=5)
        while feed.behind:
            delivered += [e.id for e in await read_feed(client, feed, listing, max_pages=3)]
        delivered += [e.id for e in await read_feed(client, feed, listing)]
        assert len(delivered) == len(set(delivered))
        assert sorted(delivered) == sorted(made)


class TestFeedOnFinishedRuns:
    async def test_rare_failure_on_a_busy_dag_costs_one_request_per_quiet_poll(self):
        upstream = MemoryUpstream(api="v2")
        client = memory_client(upstream)
        for i in range(5200):
            upstream.add_run("hourly", f"run_{i}", "success", T0 + timedelta(seconds=i))
        listing = Listing("finished_runs", dag_ids=("hourly",), states=("failed", "success"))
        feed = await open_feed(client, listing, T0 + timedelta(seconds=5100))
        assert len(await read_feed(client, feed, listing)) == 100
        before = calls(upstream)
        assert await read_feed(client, feed, listing) == []
        upstream.add_run("hourly", "bad", "failed", T0 + timedelta(seconds=6000))
        got = await read_feed(client, feed, listing)
        assert [r.run_id for r in got] == ["bad"]
        assert calls(upstream) - before == 2


class TestFeedPure:
    def test_window_is_pruned_to_the_overlap(self):
        feed = new_feed(None, time_filter=True, position=lambda i: i)
        step = feed.first_step()
        items = [(T0 + timedelta(seconds=s), s) for s in range(0, 600, 10)]
        fresh, nxt = feed.absorb(step, items, len(items))
        assert len(fresh) == 60 and nxt is None
        assert all(t >= feed.mark - OVERLAP for _, t in feed.seen)

    def test_items_before_the_start_are_never_new(self):
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        feed = new_feed(start, time_filter=False, position=lambda i: i)
        step = feed.first_step()
        fresh, nxt = feed.absorb(step, [(start, 2), (start - timedelta(seconds=1), 1)], 2)
        assert fresh == [(start, 2)] and nxt is None


class TestFeedAtHead:
    async def test_starts_at_the_newest_item_then_delivers_what_comes_after(self, upstream):
        client = memory_client(upstream)
        for i in range(3000):  # one every 100 ms: the last minute (the window) holds 600
            upstream.add_event(1, T0 + timedelta(milliseconds=100 * i))
        listing = Listing("asset_events")
        dialect = await client.dialect()
        feed = new_feed(
            None, time_filter=listing.time_filter(dialect), position=listing.position, at_head=True
        )
        before = calls(upstream)
        assert await read_feed(client, feed, listing) == []  # what is visible now only sets the position
        assert calls(upstream) - before <= 2 + 600 / 100  # the newest item, then its window: not the history
        late = upstream.add_event(2, T0 + timedelta(milliseconds=100 * 2999) - OVERLAP / 3)
        new = upstream.add_event(2, T0 + timedelta(seconds=400))
        assert sorted(e.id for e in await read_feed(client, feed, listing)) == [late, new]
        assert await read_feed(client, feed, listing) == []


class TestSharedReads:
    async def test_a_consumer_joining_later_catches_up_from_what_was_delivered(self, upstream):
        """A sensor of the next downstream run starts from its committed cursor: no request needed."""
        from xdep_sensors.core.shared_reads import SharedReads

        client = memory_client(upstream)
        for i in range(2000):
            upstream.add_event(9, T0 + timedelta(milliseconds=500 * i))
        reads = SharedReads("asset_events")
        targets = {1, 2, 3}
        now = T0 + timedelta(seconds=1000)
        assert await reads.read(client, targets) == {}  # starts at the newest event
        first = upstream.add_event(1, now)
        got = await reads.read(client, targets)
        assert [e.id for e in got[1]] == [first]
        second = upstream.add_event(1, now + timedelta(seconds=5))
        assert [e.id for e in (await reads.read(client, targets))[1]] == [second]
        before = calls(upstream)
        items, complete = await reads.catch_up(client, 1, now - timedelta(milliseconds=100))  # after the head
        assert complete and [e.id for e in items] == [first, second] and calls(upstream) == before
        # a start before what the shared read covers is read from the upstream
        items, complete = await reads.catch_up(client, 1, T0)
        assert complete and [e.id for e in items] == [first, second] and calls(upstream) > before


class TestUnionOrPerAsset:
    async def test_busy_upstream_switches_to_per_asset_and_back_when_it_calms(self):
        """Two watched assets: the union while the upstream is quiet, their own listings while it is busy."""
        from xdep_sensors.core.shared_reads import SharedReads

        upstream = MemoryUpstream(api="v2")
        client = memory_client(upstream)
        reads = SharedReads("asset_events")
        targets = {1, 2}
        now = T0 + timedelta(hours=1)
        upstream.add_event(1, now)
        await reads.read(client, targets)
        assert reads.union is not None  # quiet: one listing serves both

        def per_cycle(busy: bool) -> int:
            nonlocal now
            now += timedelta(seconds=5)
            for i in range(500 if busy else 0):
                upstream.add_event(9, now + timedelta(milliseconds=i))
            return calls(upstream)

        costs = []
        for cycle in range(14):
            before = per_cycle(busy=True)
            await reads.read(client, targets)
            costs.append(calls(upstream) - before)
        # per asset: 2 requests, not 6 pages of the union (+1 count every 10 cycles to see if it calmed down)
        assert reads.union is None and max(costs[2:]) <= 3 and sorted(costs[2:])[-2] <= 2, costs
        delivered = []
        late = None
        for cycle in range(25):  # calm again: within two spells a count tells the union is cheaper
            per_cycle(busy=False)
            delivered += [e.id for e in (await reads.read(client, targets)).get(1, [])]
            if reads.union is not None and late is None:
                # just switched: an event of a watched asset becomes visible late, older than the count
                late = upstream.add_event(1, reads._probe_since - timedelta(seconds=30))
        assert reads.union is not None
        assert late is not None and delivered.count(late) == 1  # the switch to the union covers the window
        fresh = upstream.add_event(2, now + timedelta(seconds=1))
        assert [e.id for e in (await reads.read(client, targets))[2]] == [fresh]


class TestLatestEvent:
    async def test_the_doctors_latest_event_is_one_request_whatever_the_history(self, upstream):
        client = memory_client(upstream)
        for i in range(6000):
            upstream.add_event(1, T0 + timedelta(seconds=i))
        before = calls(upstream)
        event = await latest_asset_event(client, 1)
        assert event is not None and event.timestamp == T0 + timedelta(seconds=5999)
        assert calls(upstream) - before == 1
        assert await latest_asset_event(client, 2) is None


class TestServerPageSize:
    """``[api] maximum_page_limit`` below 100: a short page is not the end of a listing."""

    async def test_a_capped_page_loses_and_repeats_nothing(self, upstream):
        upstream.page_limit = 25
        client = memory_client(upstream)
        listing = Listing("asset_events", asset_id=1)
        feed = await open_feed(client, listing, T0)
        made = [upstream.add_event(1, T0 + timedelta(seconds=s)) for s in range(1, 301)]
        assert [e.id for e in await read_feed(client, feed, listing)] == made
        more = [upstream.add_event(1, T0 + timedelta(seconds=400 + s)) for s in range(60)]
        assert [e.id for e in await read_feed(client, feed, listing)] == more
        assert await read_feed(client, feed, listing) == []

    async def test_listings_read_every_page(self, upstream):
        upstream.page_limit = 25
        for a in range(1, 61):
            upstream.assets.add(a)
        client = memory_client(upstream)
        assert len(await client.list_assets()) == 60
        upstream.dags.update(f"dag_{i}" for i in range(70))
        assert len(await client.list_dags()) == 70
        found = await client.find_dags([f"dag_{i}" for i in range(0, 70, 10)])
        assert sorted(found) == sorted(f"dag_{i}" for i in range(0, 70, 10))


class TestUnpagedBatch:
    """Airflow 2.9's task-instance batch has no paging: it answers every match, whatever the offset."""

    class Unpaged:
        dialect_name = "v1"

        def __init__(self, rows):
            self.rows, self.requests = rows, []

        async def close(self):
            return None

        async def send(self, request):
            self.requests.append(request)
            if request.path.endswith("/version"):
                return {"version": "2.9.3"}
            since = request.json.get("end_date_gte")
            rows = [r for r in self.rows if since is None or r["end_date"] >= since]
            return {"task_instances": rows, "total_entries": len(rows)}

    async def test_read_once_narrowed_by_end_date_and_never_twice(self):
        def ti(i, end):
            return {
                "dag_id": "d",
                "dag_run_id": f"r{i}",
                "task_id": "t",
                "state": "failed",
                "map_index": -1,
                "try_number": 1,
                "end_date": end.isoformat(),
            }

        old = [ti(i, T0 - timedelta(days=1, seconds=i)) for i in range(500)]  # history: never read
        upstream = self.Unpaged(old)
        client = RemoteAirflowClient(
            ClientConfig("http://up.test", password="t", api_version="v1"), transport=upstream
        )  # type: ignore[arg-type]
        listing = Listing("ended_task_instances", dag_ids=("d",), states=("failed",))
        from xdep_sensors.core.shared_reads import SharedReads

        feed = await SharedReads._at_head(
            client, listing
        )  # where a shared read starts: the window behind now
        assert await read_feed(client, feed, listing) == []
        lists = [r for r in upstream.requests if r.json is not None]
        assert len(lists) == 1 and "end_date_gte" in lists[0].json
        upstream.rows.append(ti(900, datetime.now(timezone.utc)))
        got = await read_feed(client, feed, listing)
        assert [t.run_id for t in got] == ["r900"]
        assert await read_feed(client, feed, listing) == []
        assert len([r for r in upstream.requests if r.json is not None]) == 3  # one request a read


class TestNullableFields:
    """What the specs mark nullable never crashes a read: such items are skipped or given a key."""

    def test_runs_and_task_instances_without_ids_are_skipped(self):
        from xdep_sensors.client.dialects import V1, V2

        runs = V1().parse_dag_runs(
            {
                "dag_runs": [
                    {"dag_id": "d", "dag_run_id": None, "state": "success"},
                    {"dag_id": "d", "dag_run_id": "r", "state": "success"},
                ],
                "total_entries": 2,
            }
        )
        assert [r.run_id for r in runs.items] == ["r"] and runs.total == 2
        tis = V2().parse_task_instances(
            {
                "task_instances": [
                    {"dag_id": "d", "dag_run_id": "r", "task_id": None},
                    {"dag_id": "d", "dag_run_id": "r", "task_id": "t"},
                ]
            }
        )
        assert [t.task_id for t in tis.items] == ["t"]

    def test_events_without_uri_name_or_id(self):
        from xdep_sensors.client.dialects import V1, V2

        (e,) = (
            V2()
            .parse_asset_events(
                {
                    "asset_events": [
                        {"id": 1, "asset_id": 3, "uri": None, "name": None, "timestamp": T0.isoformat()}
                    ]
                }
            )
            .items
        )
        assert e.uri == "" and e.name == ""
        (e1,) = (
            V1()
            .parse_asset_events(
                {
                    "dataset_events": [
                        {
                            "dataset_id": 3,
                            "dataset_uri": "s3://x",
                            "timestamp": T0.isoformat(),
                            "source_run_id": "r",
                        }
                    ]
                }
            )
            .items
        )
        assert isinstance(e1.id, str) and "r" in e1.id

    def test_finished_runs_without_end_date_are_left_out(self):
        from xdep_sensors.client.dialects import V2

        listing = Listing("finished_runs", states=("success",))
        page = listing.parse(
            V2(),
            {
                "dag_runs": [
                    {"dag_id": "d", "dag_run_id": "a", "state": "success", "end_date": None},
                    {"dag_id": "d", "dag_run_id": "b", "state": "success", "end_date": T0.isoformat()},
                ],
                "total_entries": 2,
            },
        )
        assert [r.run_id for r in page.items] == ["b"]


class TestReaders:
    """The sensors' shared poll and the watchers' shared stream of one connection read one set of feeds."""

    async def test_two_readers_in_any_phase_cost_one_read_per_interval_and_each_gets_every_item_once(
        self, monkeypatch
    ):
        from xdep_sensors.core import shared_reads as streams

        upstream = MemoryUpstream(api="v2")
        client = memory_client(upstream)
        clock = [0.0]
        monkeypatch.setattr(streams, "_clock", lambda: clock[0])
        reads = streams.SharedReads("asset_events")
        targets = {1, 2}
        interval = 10.0
        got: dict[str, list[int]] = {"poll": [], "stream": []}
        made: list[int] = []
        reads_made = []
        for phase in (0.0, 2.0, 4.9, 5.1, 9.0):  # where the stream calls, after the poll
            for tick in range(6):
                if tick == 1:
                    reads_before = reads.reads_made  # after the first interval of each phase
                start = 100.0 * len(reads_made) + tick * interval
                made.append(upstream.add_event(1 + tick % 2, T0 + timedelta(seconds=start + 0.5)))
                for who, at in (("poll", start + 1.0), ("stream", start + 1.0 + phase)):
                    clock[0] = at
                    by_target, _ = await reads.read_for(who, client, targets, interval / 2)
                    got[who] += [e.id for items in by_target.values() for e in items]
            reads_made.append(reads.reads_made - reads_before)
        for who in (
            "poll",
            "stream",
        ):  # a handed-over read may be up to half an interval old: the next brings the rest
            clock[0] += interval
            by_target, _ = await reads.read_for(who, client, targets, interval / 2)
            got[who] += [e.id for items in by_target.values() for e in items]
        for who in ("poll", "stream"):
            assert len(got[who]) == len(set(got[who])), who
        # every item after the readers' first call (the shared feed starts at the head then)
        assert set(made[1:]) <= set(got["poll"]) and set(made[1:]) <= set(got["stream"])
        assert reads_made == [5, 5, 5, 5, 5], reads_made  # one read per interval, whatever the phase

    async def test_a_reader_keeps_only_its_own_targets_items_and_nobody_holding_them_frees_the_feeds(self):
        from xdep_sensors.core import shared_reads as streams

        upstream = MemoryUpstream(api="v2")
        client = memory_client(upstream)
        reads = streams.asset_reads_for(client.config)
        assert streams.asset_reads_for(client.config) is reads  # one per connection and event loop
        for i in range(20):
            upstream.add_event(1, T0 + timedelta(seconds=i))
            await reads.read_for("poll", client, {1}, 0.0)
            if i == 0:
                await reads.read_for("stream", client, {1}, 0.0)
        # what the stream has not taken waits for it: its own targets' items only
        assert set(reads.readers["stream"].pending) == {1} and len(reads.readers["stream"].pending[1]) == 19
        reads.leave("stream")
        assert set(reads.readers) == {"poll"} and not reads.readers["poll"].pending
        by_target, _ = await reads.read_for("poll", client, set(), 0.0)  # no target left: the poll leaves
        assert by_target == {} and not reads.readers
        assert reads.union is None and not reads.per_target  # the next reader starts at the head
        assert streams.asset_reads_for(client.config) is reads  # (while a poll or a stream holds it)
        key = next(k for k, v in streams._BY_CONNECTION.here().items() if v is reads)
        del reads
        gc.collect()  # a cycle may hold it until a collection; other tests' connections may still be held
        assert key not in streams._BY_CONNECTION.here()


class TestServerFilters:
    """Filters the upstream's API offers are applied by the server, not by reading everything."""

    async def test_source_dag_id_is_filtered_by_the_server(self, upstream):
        """An asset with 3,000 events from one DAG and one from the wanted DAG: the wait reads that one."""
        from xdep_sensors.core.probes import AssetProbe, AssetWait

        client = memory_client(upstream)
        for i in range(3000):
            upstream.add_event(1, T0 + timedelta(seconds=i), source_dag_id="noisy")
        wanted = upstream.add_event(1, T0 + timedelta(seconds=1500, milliseconds=1), source_dag_id="orders")
        upstream.dags.add("orders")
        probe = AssetProbe(
            AssetWait(
                assets=[{"uri": "s3://bucket/asset-1", "name": None}],
                source_dag_id="orders",
                since=T0.isoformat(),
            )
        )
        before = calls(upstream)
        decision = await probe(client)
        assert decision.status == "success" and [e["id"] for e in decision.result["events"]] == [wanted]
        # the asset's lookup, whether the user may read DAG "orders" (3.3 hides other DAGs' events), and
        # one page of its events (a v1 upstream needs no second)
        assert calls(upstream) - before <= 3
        events = await list_asset_events(client, asset_ids=[1], since=T0, source_dag_id="orders")
        assert [e.id for e in events] == [wanted]

    @pytest.mark.parametrize("version, lookups", [("3.3.2", 2), ("3.2.2", 2), ("3.1.8", 100)])
    async def test_the_assets_of_a_cycles_new_waits_are_found_in_one_listing_from_3_2(self, version, lookups):
        """1,000 new asset waits on 100 assets: 3.2+ finds them by URI prefixes as alternatives (two
        listings of at most 1,500 characters of URIs each), older upstreams one substring lookup per asset."""
        import asyncio

        from xdep_sensors.core import poller as polling
        from xdep_sensors.core.probes import AssetProbe, AssetWait

        upstream = MemoryUpstream(api="v2", version=version)
        upstream.assets |= set(range(100))
        client = memory_client(upstream)
        probes = [
            AssetProbe(
                AssetWait(
                    assets=[{"uri": f"s3://bucket/asset-{i % 100}", "name": None}], since=T0.isoformat()
                )
            )
            for i in range(1000)
        ]
        poller = polling.SharedPoller(client.config, 5, on_empty=lambda: None)
        poller.client = client
        source = poller._needs([polling._Subscriber(p) for p in probes])
        await asyncio.gather(*(p.step(source) for p in probes))
        assert all(p.ids == {f"s3://bucket/asset-{i % 100}": i % 100} for i, p in enumerate(probes))
        assert upstream.requests["/api/v2/assets"] == lookups

    @pytest.mark.parametrize("version", ["3.3.2", "3.1.8"])
    async def test_dags_without_a_common_prefix_are_found_by_their_ids_from_3_2(self, version):
        upstream = MemoryUpstream(api="v2", version=version)
        upstream.dags |= {f"team_{i}_load" for i in range(3000)}
        wanted = [f"team_{i}_load" for i in range(0, 3000, 300)] + ["billing", "crm"]
        upstream.dags |= {"billing", "crm"}
        client = memory_client(upstream)
        found = await client.find_dags(wanted)
        if version == "3.3.2":
            assert set(found) == set(wanted) and upstream.requests["/api/v2/dags"] == 1
        else:  # no common prefix, no alternatives: the listing is longer than the ids are worth (GETs follow)
            assert upstream.requests["/api/v2/dags"] == 1 and len(found) < len(wanted)
