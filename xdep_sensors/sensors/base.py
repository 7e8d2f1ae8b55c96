"""What both sensors share: validate at parse time, then defer to a trigger or poke through the same probe."""

from __future__ import annotations

import json
import time
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)
from airflow.triggers.base import StartTriggerArgs

from xdep_sensors.core.probes import AssetWait, DagRunWait
from xdep_sensors.errors import XdepError
from xdep_sensors.hooks import RemoteAirflowHook
from xdep_sensors.links import UpstreamAssetLink, UpstreamRunLink
from xdep_sensors.triggers import TRIGGER_EVENT_STATUSES, RemoteAssetTrigger, RemoteDagRunTrigger
from xdep_sensors.triggers.classpath import classpath
from xdep_sensors.version_compat import airflow_version

if TYPE_CHECKING:
    from airflow.sdk import Context

    from xdep_sensors.triggers.waits import Probe


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

    ``start_from_trigger`` / ``end_from_trigger``: see ``docs/guides/running-at-scale.md``.
    """

    link_class: type[UpstreamRunLink] | type[UpstreamAssetLink] = UpstreamRunLink
    trigger_class: type[RemoteDagRunTrigger] | type[RemoteAssetTrigger] = RemoteDagRunTrigger
    kind = "dag_run"  # in ``xdep_dependency``: "dag_run" or "asset"
    start_from_trigger = False
    start_trigger_args = None

    def __init__(
        self,
        *,
        remote_conn_id: str = RemoteAirflowHook.default_conn_name,
        deferrable: bool = True,
        start_from_trigger: bool = False,
        end_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(remote_conn_id, str) or not remote_conn_id.strip():
            raise ValueError(f"remote_conn_id must be a connection id, got {remote_conn_id!r}")
        for name, value in (
            ("deferrable", deferrable),
            ("start_from_trigger", start_from_trigger),
            ("end_from_trigger", end_from_trigger),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        for name, value in (
            ("start_from_trigger", start_from_trigger),
            ("end_from_trigger", end_from_trigger),
        ):
            if value and not deferrable:
                raise ValueError(
                    f"{name}=True needs deferrable=True: a waiting task in poke or reschedule mode "
                    "runs on a worker"
                )
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
        # JSON text: serialization keeps an extra string field as is (a dict would come back encoded)
        self.xdep_dependency = json.dumps(
            {
                "kind": self.kind,
                "remote_conn_id": self.remote_conn_id,
                "mode": "deferrable" if self.deferrable else ("reschedule" if self.reschedule else "poke"),
                "start_from_trigger": self.start_from_trigger,
                "end_from_trigger": self.end_from_trigger,
                **{k: v for k, v in task_args.items() if v is not None},
            },
            default=str,
        )

    def _start_in_triggerer(self, task_args: dict[str, Any]) -> None:
        """Set ``start_trigger_args`` from the sensor's arguments (the triggerer renders templates)."""
        if not self.start_from_trigger:
            return
        running = airflow_version()
        if running < START_FROM_TRIGGER_SINCE:
            warnings.warn(
                f"{self.task_id}: start_from_trigger=True needs Airflow 3.3+ (this is "
                f"{'.'.join(map(str, running))}): the task starts on a worker and defers from there"
                + (" (end_from_trigger still applies)" if self.end_from_trigger else ""),
                UserWarning,
                stacklevel=3,
            )
            self.start_from_trigger = False
            return
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=classpath(self.trigger_class),
            trigger_kwargs={
                "remote_conn_id": self.remote_conn_id,
                "poke_interval": float(self.poke_interval),
                "timeout_at": None,
                **self._ending_kwargs(),
                "from_task": True,
                **task_args,
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def _ending_kwargs(self) -> dict[str, Any]:
        if not self.end_from_trigger:
            return {}
        return {
            "end_from_trigger": True,
            "retries": int(self.retries or 0),
            "soft_fail": bool(self.soft_fail or getattr(self, "never_fail", False)),
        }

    # subclasses ------------------------------------------------------------------------------

    def _watch(self, context: Context) -> DagRunWait | AssetWait:
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
            trigger=self.trigger_class(
                remote_conn_id=self.remote_conn_id,
                poke_interval=self.poke_interval,
                timeout_at=timeout_at,
                **self._ending_kwargs(),
                **self._watch(context).to_kwargs(),
            ),
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
        return PokeReturnValue(
            True, self._finish(context, decision.status, decision.message, decision.result)
        )

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
