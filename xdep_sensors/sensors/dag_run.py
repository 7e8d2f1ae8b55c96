"""``RemoteDagRunSensor``: wait for a DAG run (or some of its tasks) in another deployment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

from xdep_sensors.core.decisions import DAG_RUN_STATES, TASK_STATES
from xdep_sensors.core.probes import DagRunProbe, DagRunWait
from xdep_sensors.links import UpstreamRunLink
from xdep_sensors.triggers.task_args import dag_run_wait

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context

    from xdep_sensors.triggers.waits import Probe


from xdep_sensors.sensors.base import _RemoteSensor, _state_list


class RemoteDagRunSensor(_RemoteSensor):
    """
    Waits until a DAG run in another Airflow deployment (or some of its tasks) reaches an allowed state.

    Which upstream run: at most one of ``run_id``, ``logical_date`` (or ``execution_delta`` /
    ``logical_date_fn``), ``latest_after``, ``partition_key``; by default the run with this run's logical
    date (its ``run_after`` when it has none).

    :param external_dag_id: the upstream DAG id (templated).
    :param str remote_conn_id: connection of type ``remote_airflow`` to the upstream (templated; default
        ``remote_airflow_default``).
    :param run_id: wait for exactly this upstream run (templated).
    :param logical_date: wait for the upstream run with this logical date (templated).
    :param execution_delta: subtracted from this run's logical date to get the upstream's.
    :param logical_date_fn: callable of the context returning the upstream logical date.
    :param latest_after: wait for the newest upstream run whose ``run_after`` >= this (templated).
    :param partition_key: wait for the newest upstream run (by ``run_after``) of this partition, matched
        exactly (templated, e.g. ``"{{ dag_run.partition_key }}"``; the upstream must run Airflow 3.2+).
    :param allowed_states: states that complete the wait (default ``["success"]``).
    :param failed_states: states that fail the sensor at once (default ``["failed"]``).
    :param skipped_states: states that skip the sensor at once (default none).
    :param task_ids: wait for these upstream tasks instead of the whole run (templated).
    :param task_group_id: wait for the tasks of this upstream task group (templated).
    :param check_existence: fail fast when the DAG or tasks do not exist upstream (default True).
    :param bool deferrable: wait in the triggerer (default True); otherwise poke/reschedule.
    :param bool start_from_trigger: the scheduler hands the task straight to the triggerer, no worker run
        (Airflow 3.3+; below, a warning and the task starts on a worker).
    :param bool end_from_trigger: the trigger ends the task (success, failure, skip) instead of resuming it
        on a worker; a timeout, and a failure Airflow would retry differently, still resume on one.
    """

    template_fields: Sequence[str] = (
        "external_dag_id",
        "remote_conn_id",
        "run_id",
        "logical_date",
        "latest_after",
        "partition_key",
        "task_ids",
        "task_group_id",
    )
    ui_color = "#e8f0fe"
    operator_extra_links = (UpstreamRunLink(),)

    def __init__(
        self,
        *,
        external_dag_id: str,
        run_id: str | None = None,
        logical_date: str | datetime | None = None,
        execution_delta: timedelta | None = None,
        logical_date_fn: Callable[[Context], datetime] | None = None,
        latest_after: str | datetime | None = None,
        partition_key: str | None = None,
        allowed_states: list[str] | None = None,
        failed_states: list[str] | None = None,
        skipped_states: list[str] | None = None,
        task_ids: list[str] | str | None = None,
        task_group_id: str | None = None,
        check_existence: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(external_dag_id, str) or not external_dag_id.strip():
            raise ValueError(f"external_dag_id must be a non-empty string, got {external_dag_id!r}")
        _check_selectors(run_id, logical_date, execution_delta, logical_date_fn, latest_after, partition_key)
        task_ids = _task_ids(task_ids, task_group_id)
        states = _states(
            allowed_states, failed_states, skipped_states, narrowed=bool(task_ids or task_group_id)
        )
        self.external_dag_id = external_dag_id
        self.run_id = run_id
        self.logical_date = logical_date
        self.execution_delta = execution_delta
        self.logical_date_fn = logical_date_fn
        self.latest_after = latest_after
        self.partition_key = partition_key
        self.allowed_states = states["allowed_states"]
        self.failed_states = states["failed_states"]
        self.skipped_states = states["skipped_states"]
        self.task_ids = task_ids
        self.task_group_id = task_group_id
        self.check_existence = check_existence
        if self.start_from_trigger and logical_date_fn is not None:
            raise ValueError(
                "logical_date_fn cannot travel to the triggerer (start_from_trigger=True): give "
                'logical_date as a template, e.g. "{{ logical_date - macros.timedelta(hours=1) }}", '
                "or execution_delta"
            )
        self._finish_init(self._task_args())

    def _task_args(self) -> dict[str, Any]:
        """The arguments that decide which run (``execution_delta`` in seconds: they travel as JSON)."""
        return {
            "external_dag_id": self.external_dag_id,
            "run_id": self.run_id,
            "logical_date": self.logical_date,
            "latest_after": self.latest_after,
            "partition_key": self.partition_key,
            "execution_delta": self.execution_delta.total_seconds() if self.execution_delta else None,
            "allowed_states": self.allowed_states,
            "failed_states": self.failed_states,
            "skipped_states": self.skipped_states,
            "task_ids": self.task_ids,
            "task_group_id": self.task_group_id,
            "check_existence": self.check_existence,
        }

    def _watch(self, context: Context) -> DagRunWait:
        return dag_run_wait(self._task_args(), context, self.logical_date_fn)

    def make_probe(self, context: Context) -> Probe:
        # the task logger takes the stdlib logging calls a probe makes
        return DagRunProbe(self._watch(context), cast("logging.Logger", self.log))


def _check_selectors(
    run_id: Any,
    logical_date: Any,
    execution_delta: Any,
    logical_date_fn: Any,
    latest_after: Any,
    partition_key: Any,
) -> None:
    """At most one way of choosing the upstream run, each of the right type."""
    selectors = {
        "run_id": run_id,
        "logical_date": logical_date,
        "execution_delta": execution_delta,
        "logical_date_fn": logical_date_fn,
        "latest_after": latest_after,
        "partition_key": partition_key,
    }
    given = [name for name, value in selectors.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of {', '.join(selectors)}; got {' and '.join(given)}")
    if execution_delta is not None and not isinstance(execution_delta, timedelta):
        raise ValueError(f"execution_delta must be a datetime.timedelta, got {execution_delta!r}")
    if partition_key is not None and (not isinstance(partition_key, str) or not partition_key.strip()):
        raise ValueError(f"partition_key must be a non-empty string (or a template), got {partition_key!r}")
    if logical_date_fn is not None and not callable(logical_date_fn):
        raise ValueError("logical_date_fn must be a callable taking the context")


def _task_ids(task_ids: list[str] | str | None, task_group_id: str | None) -> list[str] | None:
    """``task_ids`` as a list (one id may be given as a string), checked against ``task_group_id``."""
    if task_ids is not None and task_group_id is not None:
        raise ValueError("give task_ids or task_group_id, not both")
    if isinstance(task_ids, str):
        task_ids = [task_ids]
    if task_ids is not None and (not task_ids or not all(isinstance(t, str) and t for t in task_ids)):
        raise ValueError(f"task_ids must be a non-empty list of task ids, got {task_ids!r}")
    return task_ids


def _states(
    allowed_states: list[str] | None,
    failed_states: list[str] | None,
    skipped_states: list[str] | None,
    *,
    narrowed: bool,
) -> dict[str, list[str]]:
    """The three state lists (task states when narrowed to tasks), with their defaults; none overlap."""
    known = TASK_STATES if narrowed else DAG_RUN_STATES
    states = {
        "allowed_states": _state_list(
            "allowed_states", ["success"] if allowed_states is None else allowed_states, known
        ),
        "failed_states": _state_list(
            "failed_states", ["failed"] if failed_states is None else failed_states, known
        ),
        "skipped_states": _state_list("skipped_states", skipped_states, known),
    }
    if not states["allowed_states"]:
        raise ValueError("allowed_states must name at least one state")
    names = list(states)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap = sorted(set(states[a]) & set(states[b]))
            if overlap:
                raise ValueError(f"{a} and {b} overlap: {overlap}")
    return states
