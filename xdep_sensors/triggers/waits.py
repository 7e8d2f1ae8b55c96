"""Triggers: the sensors' deferred waits, and event triggers for Airflow 3 ``AssetWatcher``.

``serialize()`` holds the connection id and plain values only; credentials are read from the
connection (asynchronously) inside the triggerer.

A sensor's trigger can also start its task (``start_from_trigger``: built from the task's rendered
arguments, Airflow 3.3+) and end it (``end_from_trigger``: a task-end event instead of a resume on a
worker, where that behaves exactly as the worker would; see :meth:`_PollingTrigger._end`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException
from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)
from asgiref.sync import sync_to_async

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.core import poller as polling
from xdep_sensors.core.decisions import Decision
from xdep_sensors.core.probes import AssetProbe, AssetTarget, DagRunProbe, DagRunTarget
from xdep_sensors.errors import XdepError
from xdep_sensors.hooks.remote_airflow import RemoteAirflowHook, shared_config
from xdep_sensors.links import UpstreamAssetLink, UpstreamRunLink
from xdep_sensors.triggers.classpath import classpath
from xdep_sensors.triggers.state import CursorStore
from xdep_sensors.triggers.task_args import asset_target, dag_run_target
from xdep_sensors.version_compat import airflow_version

TRIGGER_EVENT_STATUSES = frozenset({"success", "failed", "skipped", "error", "timeout"})

Probe = Callable[[RemoteAirflowClient], Awaitable[Decision]]


class _PollingTrigger(BaseTrigger):
    """Looks at the upstream every ``poke_interval`` until a decision, an error or ``timeout_at``.

    It logs at INFO what it sees when that changes (and the final decision), ``still waiting: ...``
    at least every ``polling.HEARTBEAT_S`` while nothing changes, and every look at DEBUG.
    """

    def __init__(
        self,
        *,
        remote_conn_id: str,
        poke_interval: float = 60.0,
        timeout_at: float | None = None,
        end_from_trigger: bool = False,
        soft_fail: bool = False,
        retries: int = 0,
        from_task: bool = False,
    ):
        super().__init__()
        self.remote_conn_id = remote_conn_id
        self.poke_interval = float(poke_interval)
        self.timeout_at = timeout_at
        self.end_from_trigger = end_from_trigger
        self.soft_fail = soft_fail  # what the task does on failure (soft_fail or never_fail: skip)
        self.retries = int(retries)
        self.from_task = (
            from_task  # started by the scheduler: the watch is built from the task's arguments in run()
        )

    watch_class: type[DagRunTarget] | type[AssetTarget]
    probe_class: type[DagRunProbe] | type[AssetProbe]
    link_class: type[UpstreamRunLink] | type[UpstreamAssetLink] = UpstreamRunLink

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._log = None  # each trigger class gets a logger of its own name, not its parent class's
        cls._logger_name = classpath(cls) if cls.__module__.startswith("xdep_sensors.") else None

    @property
    def log(self) -> Any:
        """The trigger class's logger (same name as Airflow's per-instance one), shared by its triggers.

        The triggerer routes a line to its task's log by context, not by logger object; a logger of
        its own per waiting trigger is 8 more objects that every full garbage collection scans.
        """
        if self._log is None:
            type(self).logger()  # cached on the class, where instances find it
        return self._log

    def _set_watch(self, **fields: Any) -> None:
        if (
            self.from_task
        ):  # the task's arguments, as attributes: the triggerer renders its template fields in place
            self._task_args = tuple(fields)
            for name, value in fields.items():
                setattr(self, name, value)
        else:
            self.watch = self.watch_class(**fields)

    def _watch_kwargs(self) -> dict[str, Any]:
        if self.from_task:
            return {"from_task": True, **{name: getattr(self, name) for name in self._task_args}}
        return self.watch.to_kwargs()

    def _ending_kwargs(self) -> dict[str, Any]:
        if not self.end_from_trigger:  # the form earlier versions wrote
            return {}
        return {"end_from_trigger": True, "soft_fail": self.soft_fail, "retries": self.retries}

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> DagRunTarget | AssetTarget:
        raise NotImplementedError

    async def _start_from_task(self) -> None:
        """Build the watch from the task's rendered arguments and run context (``start_from_trigger``)."""
        ti: Any = self.task_instance
        context = ti.get_template_context() if hasattr(ti, "get_template_context") else {}
        self.watch = await self._build_watch({name: getattr(self, name) for name in self._task_args}, context)
        timeout_after = getattr(self, "timeout_after", None)  # set by Airflow on a start_from_trigger task
        if self.timeout_at is None and timeout_after is not None:
            # Airflow's own deadline is the sensor's timeout + 60 s, as for a deferral from a worker
            self.timeout_at = timeout_after.timestamp() - 60

    def _make_probe(self) -> Probe:
        return self.probe_class(self.watch, self.log)  # type: ignore[arg-type]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {
            "remote_conn_id": self.remote_conn_id,
            "poke_interval": self.poke_interval,
            "timeout_at": self.timeout_at,
            **self._ending_kwargs(),
            **self._watch_kwargs(),
        }
        return classpath(type(self)), kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            looks = await self._looks()
        # a connection missing or misconfigured (the message names it and the fix), or a task argument
        # that is not what it must be (start_from_trigger)
        except (XdepError, AirflowException) as err:
            yield await self._end({"status": "error", "message": str(err)})
            return
        narration = polling.Narration(self.log)
        async with looks:
            while True:
                # never waits past timeout_at: then the look is None, and the deadline is reported below
                remaining = None if self.timeout_at is None else max(self.timeout_at - time.time(), 0)
                outcome = await looks.get(remaining)
                if isinstance(outcome, XdepError):
                    if not outcome.transient:
                        yield await self._end({"status": "error", "message": str(outcome)})
                        return
                    self.log.warning(
                        "upstream trouble, looking again in %.0fs: %s", self.poke_interval, outcome
                    )
                    narration.trouble()
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif outcome is not None:
                    narration.tell(outcome)
                    if outcome.done:
                        yield await self._end(
                            {"status": outcome.status, "message": outcome.message, "result": outcome.result}
                        )
                        return
                if self.timeout_at is not None and self.timeout_at - time.time() <= 0:
                    yield TriggerEvent(
                        {"status": "timeout", "message": "the sensor timed out before the upstream was ready"}
                    )
                    return

    async def _looks(self) -> Any:
        """This wait's looks: a place in the connection's shared poll, or its own."""
        if self.from_task:
            await self._start_from_task()
        probe = self._make_probe()
        config = await shared_config(
            self.remote_conn_id
        )  # read once per CONFIG_TTL_S for the loop's triggers
        if polling.SHARED_POLLING:
            every_look = self._logs_debug()  # else unchanged looks are not even handed over
            return polling.POLLERS.get(config, self.poke_interval).subscribe(probe, every_look)
        return polling.LoneLooks(probe, RemoteAirflowHook.client_for(config), self.poke_interval)

    async def _end(self, payload: dict[str, Any]) -> TriggerEvent:
        """The event that ends this wait: a task-end event when that behaves as the worker's resume would.

        Else (``end_from_trigger`` off, a timeout, or a failure Airflow would handle differently
        without a worker) the payload goes back to the task's ``execute_complete`` on a worker.

        - success: the sensor's XCom return value (and its link), written with the success state;
        - skipped, and a failure with ``soft_fail``/``never_fail``: skipped;
        - ``failed_states``: the worker fails without retry. Airflow ends a failed task without retry
          below 3.3, and from 3.3 routes it to a retry: ended here below 3.3 or without retries;
        - an error (credentials, unknown DAG or asset): the worker retries. Ended here from 3.3, or
          without retries;
        - the sensor's timeout: always on a worker (``AirflowSensorTimeout``, with ``soft_fail``).
        """
        status = payload["status"]
        if not self.end_from_trigger or status == "timeout":
            return TriggerEvent(payload)
        message = payload.get("message", "")
        if status == "success":
            try:
                value = await self._on_success(payload.get("result"))
            except Exception as err:  # e.g. the cursor could not be stored: the worker does it instead
                self.log.warning("ending the task on a worker: %s", err)
                return TriggerEvent(payload)
            xcoms: dict[str, Any] = {"return_value": value}
            url = self._url(payload.get("result"))
            if url:
                xcoms[self.link_class().xcom_key] = url
            return TaskSuccessEvent(xcoms=xcoms)
        if status == "failed":
            url = self._url(payload.get("result"))
            message = f"upstream failed: {message}" + (f" ({url})" if url else "")
        elif status == "skipped":
            self.log.info("upstream skipped: %s", message)
            return TaskSkippedEvent()
        if self.soft_fail:
            self.log.warning("%s; skipping (soft_fail)", message)
            return TaskSkippedEvent()
        retried_by_airflow = airflow_version() >= (3, 3)
        if self.retries and (retried_by_airflow if status == "failed" else not retried_by_airflow):
            return TriggerEvent(payload)  # the worker decides on retries as it would without end_from_trigger
        self.log.error("%s", message)
        return TaskFailedEvent()

    @staticmethod
    def _url(result: Any) -> str | None:
        return result.get("url") if isinstance(result, dict) else None

    async def _on_success(self, result: Any) -> Any:
        """The task's XCom return value for a success (what the sensor's ``on_success`` returns)."""
        return result

    def _logs_debug(self) -> bool:
        is_enabled = getattr(self.log, "isEnabledFor", None)
        return bool(is_enabled(logging.DEBUG)) if is_enabled is not None else False


class RemoteDagRunTrigger(_PollingTrigger):
    """
    Waits in the triggerer until an upstream DAG run (or some of its tasks) reaches a decisive state.

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.core.probes.DagRunTarget`.
    """

    watch_class = DagRunTarget
    probe_class = DagRunProbe

    def __init__(
        self,
        *,
        remote_conn_id: str,
        external_dag_id: str,
        poke_interval: float = 60.0,
        timeout_at: float | None = None,
        end_from_trigger: bool = False,
        soft_fail: bool = False,
        retries: int = 0,
        from_task: bool = False,
        **watch: Any,
    ):
        super().__init__(
            remote_conn_id=remote_conn_id,
            poke_interval=poke_interval,
            timeout_at=timeout_at,
            end_from_trigger=end_from_trigger,
            soft_fail=soft_fail,
            retries=retries,
            from_task=from_task,
        )
        self._set_watch(external_dag_id=external_dag_id, **watch)

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> DagRunTarget:
        return dag_run_target(args, context)


class RemoteAssetTrigger(_PollingTrigger):
    """
    Waits in the triggerer for new upstream asset events (each consumed once, per the cursors).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param assets: the watched assets, as ``{"uri": ..., "name": ...}`` dicts.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.core.probes.AssetTarget`.
    """

    watch_class = AssetTarget
    probe_class = AssetProbe
    link_class = UpstreamAssetLink

    def __init__(
        self,
        *,
        remote_conn_id: str,
        assets: list[dict[str, str | None]],
        poke_interval: float = 60.0,
        timeout_at: float | None = None,
        end_from_trigger: bool = False,
        soft_fail: bool = False,
        retries: int = 0,
        from_task: bool = False,
        **watch: Any,
    ):
        super().__init__(
            remote_conn_id=remote_conn_id,
            poke_interval=poke_interval,
            timeout_at=timeout_at,
            end_from_trigger=end_from_trigger,
            soft_fail=soft_fail,
            retries=retries,
            from_task=from_task,
        )
        self._set_watch(assets=assets, **watch)

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> AssetTarget:
        return await sync_to_async(asset_target, thread_sensitive=False)(
            args, context
        )  # reads the task's cursors

    async def _on_success(self, result: Any) -> Any:
        """Record the consumed events in the task's cursors (as the worker would), then return them."""
        ti: Any = self.task_instance  # set by the triggerer before run()
        store = CursorStore(ti.dag_id, ti.task_id)
        await sync_to_async(store.commit, thread_sensitive=False)(
            ti.run_id, result["started_from"], result["cursors"]
        )
        return result["events"]


__all__ = ["TRIGGER_EVENT_STATUSES", "RemoteAssetTrigger", "RemoteDagRunTrigger"]
