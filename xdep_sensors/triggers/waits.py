"""The sensors' deferred waits: the triggers ``RemoteDagRunSensor`` and ``RemoteAssetSensor`` defer to.

``serialize()`` holds the connection id and plain values only. See ``docs/guides/running-at-scale.md``
for ``start_from_trigger`` and ``end_from_trigger``.
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
from xdep_sensors.core.probes import AssetProbe, AssetWait, DagRunProbe, DagRunWait
from xdep_sensors.errors import XdepError
from xdep_sensors.hooks.remote_airflow import RemoteAirflowHook, shared_config
from xdep_sensors.links import UpstreamAssetLink, UpstreamRunLink
from xdep_sensors.triggers.classpath import classpath
from xdep_sensors.triggers.partitions import asset_probe
from xdep_sensors.triggers.state import CursorStore
from xdep_sensors.triggers.task_args import asset_wait, dag_run_wait
from xdep_sensors.version_compat import airflow_version

TRIGGER_EVENT_STATUSES = frozenset({"success", "failed", "skipped", "error", "timeout"})

Probe = Callable[[RemoteAirflowClient], Awaitable[Decision]]


class _PollingTrigger(BaseTrigger):
    """Looks at the upstream every ``poke_interval`` until a decision, an error or ``timeout_at``."""

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
        self.from_task = from_task  # started by the scheduler: the watch is built in run()

    watch_class: type[DagRunWait] | type[AssetWait]
    probe_class: type[DagRunProbe] | type[AssetProbe]
    link_class: type[UpstreamRunLink] | type[UpstreamAssetLink] = UpstreamRunLink

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._log = None  # a logger of the class's own name, not its parent's
        cls._logger_name = classpath(cls) if cls.__module__.startswith("xdep_sensors.") else None

    @property
    def log(self) -> Any:
        """The trigger class's logger, shared by its triggers (the triggerer routes lines by context)."""
        if self._log is None:
            type(self).logger()  # cached on the class
        return self._log

    def _set_watch(self, **fields: Any) -> None:
        if self.from_task:  # as attributes: the triggerer renders the template fields in place
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
        if not self.end_from_trigger:  # as earlier versions wrote it
            return {}
        return {"end_from_trigger": True, "soft_fail": self.soft_fail, "retries": self.retries}

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> DagRunWait | AssetWait:
        raise NotImplementedError

    async def _start_from_task(self) -> None:
        """Build the watch from the task's rendered arguments and run context (``start_from_trigger``)."""
        ti: Any = self.task_instance
        context = ti.get_template_context() if hasattr(ti, "get_template_context") else {}
        self.watch = await self._build_watch({name: getattr(self, name) for name in self._task_args}, context)
        timeout_after = getattr(self, "timeout_after", None)  # set by Airflow on a start_from_trigger task
        if self.timeout_at is None and timeout_after is not None:
            # Airflow's deadline is the sensor's timeout + 60 s, as for a deferral from a worker
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
        # a missing or misconfigured connection, or a bad task argument (start_from_trigger)
        except (XdepError, AirflowException) as err:
            yield await self._end({"status": "error", "message": str(err)})
            return
        narration = polling.Narration(self.log)
        async with looks:
            while True:
                # never waits past timeout_at: the look is then None
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
        """A place in the connection's shared poll, or its own looks."""
        if self.from_task:
            await self._start_from_task()
        probe = self._make_probe()
        config = await shared_config(self.remote_conn_id)  # cached for CONFIG_TTL_S
        if polling.SHARED_POLLING:
            every_look = self._logs_debug()
            return polling.POLLERS.get(config, self.poke_interval).subscribe(probe, every_look)
        return polling.LoneLooks(probe, RemoteAirflowHook.client_for(config), self.poke_interval)

    async def _end(self, payload: dict[str, Any]) -> TriggerEvent:
        """The event that ends this wait: a task-end event when that behaves as the worker's resume would.

        Otherwise the payload goes back to ``execute_complete`` on a worker.

        - success: the XCom return value (and link), written with the success state;
        - skipped, and a failure with ``soft_fail``/``never_fail``: skipped;
        - ``failed_states`` (the worker does not retry): here below 3.3 (3.3+ would retry) or without retries;
        - an error (the worker retries): here from 3.3, or without retries;
        - the sensor's timeout: always on a worker (``AirflowSensorTimeout``, with ``soft_fail``).
        """
        status = payload["status"]
        if not self.end_from_trigger or status == "timeout":
            return TriggerEvent(payload)
        message = payload.get("message", "")
        if status == "success":
            try:
                value = await self._on_success(payload.get("result"))
            except Exception as err:  # e.g. the cursor could not be stored: the worker tries
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
        """The task's XCom return value for a success."""
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
    Other keyword arguments are the fields of :class:`~xdep_sensors.core.probes.DagRunWait`.
    """

    watch_class = DagRunWait
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

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> DagRunWait:
        return dag_run_wait(args, context)


class RemoteAssetTrigger(_PollingTrigger):
    """
    Waits in the triggerer for new upstream asset events (each consumed once, per the cursors).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param assets: the watched assets, as ``{"uri": ..., "name": ...}`` dicts.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.core.probes.AssetWait`.
    """

    watch_class = AssetWait
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

    def _make_probe(self) -> Probe:
        return asset_probe(self.watch, self.log)  # type: ignore[arg-type]

    async def _build_watch(self, args: dict[str, Any], context: dict[str, Any]) -> AssetWait:
        # reads the task's cursors
        return await sync_to_async(asset_wait, thread_sensitive=False)(args, context)

    async def _on_success(self, result: Any) -> Any:
        """Record the consumed events in the task's cursors (as the worker would), then return them."""
        ti: Any = self.task_instance
        store = CursorStore(ti.dag_id, ti.task_id)
        await sync_to_async(store.commit, thread_sensitive=False)(
            ti.run_id, result["started_from"], result["cursors"]
        )
        return result["events"]


__all__ = ["TRIGGER_EVENT_STATUSES", "RemoteAssetTrigger", "RemoteDagRunTrigger"]
