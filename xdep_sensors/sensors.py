"""The sensors: validate at parse time, then either defer to a trigger or poke through the same probe."""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow.sdk import Asset, AssetAlias
from airflow.triggers.base import StartTriggerArgs

from xdep_sensors.durable import CursorStore
from xdep_sensors.decisions import DAG_RUN_STATES, TASK_STATES
from xdep_sensors.errors import XdepError
from xdep_sensors.hook import RemoteAirflowHook
from xdep_sensors.links import UpstreamAssetLink, UpstreamRunLink
from xdep_sensors.probes import AssetProbe, AssetTarget, DagRunProbe, DagRunTarget
from xdep_sensors.task_args import airflow_version, asset_target, dag_run_target
from xdep_sensors.triggers import TRIGGER_EVENT_STATUSES, RemoteAssetTrigger, RemoteDagRunTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

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


START_FROM_TRIGGER_SINCE = (3, 3)  # Airflow renders a task's arguments in the triggerer from 3.3


class _RemoteSensor(BaseSensorOperator):
    """What both sensors share: one probe, run in the triggerer (deferrable) or by ``poke``.

    ``start_from_trigger`` / ``end_from_trigger`` (Airflow's names and meaning, opt-in): the
    scheduler hands the task straight to the triggerer, and the trigger ends the task itself, so a
    wait costs no worker run. See "Running at scale" in the docs (Worker-free waits).
    """

    link_class: type[UpstreamRunLink] | type[UpstreamAssetLink] = UpstreamRunLink
    trigger_class: type[RemoteDagRunTrigger] | type[RemoteAssetTrigger] = RemoteDagRunTrigger
    kind = "dag_run"  # in ``xdep_dependency``: "dag_run" or "asset"
    start_from_trigger = False
    start_trigger_args = None

    def __init__(self, *, remote_conn_id: str = RemoteAirflowHook.default_conn_name, deferrable: bool = True,
                 start_from_trigger: bool = False, end_from_trigger: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(remote_conn_id, str) or not remote_conn_id.strip():
            raise ValueError(f"remote_conn_id must be a connection id, got {remote_conn_id!r}")
        for name, value in (("deferrable", deferrable), ("start_from_trigger", start_from_trigger),
                            ("end_from_trigger", end_from_trigger)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        for name, value in (("start_from_trigger", start_from_trigger), ("end_from_trigger", end_from_trigger)):
            if value and not deferrable:
                raise ValueError(f"{name}=True needs deferrable=True: a waiting task in poke or reschedule mode "
                                 "runs on a worker")
        self.remote_conn_id = remote_conn_id
        self.deferrable = deferrable
        self.end_from_trigger = end_from_trigger
        self.start_from_trigger = start_from_trigger
        self._probe: Probe | None = None

    @classmethod
    def get_serialized_fields(cls):
        """Airflow's operator fields plus ``xdep_dependency``: what the Remote dependencies page shows."""
        return frozenset(super().get_serialized_fields() | {"xdep_dependency"})

    def _finish_init(self, task_args: dict[str, Any]) -> None:
        """Called last by each sensor's ``__init__`` with its wait's (unrendered) arguments."""
        self._start_in_triggerer(task_args)
        # JSON text: Airflow's serialization keeps an operator's extra string field as it is everywhere
        # (a dict would be written raw and read back as an encoded value)
        self.xdep_dependency = json.dumps({
            "kind": self.kind, "remote_conn_id": self.remote_conn_id,
            "mode": "deferrable" if self.deferrable else ("reschedule" if self.reschedule else "poke"),
            "start_from_trigger": self.start_from_trigger, "end_from_trigger": self.end_from_trigger,
            **{k: v for k, v in task_args.items() if v is not None},
        }, default=str)

    def _start_in_triggerer(self, task_args: dict[str, Any]) -> None:
        """Set ``start_trigger_args`` from the sensor's arguments.

        The triggerer renders the templated ones (those named in ``template_fields``) before the
        trigger builds its watch, with the same function the worker uses.
        """
        if not self.start_from_trigger:
            return
        running = airflow_version()
        if running < START_FROM_TRIGGER_SINCE:
            warnings.warn(
                f"{self.task_id}: start_from_trigger=True needs Airflow 3.3+ (this is "
                f"{'.'.join(map(str, running))}): the task starts on a worker and defers from there"
                + (" (end_from_trigger still applies)" if self.end_from_trigger else ""),
                UserWarning, stacklevel=3)
            self.start_from_trigger = False
            return
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{self.trigger_class.__module__}.{self.trigger_class.__qualname__}",
            trigger_kwargs={"remote_conn_id": self.remote_conn_id, "poke_interval": float(self.poke_interval),
                            "timeout_at": None, **self._ending_kwargs(), "from_task": True, **task_args},
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def _ending_kwargs(self) -> dict[str, Any]:
        if not self.end_from_trigger:
            return {}
        return {"end_from_trigger": True, "retries": int(self.retries or 0),
                "soft_fail": bool(self.soft_fail or getattr(self, "never_fail", False))}

    # subclasses ------------------------------------------------------------------------------

    def _watch(self, context: Context) -> DagRunTarget | AssetTarget:
        raise NotImplementedError

    def make_probe(self, context: Context) -> Probe:
        raise NotImplementedError

    def on_success(self, context: Context, result: Any) -> Any:
        return result

    # both paths ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        timeout_at = time.time() + float(self.timeout)
        self.defer(
            trigger=self.trigger_class(remote_conn_id=self.remote_conn_id, poke_interval=self.poke_interval,
                                       timeout_at=timeout_at, **self._ending_kwargs(),
                                       **self._watch(context).to_kwargs()),
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
    :param str remote_conn_id: connection of type ``remote_airflow`` to the upstream (templated; default
        ``remote_airflow_default``).
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
    :param bool deferrable: wait in the triggerer (default True); otherwise poke/reschedule.
    :param bool start_from_trigger: the scheduler hands the task straight to the triggerer, no worker run
        (Airflow 3.3+; below, a warning and the task starts on a worker).
    :param bool end_from_trigger: the trigger ends the task (success, failure, skip) instead of resuming it
        on a worker; a timeout, and a failure Airflow would retry differently, still resume on one.
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
        if self.start_from_trigger and logical_date_fn is not None:
            raise ValueError("logical_date_fn cannot travel to the triggerer (start_from_trigger=True): give "
                             "logical_date as a template, e.g. \"{{ logical_date - macros.timedelta(hours=1) }}\", "
                             "or execution_delta")
        self._finish_init(self._task_args())

    def _task_args(self) -> dict[str, Any]:
        """The arguments that decide which run (``execution_delta`` in seconds: they travel as JSON)."""
        return {"external_dag_id": self.external_dag_id, "run_id": self.run_id, "logical_date": self.logical_date,
                "latest_after": self.latest_after,
                "execution_delta": self.execution_delta.total_seconds() if self.execution_delta else None,
                "allowed_states": self.allowed_states, "failed_states": self.failed_states,
                "skipped_states": self.skipped_states, "task_ids": self.task_ids, "task_group_id": self.task_group_id,
                "check_existence": self.check_existence}

    def _watch(self, context: Context) -> DagRunTarget:
        return dag_run_target(self._task_args(), context, self.logical_date_fn)

    def make_probe(self, context: Context) -> Probe:
        return DagRunProbe(self._watch(context), self.log)


def _asset_refs(asset_uri: Any, asset_name: Any, assets: Any) -> list[dict[str, str | None]]:
    given = [n for n, v in (("asset_uri", asset_uri), ("asset_name", asset_name), ("assets", assets)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of asset_uri, asset_name, assets; got {', '.join(given) or 'none'}")
    if asset_uri is not None or asset_name is not None:
        value, key = (asset_uri, "uri") if asset_uri is not None else (asset_name, "name")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"asset_{key} must be a non-empty string, got {value!r}")
        return [{"uri": value if key == "uri" else None, "name": value if key == "name" else None}]
    if isinstance(assets, str) or not isinstance(assets, (list, tuple)) or not assets:
        raise ValueError(f"assets must be a non-empty list of URIs or airflow.sdk.Asset objects, got {assets!r}")
    refs = []
    for item in assets:
        uri = getattr(item, "uri", item)
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f"assets has an entry that is neither a URI nor an Asset: {item!r}")
        refs.append({"uri": uri, "name": None})
    return refs


class RemoteAssetSensor(_RemoteSensor):
    """
    Waits for asset (dataset) events in another Airflow deployment; each event is consumed once.

    :param asset_uri: the upstream asset's URI (templated).
    :param asset_name: the upstream asset's name, Airflow 3 upstreams (templated).
    :param assets: several assets, as URIs or ``airflow.sdk.Asset`` objects.
    :param require: ``"all"`` (default: every asset has a new event) or ``"any"``.
    :param source_dag_id: only count events produced by this upstream DAG (templated).
    :param since: count events at or after this time instead of the task's cursor (templated).
    :param check_existence: an asset unknown upstream fails fast with close matches (default True).
    :param str remote_conn_id: connection of type ``remote_airflow`` to the upstream (templated; default
        ``remote_airflow_default``).
    :param bool deferrable: wait in the triggerer (default True); otherwise poke/reschedule.
    :param bool start_from_trigger: the scheduler hands the task straight to the triggerer, no worker run
        (Airflow 3.3+; below, a warning and the task starts on a worker).
    :param bool end_from_trigger: the trigger ends the task (success, failure, skip) instead of resuming it
        on a worker; a timeout, and a failure Airflow would retry differently, still resume on one.

    Local ``Asset`` outlets get one local event per matched upstream event, carrying the upstream
    ``extra`` plus provenance under ``xdep_upstream``.
    """

    template_fields: Sequence[str] = ("asset_uri", "asset_name", "remote_conn_id", "source_dag_id", "since")
    ui_color = "#e6f4ea"
    link_class = UpstreamAssetLink
    trigger_class = RemoteAssetTrigger
    kind = "asset"
    operator_extra_links = (UpstreamAssetLink(),)

    def __init__(
        self,
        *,
        asset_uri: str | None = None,
        asset_name: str | None = None,
        assets: list[Any] | None = None,
        require: str = "all",
        source_dag_id: str | None = None,
        since: str | datetime | None = None,
        check_existence: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_refs = _asset_refs(asset_uri, asset_name, assets)
        if require not in ("all", "any"):
            raise ValueError(f"require must be 'all' or 'any', got {require!r}")
        self.asset_uri = asset_uri
        self.asset_name = asset_name
        self.require = require
        self.source_dag_id = source_dag_id
        self.since = since
        self.check_existence = check_existence
        self._bridge_alias: AssetAlias | None = None
        if any(isinstance(o, Asset) for o in self.outlets):
            # Concrete outlets yield one event each; an alias carries the 2nd..Nth matched event.
            self._bridge_alias = AssetAlias(f"xdep_sensors_bridge__{self.dag_id if self.has_dag() else ''}"
                                            f"__{self.task_id}")
            self.outlets = [*self.outlets, self._bridge_alias]
            if self.end_from_trigger:
                warnings.warn(f"{self.task_id}: end_from_trigger is off: Airflow records a task's local outlet "
                              "events only when a worker ends it (the trigger hands its events back to one)",
                              UserWarning, stacklevel=2)
                self.end_from_trigger = False
        self._finish_init(self._task_args())

    def _cursor_store(self, context: Context) -> CursorStore:
        return CursorStore(context["ti"].dag_id, self.task_id)

    def _task_args(self) -> dict[str, Any]:
        return {"asset_uri": self.asset_uri, "asset_name": self.asset_name, "assets": self.asset_refs,
                "require": self.require, "source_dag_id": self.source_dag_id, "since": self.since,
                "check_existence": self.check_existence}

    def _watch(self, context: Context) -> AssetTarget:
        return asset_target(self._task_args(), context)

    def make_probe(self, context: Context) -> Probe:
        return AssetProbe(self._watch(context), self.log)

    def on_success(self, context: Context, result: Any) -> Any:
        events = result["events"]
        self._cursor_store(context).commit(context["run_id"], result["started_from"], result["cursors"])
        self._bridge(context, events, result.get("upstream"))
        return events

    def _bridge(self, context: Context, events: list[dict[str, Any]], upstream: str | None) -> None:
        local = [o for o in self.outlets if isinstance(o, Asset)]
        if not local or not events:
            return
        outlet_events = context["outlet_events"]
        for asset in local:
            for i, event in enumerate(events):
                provenance = {"url": upstream, "event_id": event["id"], "uri": event["uri"],
                              "timestamp": event["timestamp"], "source_dag_id": event["source_dag_id"],
                              "source_run_id": event["source_run_id"]}
                extra = {**(event.get("extra") or {}), "xdep_upstream": provenance}
                if i == 0:
                    outlet_events[asset].extra = extra
                else:
                    outlet_events[self._bridge_alias].add(asset, extra=extra)
        self.log.info("re-emitted %d upstream event(s) to local asset(s) %s", len(events),
                      ", ".join(a.uri for a in local))
