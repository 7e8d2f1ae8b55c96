"""Worker-free waits: ``start_from_trigger`` / ``end_from_trigger`` on both sensors.

What the trigger yields for each outcome (a task-end event, or the payload back to a worker when
Airflow would treat the outcome differently there), what the sensors hand the scheduler to start in
the triggerer, and what is refused at parse time. Proven on real deployments of every Airflow 3
minor by tests/integration/test_versions_downstream.py (``test_worker_free_*``).
"""

from __future__ import annotations

import json
import logging
import warnings
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk import Asset
from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.triggers import RemoteAssetTrigger, RemoteDagRunTrigger
from xdep_sensors.triggers import state as durable
from xdep_sensors.triggers import waits as triggers_module

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
URL = "http://up.test:8080/dags/producer/runs/r1"
RUN_RESULT = {"run_id": "r1", "state": "success", "url": URL}


def dag_run_trigger(**kwargs):
    kwargs.setdefault("external_dag_id", "producer")
    return RemoteDagRunTrigger(remote_conn_id="upstream", run_id="r1", **kwargs)


@pytest.fixture
def airflow_at(monkeypatch):
    def at(*version):
        monkeypatch.setattr(triggers_module, "airflow_version", lambda: version)

    return at


class TestTheTriggerEndsTheTask:
    async def test_success_carries_the_xcom_return_value_and_the_link(self):
        event = await dag_run_trigger(end_from_trigger=True)._end(
            {"status": "success", "message": "producer run r1: success", "result": RUN_RESULT}
        )
        assert isinstance(event, TaskSuccessEvent)
        assert event.xcoms == {"return_value": RUN_RESULT, "_link_UpstreamRunLink": URL}

    async def test_without_end_from_trigger_every_outcome_resumes_on_a_worker(self):
        for status in ("success", "failed", "skipped", "error", "timeout"):
            event = await dag_run_trigger()._end({"status": status, "message": "m", "result": RUN_RESULT})
            assert type(event) is TriggerEvent and event.payload["status"] == status

    async def test_a_timeout_resumes_on_a_worker(self):
        event = await dag_run_trigger(end_from_trigger=True)._end({"status": "timeout", "message": "late"})
        assert type(event) is TriggerEvent

    async def test_skipped_states_skip(self):
        event = await dag_run_trigger(end_from_trigger=True)._end({"status": "skipped", "message": "m"})
        assert isinstance(event, TaskSkippedEvent)

    @pytest.mark.parametrize("status", ["failed", "error"])
    async def test_a_failure_with_soft_fail_skips(self, status):
        event = await dag_run_trigger(end_from_trigger=True, soft_fail=True, retries=3)._end(
            {"status": status, "message": "m"}
        )
        assert isinstance(event, TaskSkippedEvent)

    @pytest.mark.parametrize("version", [(3, 0, 6), (3, 3, 2)])
    async def test_a_failure_without_retries_fails_here_and_logs_the_workers_message(
        self, airflow_at, version, caplog
    ):
        airflow_at(*version)
        trigger = dag_run_trigger(end_from_trigger=True)
        trigger._log = logging.getLogger("test.xdep.worker_free")  # a plain logger caplog sees
        with caplog.at_level("ERROR", logger="test.xdep.worker_free"):
            event = await trigger._end(
                {
                    "status": "failed",
                    "message": "producer run r1: failed",
                    "result": {**RUN_RESULT, "state": "failed"},
                }
            )
        assert isinstance(event, TaskFailedEvent)
        assert f"upstream failed: producer run r1: failed ({URL})" in caplog.text

    @pytest.mark.parametrize(
        ("version", "status", "ends_here"),
        [
            # failed_states fail without retry on a worker: Airflow 3.3 would retry a TaskFailedEvent
            ((3, 3, 2), "failed", False),
            ((3, 2, 2), "failed", True),
            # an error (wrong token, unknown DAG) is retried on a worker: Airflow below 3.3 would not retry it
            ((3, 3, 2), "error", True),
            ((3, 2, 2), "error", False),
        ],
    )
    async def test_with_retries_a_failure_ends_where_it_is_retried_as_on_a_worker(
        self, airflow_at, version, status, ends_here
    ):
        airflow_at(*version)
        event = await dag_run_trigger(end_from_trigger=True, retries=2)._end(
            {"status": status, "message": "m"}
        )
        assert isinstance(event, TaskFailedEvent) if ends_here else type(event) is TriggerEvent

    def test_serialized_kwargs_recreate_the_trigger(self):
        trigger = dag_run_trigger(end_from_trigger=True, soft_fail=True, retries=1, poke_interval=5)
        path, kwargs = trigger.serialize()
        again = RemoteDagRunTrigger(**kwargs)
        assert again.serialize() == (path, kwargs)
        assert (kwargs["end_from_trigger"], kwargs["soft_fail"], kwargs["retries"]) == (True, True, 1)

    def test_without_end_from_trigger_the_kwargs_are_those_of_earlier_versions(self):
        _, kwargs = dag_run_trigger().serialize()
        assert not {"end_from_trigger", "soft_fail", "retries", "from_task"} & set(kwargs)


class TestAssetSuccessInTheTrigger:
    async def test_the_cursor_is_committed_then_the_events_are_the_return_value(self, monkeypatch):
        stored = {}
        monkeypatch.setattr(durable, "_variable_get", lambda key: stored.get(key))
        monkeypatch.setattr(
            durable, "_variable_set", lambda key, value, description="": stored.update({key: value})
        )
        trigger = RemoteAssetTrigger(
            remote_conn_id="upstream", assets=[{"uri": "s3://a", "name": None}], end_from_trigger=True
        )
        trigger.task_instance = SimpleNamespace(dag_id="down", task_id="wait", run_id="run1")
        events = [{"id": 7, "uri": "s3://a", "timestamp": T0.isoformat()}]
        cursors = {"s3://a": {"timestamp": T0.isoformat(), "seen_ids": [7]}}
        event = await trigger._end(
            {
                "status": "success",
                "message": "1 of 1",
                "result": {
                    "events": events,
                    "started_from": {"s3://a": {"timestamp": None}},
                    "cursors": cursors,
                },
            }
        )
        assert isinstance(event, TaskSuccessEvent) and event.xcoms == {"return_value": events}
        store = durable.CursorStore("down", "wait")
        assert store.start("run2") == cursors  # the next run starts after these events
        assert store.start("run1") == {
            "s3://a": {"timestamp": None}
        }  # a re-run of this one consumes them again

    async def test_a_success_event_lost_after_the_commit_costs_no_event(self, monkeypatch):
        """The cursor is stored before the success event; if that event is lost (the triggerer dies in
        between), Airflow runs the trigger again: it starts where this run's first try started, finds
        the same events, and commits the same cursor again. The next run starts after them, once."""
        stored = {}
        monkeypatch.setattr(durable, "_variable_get", lambda key: stored.get(key))
        monkeypatch.setattr(
            durable, "_variable_set", lambda key, value, description="": stored.update({key: value})
        )
        sensor = RemoteAssetSensor(
            task_id="wait",
            remote_conn_id="up",
            asset_uri="s3://a",
            start_from_trigger=True,
            end_from_trigger=True,
        )
        events = [{"id": 7, "uri": "s3://a", "timestamp": (T0 + timedelta(minutes=1)).isoformat()}]
        consumed = {"s3://a": {"timestamp": events[0]["timestamp"], "seen_ids": [7]}}

        async def one_try():
            trigger = RemoteAssetTrigger(**sensor.start_trigger_args.trigger_kwargs)
            trigger.task_instance = SimpleNamespace(
                dag_id="down", task_id="wait", run_id="run1", get_template_context=_rendered_context
            )
            await trigger._start_from_task()
            started_from = trigger.watch.cursors
            event = await trigger._end(
                {
                    "status": "success",
                    "message": "1 of 1",
                    "result": {"events": events, "started_from": started_from, "cursors": consumed},
                }
            )
            return started_from, event, json.dumps(stored, sort_keys=True)

        first_start, _lost, after_first = await one_try()
        assert first_start == {"s3://a": {"timestamp": T0.isoformat()}}  # the run's data interval start
        again_start, event, after_again = await one_try()
        assert again_start == first_start and after_again == after_first
        assert isinstance(event, TaskSuccessEvent) and event.xcoms == {"return_value": events}
        assert durable.CursorStore("down", "wait").start("run2") == consumed

    async def test_a_cursor_that_cannot_be_stored_hands_the_success_to_a_worker(self, monkeypatch):
        def refuse(*args, **kwargs):
            raise RuntimeError("the API server is away")

        monkeypatch.setattr(durable, "_variable_get", refuse)
        trigger = RemoteAssetTrigger(
            remote_conn_id="upstream", assets=[{"uri": "s3://a", "name": None}], end_from_trigger=True
        )
        trigger.task_instance = SimpleNamespace(dag_id="down", task_id="wait", run_id="run1")
        payload = {
            "status": "success",
            "message": "m",
            "result": {"events": [], "started_from": {}, "cursors": {}},
        }
        event = await trigger._end(payload)
        assert type(event) is TriggerEvent and event.payload == payload


def _rendered_context():
    ti = SimpleNamespace(dag_id="down", task_id="wait", run_id="run1")
    return {
        "logical_date": T0,
        "dag_run": SimpleNamespace(run_after=T0),
        "ti": ti,
        "run_id": "run1",
        "data_interval_start": T0,
    }


class TestStartFromTrigger:
    def test_the_sensor_hands_its_arguments_to_the_scheduler(self):
        sensor = RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id="up",
            external_dag_id="{{ params.up }}",
            execution_delta=timedelta(hours=1),
            timeout=600,
            poke_interval=5,
            start_from_trigger=True,
            end_from_trigger=True,
            retries=2,
        )
        args = sensor.start_trigger_args
        assert args.trigger_cls == "xdep_sensors.triggers.RemoteDagRunTrigger"
        assert (args.next_method, args.timeout) == ("execute_complete", timedelta(seconds=660))
        kwargs = args.trigger_kwargs
        assert kwargs["external_dag_id"] == "{{ params.up }}"  # rendered in the triggerer
        assert (kwargs["from_task"], kwargs["end_from_trigger"], kwargs["retries"]) == (True, True, 2)
        assert kwargs["execution_delta"] == 3600.0
        json.dumps(kwargs)  # plain JSON: it travels in the serialized DAG
        RemoteDagRunTrigger(**kwargs)  # and builds the trigger

    async def test_the_trigger_builds_the_same_watch_as_the_worker(self):
        sensor = RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id="up",
            external_dag_id="producer",
            execution_delta=timedelta(hours=1),
            task_ids=["load"],
            start_from_trigger=True,
        )
        trigger = RemoteDagRunTrigger(**sensor.start_trigger_args.trigger_kwargs)
        trigger.task_instance = SimpleNamespace(task_id="wait", get_template_context=_rendered_context)
        await trigger._start_from_task()
        assert trigger.watch == sensor._watch(_rendered_context())
        assert trigger.watch.logical_date == (T0 - timedelta(hours=1)).isoformat()

    async def test_the_deadline_is_airflows_less_its_safety_margin(self):
        sensor = RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id="up",
            external_dag_id="producer",
            run_id="r1",
            start_from_trigger=True,
        )
        trigger = RemoteDagRunTrigger(**sensor.start_trigger_args.trigger_kwargs)
        trigger.task_instance = SimpleNamespace(task_id="wait", get_template_context=_rendered_context)
        trigger.timeout_after = T0 + timedelta(seconds=660)
        await trigger._start_from_task()
        assert trigger.timeout_at == (T0 + timedelta(seconds=600)).timestamp()

    async def test_the_asset_trigger_reads_the_tasks_cursor(self, monkeypatch):
        cursor = {"timestamp": T0.isoformat(), "seen_ids": [3]}
        stored = {durable.CursorStore("down", "wait").key: {"cursors": {"s3://a": cursor}, "runs": {}}}
        monkeypatch.setattr(durable, "_variable_get", lambda key: stored.get(key))
        sensor = RemoteAssetSensor(
            task_id="wait", remote_conn_id="up", asset_uri="s3://a", start_from_trigger=True
        )
        trigger = RemoteAssetTrigger(**sensor.start_trigger_args.trigger_kwargs)
        trigger.task_instance = SimpleNamespace(task_id="wait", get_template_context=_rendered_context)
        await trigger._start_from_task()
        assert trigger.watch.cursors == {"s3://a": cursor}

    async def test_a_rendered_argument_that_is_no_date_ends_the_wait_with_its_name(self):
        sensor = RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id="up",
            external_dag_id="producer",
            logical_date="{{ params.day }}",
            start_from_trigger=True,
        )
        trigger = RemoteDagRunTrigger(**sensor.start_trigger_args.trigger_kwargs)
        trigger.task_instance = SimpleNamespace(task_id="wait", get_template_context=_rendered_context)
        trigger.logical_date = "next tuesday"  # as the triggerer rendered it
        event = await trigger.run().__anext__()
        assert event.payload["status"] == "error"
        assert event.payload["message"] == "logical_date='next tuesday' is not an ISO-8601 datetime"

    def test_below_airflow_3_3_the_task_starts_on_a_worker_with_a_warning(self, monkeypatch):
        monkeypatch.setattr("xdep_sensors.sensors.base.airflow_version", lambda: (3, 1, 8))
        with pytest.warns(
            UserWarning, match=r"start_from_trigger=True needs Airflow 3\.3\+ \(this is 3\.1\.8\)"
        ):
            sensor = RemoteDagRunSensor(
                task_id="wait",
                remote_conn_id="up",
                external_dag_id="producer",
                start_from_trigger=True,
                end_from_trigger=True,
            )
        assert (sensor.start_from_trigger, sensor.start_trigger_args, sensor.end_from_trigger) == (
            False,
            None,
            True,
        )

    def test_the_serialized_dag_keeps_it(self):
        from airflow.sdk import DAG
        from airflow.serialization.serialized_objects import DagSerialization

        with DAG("down", schedule=None, start_date=T0) as dag:
            RemoteDagRunSensor(
                task_id="wait",
                remote_conn_id="up",
                external_dag_id="{{ params.up }}",
                start_from_trigger=True,
                end_from_trigger=True,
            )
        task = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("wait")
        assert task.start_from_trigger is True
        kwargs = task.start_trigger_args.trigger_kwargs
        kwargs = kwargs.get("__var", kwargs)  # BaseSerialization-encoded in some versions
        assert kwargs["external_dag_id"] == "{{ params.up }}"


class TestRefusedAtParseTime:
    @pytest.mark.parametrize("flag", ["start_from_trigger", "end_from_trigger"])
    def test_needs_deferrable(self, flag):
        with pytest.raises(ValueError, match=rf"^{flag}=True needs deferrable=True"):
            RemoteDagRunSensor(task_id="w", external_dag_id="p", deferrable=False, **{flag: True})

    @pytest.mark.parametrize("flag", ["start_from_trigger", "end_from_trigger"])
    def test_must_be_a_bool(self, flag):
        with pytest.raises(ValueError, match=rf"^{flag} must be True or False"):
            RemoteAssetSensor(task_id="w", asset_uri="s3://a", **{flag: "yes"})

    def test_a_callable_cannot_travel_to_the_triggerer(self):
        with pytest.raises(ValueError, match=r"^logical_date_fn cannot travel to the triggerer"):
            RemoteDagRunSensor(
                task_id="w", external_dag_id="p", logical_date_fn=lambda ctx: T0, start_from_trigger=True
            )

    def test_local_outlets_keep_the_end_on_a_worker(self):
        with pytest.warns(UserWarning, match="end_from_trigger is off"):
            sensor = RemoteAssetSensor(
                task_id="w", asset_uri="s3://a", outlets=[Asset("local://b")], end_from_trigger=True
            )
        assert sensor.end_from_trigger is False

    def test_off_by_default_and_no_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sensor = RemoteDagRunSensor(task_id="w", external_dag_id="p")
        assert (sensor.start_from_trigger, sensor.end_from_trigger, sensor.start_trigger_args) == (
            False,
            False,
            None,
        )


def test_execute_defers_with_the_ending_kwargs():
    from airflow.providers.common.compat.sdk import TaskDeferred

    sensor = RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up",
        external_dag_id="producer",
        run_id="r1",
        end_from_trigger=True,
        soft_fail=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": mock.MagicMock()})
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["end_from_trigger"], kwargs["soft_fail"], kwargs["retries"]) == (True, True, 0)
