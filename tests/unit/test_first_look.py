"""The first look of many new DAG-run waits: answered together per shared-poll cycle, counted in requests."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import datetime, timezone

import pytest
from yarl import URL

from tests.helpers import (
    SCHEDULED_RUN_ID,
    first_results,
    instant_sleep,
    scheduled_run_json,
    set_upstream_conn,
    upstream_mock,
)
from xdep_sensors.client import ClientConfig
from xdep_sensors.core import pacing, sources
from xdep_sensors.core import poller as polling
from xdep_sensors.core.needs import RunNeedKind
from xdep_sensors.core.probes import DagRunProbe, DagRunWait, run_id_date
from xdep_sensors.core.shared_reads import RunChanges
from xdep_sensors.errors import NotFound

BASE = "http://up.test:8080"
CONFIG = ClientConfig(base_url=BASE, password="t", api_version="v2", conn_id="up")
LIST = URL(BASE + "/api/v2/dags/~/dagRuns/list")
DAGS = re.compile(re.escape(BASE + "/api/v2/dags") + r"\?.*$")


def dag_json(dag_id):
    return {"dag_id": dag_id, "is_paused": False}


def mock_dag_listing(m, dag_ids):
    """``GET /api/v2/dags``, 100 per page, as many pages as the client asks for."""
    ids = sorted(dag_ids)
    for offset in range(0, len(ids), 100):
        m.get(
            DAGS,
            payload={"dags": [dag_json(d) for d in ids[offset : offset + 100]], "total_entries": len(ids)},
        )


def mock_run_batch(m, runs, total=None):
    total = len(runs) if total is None else total
    for offset in range(0, max(len(runs), 1), 100):
        m.post(str(LIST), payload={"dag_runs": runs[offset : offset + 100], "total_entries": total})


def requests_by_route(m):
    counts: dict[str, int] = {}
    for (method, url), calls in m.requests.items():
        path = url.path
        if path.endswith("/version"):
            continue
        route = (
            "dags listing"
            if path == "/api/v2/dags"
            else ("run batch" if path.endswith("/dagRuns/list") else f"{method} {path}")
        )
        counts[route] = counts.get(route, 0) + len(calls)
    return counts


class TestRunIdDate:
    @pytest.mark.parametrize(
        "run_id, expected",
        [
            ("scheduled__2026-11-20T00:00:00+00:00", datetime(2026, 11, 19, 23, 59, 59, tzinfo=timezone.utc)),
            (
                "manual__2026-11-20T10:11:12.123456+00:00_AbCdEf12",
                datetime(2026, 11, 20, 10, 11, 11, 123456, tzinfo=timezone.utc),
            ),
            ("backfill__2026-11-20T00:00:00", datetime(2026, 11, 19, 23, 59, 59, tzinfo=timezone.utc)),
            ("my-own-run", None),
            ("scheduled__not-a-date", None),
        ],
    )
    def test_lower_bound_from_airflow_run_ids(self, run_id, expected):
        assert run_id_date(run_id) == expected


class TestFirstLookCoalesced:
    async def test_a_thousand_new_waits_cost_a_handful_of_requests(self):
        dag_ids = [f"bench_dag_{i}" for i in range(1000)]
        probes = [DagRunProbe(DagRunWait(external_dag_id=d, run_id=SCHEDULED_RUN_ID)) for d in dag_ids]
        with upstream_mock() as m, instant_sleep(pacing):
            mock_dag_listing(m, dag_ids)
            mock_run_batch(m, [scheduled_run_json(d) for d in sorted(dag_ids)])
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
            counts = requests_by_route(m)
            batch = m.requests[("POST", LIST)][0].kwargs["json"]
            listing = next(calls for (method, url), calls in m.requests.items() if url.path == "/api/v2/dags")
        # 10 pages of the DAG listing + 10 pages of runs, instead of 1,000 + 1,000 single GETs
        assert counts == {"dags listing": 10, "run batch": 10}
        assert {r.status for r in results} == {"waiting"}
        assert all("running" in r.message for r in results)
        assert (
            dict(listing[0].kwargs["params"])["dag_id_pattern"] == "bench_dag_"
        )  # narrowed to the ids' common prefix
        assert batch["dag_ids"] == sorted(dag_ids)
        assert batch["run_after_gte"] == "2026-11-19T23:59:59+00:00"  # the run id's date bounds the batch
        # the next look needs no first look again: only the runs that ended since (each run is known)
        assert {p.need().kind for p in probes} == {RunNeedKind.ENDED_RUNS}

    async def test_waits_on_one_dag_check_it_once(self):
        probes = [
            DagRunProbe(
                DagRunWait(
                    external_dag_id="producer",
                    logical_date=f"2026-11-{d:02d}T00:00:00+00:00",
                    task_ids=["load"],
                )
            )
            for d in range(1, 21)
        ]
        with upstream_mock() as m, instant_sleep(pacing):
            m.get(BASE + "/api/v2/dags/producer", payload=dag_json("producer"))
            m.get(
                BASE + "/api/v2/dags/producer/tasks",
                payload={"tasks": [{"task_id": "load"}], "total_entries": 1},
            )
            mock_run_batch(m, [])
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
            counts = requests_by_route(m)
        assert counts == {
            "GET /api/v2/dags/producer": 1,
            "GET /api/v2/dags/producer/tasks": 1,
            "run batch": 1,
        }
        assert {r.status for r in results} == {"waiting"}

    async def test_missing_dag_fails_fast_with_close_matches_others_wait(self):
        dag_ids = [f"sales_{i}" for i in range(5)]
        probes = [DagRunProbe(DagRunWait(external_dag_id=d, run_id=SCHEDULED_RUN_ID)) for d in dag_ids]
        typo = DagRunProbe(DagRunWait(external_dag_id="sales_O", run_id=SCHEDULED_RUN_ID))  # of sales_0
        probes.append(typo)
        with upstream_mock() as m, instant_sleep(pacing):
            m.get(
                DAGS, payload={"dags": [dag_json(d) for d in dag_ids], "total_entries": 5}
            )  # the narrowed listing
            m.get(BASE + "/api/v2/dags/sales_O", status=404, payload={"detail": "not found"})
            m.get(
                DAGS, payload={"dags": [dag_json(d) for d in dag_ids], "total_entries": 5}
            )  # all DAGs, for hints
            mock_run_batch(m, [scheduled_run_json(d) for d in dag_ids])
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
            counts = requests_by_route(m)
        assert [r.status for r in results[:5]] == ["waiting"] * 5
        assert (
            isinstance(results[5], NotFound) and "sales_O" in str(results[5]) and "sales_0" in results[5].hint
        )
        assert counts == {"dags listing": 2, "GET /api/v2/dags/sales_O": 1, "run batch": 1}

    async def test_missing_dag_without_check_existence_keeps_waiting(self):
        probes = [
            DagRunProbe(
                DagRunWait(external_dag_id=f"later_{i}", run_id=SCHEDULED_RUN_ID, check_existence=False)
            )
            for i in range(3)
        ]
        with upstream_mock() as m, instant_sleep(pacing):
            m.get(DAGS, payload={"dags": [], "total_entries": 0})
            for i in range(3):
                m.get(BASE + f"/api/v2/dags/later_{i}", status=404, payload={"detail": "not found"})
            mock_run_batch(m, [])
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
        assert {r.status for r in results} == {"waiting"}
        assert all("not found upstream yet" in r.message for r in results)
        assert {p.need().kind for p in probes} == {RunNeedKind.FIRST_LOOK}  # still a first look next time

    async def test_long_listing_is_not_read_on(self):
        """A listing with more pages than new ids costs one page, then one GET per id."""
        probes = [
            DagRunProbe(DagRunWait(external_dag_id=d, run_id=SCHEDULED_RUN_ID)) for d in ("a_x", "b_y", "c_z")
        ]
        with upstream_mock() as m, instant_sleep(pacing):
            m.get(
                DAGS, payload={"dags": [dag_json(f"other_{i}") for i in range(100)], "total_entries": 10_000}
            )
            for d in ("a_x", "b_y", "c_z"):
                m.get(BASE + f"/api/v2/dags/{d}", payload=dag_json(d))
            mock_run_batch(m, [scheduled_run_json(d) for d in ("a_x", "b_y", "c_z")])
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
            counts = requests_by_route(m)
        assert {r.status for r in results} == {"waiting"}
        assert counts["dags listing"] == 1 and counts["run batch"] == 1
        assert sum(v for k, v in counts.items() if k.startswith("GET /api/v2/dags/")) == 3

    async def test_run_id_missing_from_the_batch_is_asked_alone_on_the_first_look_only(self):
        """A run id that only looks like Airflow's (its date is not its run's) is still found."""
        probes = [
            DagRunProbe(DagRunWait(external_dag_id=f"d_{i}", run_id="manual__2030-01-01T00:00:00+00:00"))
            for i in range(3)
        ]
        with upstream_mock() as m, instant_sleep(pacing):
            m.get(DAGS, payload={"dags": [dag_json(f"d_{i}") for i in range(3)], "total_entries": 3})
            mock_run_batch(m, [])
            m.get(
                BASE + "/api/v2/dags/d_0/dagRuns/manual__2030-01-01T00%3A00%3A00%2B00%3A00",
                payload=scheduled_run_json("d_0", run_id="manual__2030-01-01T00:00:00+00:00"),
            )
            for i in (1, 2):
                m.get(
                    BASE + f"/api/v2/dags/d_{i}/dagRuns/manual__2030-01-01T00%3A00%3A00%2B00%3A00",
                    status=404,
                    payload={"detail": "no run"},
                )
            results = await first_results(polling.POLLERS.get(CONFIG, 5), probes)
        assert "running" in results[0].message and "no run" in results[1].message
        assert (
            probes[0].need().kind is RunNeedKind.ENDED_RUNS
            and probes[1].need().kind is RunNeedKind.RUN_CHANGES
        )
        changes = RunChanges()
        changes.feeds = ()  # type: ignore[assignment]  # established in an earlier cycle
        source = sources.BatchSource(None, {}, changes, None, set())  # type: ignore[arg-type]
        source._memo[("run-changes",)] = done({})
        assert (
            await source.run_for(probes[1].watch, probes[1].need(), None) is None
        )  # later looks: the changes only


def done(value):
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class TestConnectionLookup:
    async def test_a_burst_of_triggers_reads_the_connection_once(self, monkeypatch):
        from unittest import mock

        from xdep_sensors.hooks import RemoteAirflowHook
        from xdep_sensors.hooks import remote_airflow as hook

        set_upstream_conn(monkeypatch, password="t")
        readings = iter([0.0] * 50 + [hook.CONFIG_TTL_S + 1] * 10)
        monkeypatch.setattr(hook, "_ttl_clock", lambda: next(readings))
        with mock.patch.object(
            RemoteAirflowHook, "aget_config", autospec=True, side_effect=RemoteAirflowHook.aget_config
        ) as resolve:
            configs = await asyncio.gather(
                *(RemoteAirflowHook("upstream").aget_shared_config() for _ in range(50))
            )
            assert resolve.await_count == 1 and len(set(configs)) == 1
            await RemoteAirflowHook("upstream").aget_shared_config()  # after the TTL: read again
            assert resolve.await_count == 2


class TestCycleSteps:
    async def test_steps_run_without_a_task_each_and_hand_the_loop_back(self, monkeypatch):
        """Steps answered without waiting run in a few workers, which pass the turn every ``YIELD_S``."""
        ticks = itertools.count()
        monkeypatch.setattr(polling, "_clock", lambda: next(ticks) * 0.005)  # each reading: 5 ms later

        steps = []

        class Instant:
            def unchanged(self, source):
                return None

            async def step(self, source):
                steps.append(1)
                return "seen"

        subs = [polling._Subscriber(Instant()) for _ in range(400)]
        turns = []

        async def other_work():
            while True:
                turns.append(len(steps))
                await asyncio.sleep(0)

        made = []
        loop = asyncio.get_running_loop()

        def counting_factory(loop, coro, **kwargs):
            made.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        bystander = asyncio.ensure_future(other_work())
        loop.set_task_factory(counting_factory)
        try:
            results = await polling.SharedPoller._step_all(subs, None)  # type: ignore[arg-type]
        finally:
            loop.set_task_factory(None)
            bystander.cancel()
        assert results == ["seen"] * 400
        assert len(made) <= polling.STEP_WORKERS  # a few workers, not a task per subscriber
        gaps = [b - a for a, b in zip(turns, turns[1:])]
        # other work ran every few steps: one turn's budget, plus one step for each other worker
        assert len(turns) >= 10 and max(gaps) <= polling.YIELD_S / 0.005 + polling.STEP_WORKERS + 2
