"""The sensors: validate at parse time, then either defer to a trigger or poke through the same probe."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from xdep_sensors.client.dialects import parse_dt
from xdep_sensors.decisions import DAG_RUN_STATES, TASK_STATES
from xdep_sensors.errors import XdepError
from xdep_sensors.hook import RemoteAirflowHook
from xdep_sensors.links import UpstreamRunLink
from xdep_sensors.probes import DagRunProbe, DagRunWatch
from xdep_sensors.triggers import TRIGGER_EVENT_STATUSES, RemoteDagRunTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from xdep_sensors.triggers import Probe


def _state_list(name: str, value: Any, known: frozenset[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of state names, got {value!r}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{name} has unknown state(s) {unknown}; valid: {sorted(known)}")
    return list(value)


def _as_datetime(name: str, value: Any) -> datetime:
    try:
        parsed = value if isinstance(value, datetime) else parse_dt(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise AirflowException(f"{name}={value!r} is not an ISO-8601 datetime")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class _RemoteSensor(BaseSensorOperator):
    """What both sensors share: one probe, run in the triggerer (deferrable) or by ``poke``."""

    link_class: type[UpstreamRunLink] = UpstreamRunLink

    def __init__(self, *, remote_conn_id: str = RemoteAirflowHook.default_conn_name, deferrable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(remote_conn_id, str) or not remote_conn_id.strip():
            raise ValueError(f"remote_conn_id must be a connection id, got {remote_conn_id!r}")
        if not isinstance(deferrable, bool):
            raise ValueError(f"deferrable must be True or False, got {deferrable!r}")
        self.remote_conn_id = remote_conn_id
        self.deferrable = deferrable
        self._probe: Probe | None = None

    # subclasses ------------------------------------------------------------------------------

    def make_probe(self, context: Context) -> Probe:
        raise NotImplementedError

    def make_trigger(self, context: Context, timeout_at: float) -> BaseTrigger:
        raise NotImplementedError

    def on_success(self, context: Context, result: Any) -> Any:
        return result

    # both paths ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        timeout_at = time.time() + float(self.timeout)
        self.defer(
            trigger=self.make_trigger(context, timeout_at),
            method_name="execute_complete",
            # the trigger reports its own, clearer, timeout first; this is only a safety net
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        if self._probe is None:
            self._probe = self.make_probe(context)
        try:
            decision = RemoteAirflowHook(self.remote_conn_id).run(self._probe)
        except XdepError as err:
            if err.transient:
                self.log.warning("upstream trouble, looking again later: %s", err)
                return False
            raise AirflowException(str(err)) from None
        self.log.info("%s", decision.message)
        if not decision.done:
            return False
        return PokeReturnValue(True, self._finish(context, decision.status, decision.message, decision.result))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Turn the trigger's event into the task's outcome."""
        status = (event or {}).get("status")
        if status not in TRIGGER_EVENT_STATUSES:
            raise AirflowException(f"unexpected trigger event: {event!r}")
        message = event.get("message", "")  # type: ignore[union-attr]
        if status == "timeout":
            raise AirflowSensorTimeout(f"{self.task_id}: {message}")
        if status == "error":
            raise AirflowException(message)
        self.log.info("%s", message)
        return self._finish(context, status, message, event.get("result"))  # type: ignore[union-attr]

    def _finish(self, context: Context, status: str, message: str, result: Any) -> Any:
        url = result.get("url") if isinstance(result, dict) else None
        self.link_class.persist(context, url)
        suffix = f" ({url})" if url else ""
        if status == "failed":
            raise AirflowFailException(f"upstream failed: {message}{suffix}")
        if status == "skipped":
            raise AirflowSkipException(f"upstream skipped: {message}{suffix}")
        return self.on_success(context, result)


class RemoteDagRunSensor(_RemoteSensor):
    """
    Waits until a DAG run in another Airflow deployment (or some of its tasks) reaches an allowed state.

    Which upstream run: at most one of ``run_id``, ``logical_date`` (or ``execution_delta`` /
    ``logical_date_fn``), ``latest_after``; by default the run with this run's logical date (its
    ``run_after`` when it has none).

    :param external_dag_id: the upstream DAG id (templated).
    :param remote_conn_id: connection of type ``remote_airflow`` to the upstream (templated).
    :param run_id: wait for exactly this upstream run (templated).
    :param logical_date: wait for the upstream run with this logical date (templated).
    :param execution_delta: subtracted from this run's logical date to get the upstream's.
    :param logical_date_fn: callable of the context returning the upstream logical date.
    :param latest_after: wait for the newest upstream run whose ``run_after`` >= this (templated).
    :param allowed_states: states that complete the wait (default ``["success"]``).
    :param failed_states: states that fail the sensor at once (default ``["failed"]``).
    :param skipped_states: states that skip the sensor at once (default none).
    :param task_ids: wait for these upstream tasks instead of the whole run (templated).
    :param task_group_id: wait for the tasks of this upstream task group (templated).
    :param check_existence: fail fast when the DAG or tasks do not exist upstream (default True).
    :param deferrable: wait in the triggerer (default True); otherwise poke/reschedule.
    """

    template_fields: Sequence[str] = (
        "external_dag_id", "remote_conn_id", "run_id", "logical_date", "latest_after", "task_ids", "task_group_id",
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
        selectors = {"run_id": run_id, "logical_date": logical_date, "execution_delta": execution_delta,
                     "logical_date_fn": logical_date_fn, "latest_after": latest_after}
        given = [name for name, value in selectors.items() if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(selectors)}; got {' and '.join(given)}")
        if execution_delta is not None and not isinstance(execution_delta, timedelta):
            raise ValueError(f"execution_delta must be a datetime.timedelta, got {execution_delta!r}")
        if logical_date_fn is not None and not callable(logical_date_fn):
            raise ValueError("logical_date_fn must be a callable taking the context")
        if task_ids is not None and task_group_id is not None:
            raise ValueError("give task_ids or task_group_id, not both")
        if isinstance(task_ids, str):
            task_ids = [task_ids]
        if task_ids is not None and (not task_ids or not all(isinstance(t, str) and t for t in task_ids)):
            raise ValueError(f"task_ids must be a non-empty list of task ids, got {task_ids!r}")
        known = TASK_STATES if (task_ids or task_group_id) else DAG_RUN_STATES
        states = {
            "allowed_states": _state_list("allowed_states", ["success"] if allowed_states is None else allowed_states,
                                          known),
            "failed_states": _state_list("failed_states", ["failed"] if failed_states is None else failed_states,
                                         known),
            "skipped_states": _state_list("skipped_states", skipped_states, known),
        }
        if not states["allowed_states"]:
            raise ValueError("allowed_states must name at least one state")
        names = list(states)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                overlap = sorted(set(states[a]) & set(states[b]))
                if overlap:
                    raise ValueError(f"{a} and {b} overlap: {overlap}")
        self.external_dag_id = external_dag_id
        self.run_id = run_id
        self.logical_date = logical_date
        self.execution_delta = execution_delta
        self.logical_date_fn = logical_date_fn
        self.latest_after = latest_after
        self.allowed_states = states["allowed_states"]
        self.failed_states = states["failed_states"]
        self.skipped_states = states["skipped_states"]
        self.task_ids = task_ids
        self.task_group_id = task_group_id
        self.check_existence = check_existence

    def _watch(self, context: Context) -> DagRunWatch:
        selector: dict[str, str] = {}
        if self.run_id:
            selector["run_id"] = str(self.run_id)
        elif self.latest_after:
            selector["latest_after"] = _as_datetime("latest_after", self.latest_after).isoformat()
        elif self.logical_date:
            selector["logical_date"] = _as_datetime("logical_date", self.logical_date).isoformat()
        elif self.logical_date_fn is not None:
            selector["logical_date"] = _as_datetime("logical_date_fn()", self.logical_date_fn(context)).isoformat()
        else:
            dag_run = context.get("dag_run")
            own = context.get("logical_date") or getattr(dag_run, "run_after", None)
            if own is None:
                raise AirflowException("this run has neither a logical date nor run_after; give run_id, "
                                       "logical_date or latest_after")
            own = _as_datetime("logical_date", own)
            selector["logical_date"] = (own - (self.execution_delta or timedelta())).isoformat()
        return DagRunWatch(
            external_dag_id=self.external_dag_id, allowed_states=self.allowed_states,
            failed_states=self.failed_states, skipped_states=self.skipped_states,
            task_ids=list(self.task_ids) if self.task_ids else None, task_group_id=self.task_group_id or None,
            check_existence=self.check_existence, **selector,
        )

    def make_probe(self, context: Context) -> Probe:
        return DagRunProbe(self._watch(context), self.log)

    def make_trigger(self, context: Context, timeout_at: float) -> BaseTrigger:
        return RemoteDagRunTrigger(remote_conn_id=self.remote_conn_id, poke_interval=self.poke_interval,
                                   timeout_at=timeout_at, **self._watch(context).to_kwargs())
