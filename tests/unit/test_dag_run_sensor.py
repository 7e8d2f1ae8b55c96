"""RemoteDagRunSensor and RemoteDagRunTrigger: validation, defer/complete paths, poke, serialization."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from yarl import URL

from tests.helpers import instant_sleep, sleep_patched, upstream_mock, url
from xdep_sensors import RemoteDagRunSensor
from xdep_sensors.client import session
from xdep_sensors.core import pacing
from xdep_sensors.triggers import RemoteDagRunTrigger

BASE = "http://up.test:8080"
TOKEN = "tok-UNIT-1234567890"
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
RUN = {
    "dag_run_id": "scheduled__2026-11-20",
    "dag_id": "producer",
    "state": "success",
    "logical_date": T0.isoformat(),
    "run_after": T0.isoformat(),
    "conf": {},
}


pytestmark = pytest.mark.usefixtures("remote_conn")


@pytest.fixture
def upstream_password():
    """Connection ``upstream``'s password: nothing a trigger stores or sends may contain it."""
    return TOKEN


def context(logical_date=T0, run_after=T0):
    ti = mock.MagicMock()
    return {"logical_date": logical_date, "dag_run": SimpleNamespace(run_after=run_after), "ti": ti}


def sensor(**kwargs):
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("external_dag_id", "producer")
    kwargs.setdefault("remote_conn_id", "upstream")
    return RemoteDagRunSensor(**kwargs)


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"run_id": "r", "logical_date": "2026-01-01T00:00:00+00:00"}, "run_id and logical_date"),
            ({"execution_delta": timedelta(1), "latest_after": "x"}, "execution_delta and latest_after"),
            (
                {"allowed_states": ["success"], "failed_states": ["success"]},
                "allowed_states and failed_states overlap",
            ),
            ({"skipped_states": ["failed"]}, "failed_states and skipped_states overlap"),
            ({"allowed_states": ["done"]}, "allowed_states has unknown state"),
            ({"allowed_states": "success"}, "allowed_states must be a list"),
            ({"allowed_states": []}, "allowed_states must name at least one"),
            ({"task_ids": ["a"], "task_group_id": "g"}, "task_ids or task_group_id"),
            ({"task_ids": []}, "task_ids must be a non-empty list"),
            ({"external_dag_id": ""}, "external_dag_id"),
            ({"remote_conn_id": ""}, "remote_conn_id"),
            ({"execution_delta": 5}, "execution_delta must be a datetime.timedelta"),
            ({"logical_date_fn": "nope"}, "logical_date_fn must be a callable"),
        ],
    )
    def test_rejected_at_parse_time(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            sensor(**kwargs)

    def test_task_states_allowed_when_narrowed(self):
        s = sensor(
            task_ids=["load"], allowed_states=["success", "skipped"], failed_states=["upstream_failed"]
        )
        assert s.allowed_states == ["success", "skipped"]
        with pytest.raises(ValueError, match="unknown state"):
            sensor(allowed_states=["upstream_failed"])  # not a DAG run state


class TestRunSelection:
    def watch(self, **kwargs):
        s = sensor(**kwargs)
        with pytest.raises(TaskDeferred) as info:
            s.execute(context())
        return info.value.trigger.watch

    def test_default_is_own_logical_date(self):
        assert self.watch().logical_date == T0.isoformat()

    def test_falls_back_to_run_after(self):
        s = sensor()
        with pytest.raises(TaskDeferred) as info:
            s.execute(context(logical_date=None, run_after=T0 + timedelta(hours=3)))
        assert info.value.trigger.watch.logical_date == (T0 + timedelta(hours=3)).isoformat()

    def test_execution_delta(self):
        assert (
            self.watch(execution_delta=timedelta(hours=1)).logical_date
            == (T0 - timedelta(hours=1)).isoformat()
        )

    def test_logical_date_fn(self):
        w = self.watch(logical_date_fn=lambda ctx: ctx["logical_date"] - timedelta(days=1))
        assert w.logical_date == (T0 - timedelta(days=1)).isoformat()

    def test_templated_strings_become_aware(self):
        assert self.watch(latest_after="2026-11-20T06:00:00").latest_after == "2026-11-20T06:00:00+00:00"
        assert self.watch(run_id="manual__1").run_id == "manual__1"


class TestDeferAndComplete:
    def test_defers_with_plain_kwargs_and_no_secret(self):
        s = sensor(run_id="r1", poke_interval=7, timeout=100)
        with pytest.raises(TaskDeferred) as info:
            s.execute(context())
        classpath, kwargs = info.value.trigger.serialize()
        assert (
            classpath == "xdep_sensors.triggers.RemoteDagRunTrigger"
            and info.value.method_name == "execute_complete"
        )
        assert kwargs["poke_interval"] == 7 and kwargs["remote_conn_id"] == "upstream"
        assert TOKEN not in json.dumps(kwargs)
        assert RemoteDagRunTrigger(**kwargs).serialize() == (classpath, kwargs)

    def test_complete_success_returns_run_and_pushes_link(self):
        ctx = context()
        result = {"run_id": "r1", "url": "http://up/dags/p/runs/r1"}
        assert (
            sensor().execute_complete(ctx, {"status": "success", "message": "m", "result": result}) == result
        )
        ctx["ti"].xcom_push.assert_called_once_with(
            key="_link_UpstreamRunLink", value="http://up/dags/p/runs/r1"
        )

    def test_complete_failed_names_run_and_link(self):
        with pytest.raises(AirflowFailException, match=r"producer run r1: failed.*http://up/r1"):
            sensor().execute_complete(
                context(),
                {"status": "failed", "message": "producer run r1: failed", "result": {"url": "http://up/r1"}},
            )

    def test_complete_skipped(self):
        with pytest.raises(AirflowSkipException):
            sensor().execute_complete(context(), {"status": "skipped", "message": "m", "result": None})

    def test_complete_timeout_and_error(self):
        with pytest.raises(AirflowSensorTimeout):
            sensor().execute_complete(context(), {"status": "timeout", "message": "late"})
        with pytest.raises(AirflowException, match="DAG 'x' does not exist"):
            sensor().execute_complete(context(), {"status": "error", "message": "DAG 'x' does not exist"})
        with pytest.raises(AirflowException, match="unexpected trigger event"):
            sensor().execute_complete(context(), {"status": "weird"})


class TestPoke:
    def test_poke_success_same_probe(self):
        s = sensor(run_id="r1", deferrable=False)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/producer"), payload={"dag_id": "producer", "is_paused": False})
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload={**RUN, "state": "running"})
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload=RUN)
            assert s.poke(context()) is False
            done = s.poke(context())
        assert done.is_done and done.xcom_value["state"] == "success"
        assert done.xcom_value["url"] == f"{BASE}/dags/producer/runs/scheduled__2026-11-20"

    def test_poke_transient_keeps_waiting(self):
        s = sensor(run_id="r1", deferrable=False)
        with upstream_mock() as m, sleep_patched(mock.AsyncMock(), session):
            m.get(url("/api/v2/dags/producer"), status=503, body="deploying", repeat=True)
            assert s.poke(context()) is False

    def test_poke_unknown_dag_fails_with_close_matches(self):
        s = sensor(external_dag_id="producr", deferrable=False)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/producr"), status=404, payload={"detail": "not found"})
            m.get(
                url("/api/v2/dags"),
                payload={"dags": [{"dag_id": "producer"}, {"dag_id": "other"}], "total_entries": 2},
            )
            with pytest.raises(AirflowException, match="close matches: producer"):
                s.poke(context())

    def test_missing_connection_is_clear(self):
        s = sensor(remote_conn_id="nope", deferrable=False)
        with pytest.raises(Exception, match="connection 'nope' does not exist"):
            s.poke(context())


class TestTrigger:
    async def test_waits_then_succeeds(self):
        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream", external_dag_id="producer", run_id="r1", poke_interval=5
        )
        with upstream_mock() as m, instant_sleep(pacing) as sleeps:
            m.get(url("/api/v2/dags/producer"), payload={"dag_id": "producer", "is_paused": True})
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), status=404, payload={"detail": "no run"})
            # the first look reads the newest runs (none), then the shared poll reads the runs that started
            # and that ended since then: r1 starts, then it ends
            now = datetime.now(timezone.utc)
            started = {**RUN, "dag_run_id": "r1", "state": "running", "start_date": now.isoformat()}
            ended = {**started, "state": "success", "end_date": (now + timedelta(seconds=1)).isoformat()}
            for answer in ([], [started], [], [ended]):  # the first look's page, started + ended, then ended
                m.post(
                    BASE + "/api/v2/dags/~/dagRuns/list",
                    payload={"dag_runs": answer, "total_entries": len(answer)},
                )
            event = await trigger.run().__anext__()
            bodies = [
                c.kwargs["json"] for c in m.requests[("POST", URL(BASE + "/api/v2/dags/~/dagRuns/list"))]
            ]
        assert event.payload["status"] == "success" and event.payload["result"]["run_id"] == "r1"
        # once r1 is known, only its end can decide: the runs that ended are all a poll reads
        assert [b["order_by"] for b in bodies] == ["-run_after", "start_date", "end_date", "end_date"]
        assert bodies[0]["dag_ids"] == ["producer"]  # the first look's page: only the waits' DAGs
        assert bodies[2]["states"] == bodies[3]["states"] == ["failed", "success"]
        assert (
            "start_date_gte" in bodies[1] and "end_date_gte" in bodies[2]
        )  # from the first look, not all history
        assert len(sleeps) >= 2 and set(sleeps) == {5.0}  # every look is followed by one poke_interval

    async def test_transient_errors_do_not_end_the_wait(self):
        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream", external_dag_id="producer", run_id="r1", poke_interval=5
        )
        with upstream_mock() as m, instant_sleep(pacing, session):
            m.get(url("/api/v2/dags/producer"), status=502, body="bad gateway", repeat=4)
            m.get(url("/api/v2/dags/producer"), payload={"dag_id": "producer"})
            m.post(
                BASE + "/api/v2/dags/~/dagRuns/list",
                payload={"dag_runs": [], "total_entries": 0},
                repeat=True,
            )
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload={**RUN, "state": "failed"})
            event = await trigger.run().__anext__()
        assert event.payload["status"] == "failed"

    async def test_enforces_its_own_deadline(self):
        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream",
            external_dag_id="producer",
            run_id="r1",
            poke_interval=5,
            timeout_at=0.0,
        )
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/producer"), payload={"dag_id": "producer"})
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload={**RUN, "state": "running"})
            event = await trigger.run().__anext__()
        assert event.payload["status"] == "timeout"

    async def test_auth_error_is_an_error_event_without_secret(self):
        trigger = RemoteDagRunTrigger(remote_conn_id="upstream", external_dag_id="producer", run_id="r1")
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/producer"), status=401, payload={"detail": "Invalid token"})
            event = await asyncio.wait_for(trigger.run().__anext__(), 10)
        assert event.payload["status"] == "error" and "authentication failed" in event.payload["message"]
        assert TOKEN not in json.dumps(event.payload)


class TestOwnPoll:
    async def test_own_loop_resolves_the_connection_once(self, monkeypatch):
        from xdep_sensors.core import poller as polling
        from xdep_sensors.hooks import RemoteAirflowHook

        monkeypatch.setattr(polling, "SHARED_POLLING", False)
        trigger = RemoteDagRunTrigger(
            remote_conn_id="upstream", external_dag_id="producer", run_id="r1", poke_interval=5
        )
        with (
            upstream_mock() as m,
            instant_sleep(pacing),
            mock.patch.object(
                RemoteAirflowHook, "aget_config", wraps=RemoteAirflowHook("upstream").aget_config
            ) as resolve,
        ):
            m.get(url("/api/v2/dags/producer"), payload={"dag_id": "producer"})
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload={**RUN, "state": "running"}, repeat=2)
            m.get(url("/api/v2/dags/producer/dagRuns/r1"), payload=RUN)
            event = await trigger.run().__anext__()
        assert event.payload["status"] == "success"
        assert resolve.await_count == 1  # not once per look
