"""DAG-run waits in a shared poll read what changed upstream: cost bounded by new runs, never by history.

The upstream is ``devtools.memory_upstream`` (the REST listings' filters, ordering and paging), so
requests are counted exactly; the same cases run against real Airflow in
``tests/integration/test_feed_live.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

from devtools.memory_upstream import MemoryUpstream
from tests.helpers import calls, memory_client, sleep_patched
from xdep_sensors.client import ClientConfig
from xdep_sensors.core import pacing
from xdep_sensors.core import poller as polling
from xdep_sensors.core.needs import RunNeedKind
from xdep_sensors.core.probes import DagRunProbe, DagRunWait

NOW = datetime.now(timezone.utc).replace(microsecond=0)
HISTORY = 5200
DAG = "busy"
MAX_CYCLES = 50  # a test whose wait never ends fails here instead of polling forever


@pytest.fixture(params=["v2", "v1"])
def upstream(request) -> MemoryUpstream:
    """5,200 finished runs of one DAG, 30 s apart, the newest ending now."""
    up = MemoryUpstream(api=request.param)
    for i in range(HISTORY):
        end = NOW - timedelta(seconds=30 * (HISTORY - 1 - i))
        up.put_run(
            DAG,
            f"ok_{i}",
            "success",
            logical_date=end - timedelta(minutes=1),
            start=end - timedelta(seconds=20),
            end=end,
        )
    return up


def oldest_logical_date() -> datetime:
    return NOW - timedelta(seconds=30 * (HISTORY - 1)) - timedelta(minutes=1)


class Poll:
    """One shared poll over the memory upstream; ``on_cycle(n)`` runs after cycle n, before the next."""

    def __init__(self, upstream: MemoryUpstream, on_cycle=None):
        self.upstream = upstream
        self.on_cycle = on_cycle or (lambda n: None)
        self.per_cycle: list[int] = []
        config = ClientConfig("http://mem.test", password="t", api_version=upstream.api, conn_id="mem")
        self.poller = polling.SharedPoller(config, 5.0, on_empty=lambda: None)

    async def outcomes(self, probe, until, others=()):
        """Outcomes handed to ``probe``'s wait until ``until(decision)`` holds; counts requests per cycle.

        ``others`` wait in the same poll meanwhile.
        """

        async def sleep(seconds, *args, **kwargs):
            self.per_cycle.append(calls(self.upstream) - sum(self.per_cycle))
            self.on_cycle(len(self.per_cycle))
            await asyncio.sleep(0)  # the real one: only the poll's pauses are patched

        seen = []
        with (
            mock.patch.object(
                polling, "RemoteAirflowClient", lambda config: memory_client(self.upstream, config)
            ),
            sleep_patched(sleep, pacing),
        ):
            async with contextlib.AsyncExitStack() as stack:
                for other in others:
                    await stack.enter_async_context(self.poller.subscribe(other))
                sub = await stack.enter_async_context(self.poller.subscribe(probe, every_look=True))
                while len(self.per_cycle) < MAX_CYCLES:
                    outcome = await asyncio.wait_for(sub.get(), 10)
                    if isinstance(outcome, Exception):
                        raise outcome
                    seen.append(outcome)
                    if until(outcome):
                        return seen
        raise AssertionError(
            f"no outcome met the condition in {MAX_CYCLES} cycles: {[d.message for d in seen[-3:]]}"
        )


class TestOldRun:
    async def test_an_old_run_is_found_at_the_first_look(self, upstream):
        """The reported case: the wait's run is the 5,200th newest; it fired never (703 requests, then
        timeout)."""
        watch = DagRunWait(DAG, logical_date=oldest_logical_date().isoformat())
        poll = Poll(upstream)
        seen = await poll.outcomes(DagRunProbe(watch), until=lambda d: d.done)
        assert len(seen) == 1 and seen[0].status == "success" and seen[0].result["run_id"] == "ok_0"
        assert calls(upstream) <= 10, upstream.requests

    @pytest.mark.parametrize("selector", ["run_id", "latest_after"])
    async def test_other_selectors_too(self, upstream, selector):
        if selector == "run_id":
            watch, expected = DagRunWait(DAG, run_id="ok_3"), "ok_3"
        else:  # the newest run at or after a bound: here the newest of all
            watch, expected = (
                DagRunWait(DAG, latest_after=oldest_logical_date().isoformat()),
                f"ok_{HISTORY - 1}",
            )
        seen = await Poll(upstream).outcomes(DagRunProbe(watch), until=lambda d: d.done)
        assert len(seen) == 1 and seen[0].result["run_id"] == expected
        assert calls(upstream) <= 10, upstream.requests


class TestMissingRun:
    @pytest.mark.parametrize("start_at", [1, 6], ids=["before-the-change-feeds-start", "later"])
    async def test_a_bound_before_the_history_costs_little_and_a_backfill_fires_within_two_polls(
        self, upstream, start_at
    ):
        """A run that does not exist yet, whose logical date lies before 5,200 runs: then it is backfilled.

        Started right after the first look (before the change feeds read anything), or later.
        """
        wanted = NOW - timedelta(days=30)
        marks: dict[str, int] = {}

        def on_cycle(n):
            if n == start_at:  # the backfill starts: a run with an old logical date, started now
                upstream.put_run(
                    DAG,
                    "backfill_1",
                    "running",
                    logical_date=wanted,
                    run_after=wanted,
                    start=datetime.now(timezone.utc),
                )
                marks["started"] = n
            if n == start_at + 3:
                upstream.put_run(
                    DAG,
                    "backfill_1",
                    "success",
                    logical_date=wanted,
                    run_after=wanted,
                    start=datetime.now(timezone.utc) - timedelta(seconds=1),
                    end=datetime.now(timezone.utc),
                )
                marks["ended"] = n

        poll = Poll(upstream, on_cycle)
        seen = await poll.outcomes(
            DagRunProbe(DagRunWait(DAG, logical_date=wanted.isoformat())), until=lambda d: d.done
        )
        waiting = [d for d in seen if d.status == "waiting"]
        running = [i for i, d in enumerate(seen) if "backfill_1: running" in d.message]
        assert waiting[0].message.endswith("no run for logical date " + wanted.isoformat() + " yet")
        # every look is one outcome (every_look): outcome i comes from cycle i + 1
        assert running and running[0] + 1 - marks["started"] <= 2, [d.message for d in seen]
        assert seen[-1].status == "success" and len(seen) - marks["ended"] <= 2
        # after the first look, a poll reads what started and what ended since the previous one
        assert max(poll.per_cycle[1:]) <= 3, poll.per_cycle

    async def test_many_waits_on_many_dags_share_two_requests_a_poll(self, upstream):
        """100 waits for runs that do not exist yet, each on its own DAG: the poll's cost does not grow
        with them."""
        for i in range(100):
            upstream.dags.add(f"dag_{i}")
        others = [DagRunProbe(DagRunWait(f"dag_{i}", run_id=f"manual__{i}")) for i in range(100) if i != 7]

        def on_cycle(n):
            if n == 5:  # a run that starts and ends now (NOW is when the module was imported)
                now = datetime.now(timezone.utc)
                upstream.put_run("dag_7", "manual__7", "success", logical_date=now, start=now, end=now)

        poll = Poll(upstream, on_cycle)
        seen = await poll.outcomes(
            DagRunProbe(DagRunWait("dag_7", run_id="manual__7")), until=lambda d: d.done, others=others
        )
        assert seen[-1].result["run_id"] == "manual__7" and len(seen) - 5 <= 2
        # the first look: the change feeds start (2 requests each), a DAG listing, one page of newest runs,
        # one exact lookup per run id the page does not show; then two requests a poll, whatever the waits
        assert poll.per_cycle[0] <= 4 + 1 + 1 + 100 and max(poll.per_cycle[1:]) <= 2, poll.per_cycle


class TestQueuedState:
    async def test_a_wait_decided_by_queued_asks_exactly_every_poll(self, upstream):
        """A queued run has no start date, so no change feed lists it: such a wait asks for its run itself."""
        watch = DagRunWait(DAG, run_id="manual_q", allowed_states=["queued"])
        probe = DagRunProbe(watch)

        def on_cycle(n):
            if n == 3:
                upstream.put_run(DAG, "manual_q", "queued", logical_date=datetime.now(timezone.utc))

        poll = Poll(upstream, on_cycle)
        seen = await poll.outcomes(probe, until=lambda d: d.done)
        assert probe.need().kind is RunNeedKind.EXACT
        assert seen[-1].status == "success" and seen[-1].result["state"] == "queued"
        assert len(seen) - 3 <= 1, [d.message for d in seen]  # the first poll after the run appeared
