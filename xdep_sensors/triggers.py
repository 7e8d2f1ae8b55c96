"""Triggers: the sensors' deferred waits, and event triggers for Airflow 3 ``AssetWatcher``.

``serialize()`` holds the connection id and plain values only; credentials are read from the
connection (asynchronously) inside the triggerer.
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from airflow.triggers.base import BaseTrigger, TriggerEvent

from xdep_sensors import polling
from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.decisions import Decision
from xdep_sensors.errors import XdepError
from xdep_sensors.hook import RemoteAirflowHook, shared_config
from xdep_sensors.probes import AssetProbe, AssetTarget, DagRunProbe, DagRunTarget

TRIGGER_EVENT_STATUSES = frozenset({"success", "failed", "skipped", "error", "timeout"})

Probe = Callable[[RemoteAirflowClient], Awaitable[Decision]]


class _PollingTrigger(BaseTrigger):
    """Looks at the upstream every ``poke_interval`` until a decision, an error or ``timeout_at``.

    It logs at INFO what it sees when that changes (and the final decision), ``still waiting: ...``
    at least every ``polling.HEARTBEAT_S`` while nothing changes, and every look at DEBUG.
    """

    def __init__(self, *, remote_conn_id: str, poke_interval: float = 60.0, timeout_at: float | None = None):
        super().__init__()
        self.remote_conn_id = remote_conn_id
        self.poke_interval = float(poke_interval)
        self.timeout_at = timeout_at

    watch_class: type[DagRunTarget] | type[AssetTarget]
    probe_class: type[DagRunProbe] | type[AssetProbe]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._log = None  # each trigger class gets a logger of its own name, not its parent class's

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
        self.watch = self.watch_class(**fields)

    def _watch_kwargs(self) -> dict[str, Any]:
        return self.watch.to_kwargs()

    def _make_probe(self) -> Probe:
        return self.probe_class(self.watch, self.log)  # type: ignore[arg-type]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {"remote_conn_id": self.remote_conn_id, "poke_interval": self.poke_interval,
                  "timeout_at": self.timeout_at, **self._watch_kwargs()}
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        probe = self._make_probe()
        try:  # the connection, read once per CONFIG_TTL_S for every trigger of this loop
            config = await shared_config(self.remote_conn_id)
        except XdepError as err:  # missing or misconfigured: the message names the connection and the fix
            yield TriggerEvent({"status": "error", "message": str(err)})
            return
        if polling.SHARED_POLLING:
            every_look = self._logs_debug()  # else unchanged looks are not even handed over
            looks: Any = polling.POLLERS.get(config, self.poke_interval).subscribe(probe, every_look)
        else:
            looks = polling.LoneLooks(probe, RemoteAirflowHook.client_for(config), self.poke_interval)
        said: str | None = None  # the message last logged at INFO, and when
        said_at = 0.0
        async with looks:
            while True:
                # never waits past timeout_at: then the look is None, and the deadline is reported below
                remaining = None if self.timeout_at is None else max(self.timeout_at - time.time(), 0)
                outcome = await looks.get(remaining)
                if isinstance(outcome, XdepError):
                    if not outcome.transient:
                        yield TriggerEvent({"status": "error", "message": str(outcome)})
                        return
                    self.log.warning("upstream trouble, looking again in %.0fs: %s", self.poke_interval, outcome)
                    said = None  # once it answers again, say what it shows
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif outcome is not None:
                    now = polling._clock()
                    if outcome.done or outcome.message != said:
                        self.log.info("%s", outcome.message)
                        said, said_at = outcome.message, now
                    elif now - said_at >= polling.HEARTBEAT_S:
                        self.log.info("still waiting: %s", outcome.message)
                        said_at = now
                    else:
                        self.log.debug("%s", outcome.message)
                    if outcome.done:
                        yield TriggerEvent({"status": outcome.status, "message": outcome.message,
                                            "result": outcome.result})
                        return
                if self.timeout_at is not None and self.timeout_at - time.time() <= 0:
                    yield TriggerEvent({"status": "timeout",
                                        "message": "the sensor timed out before the upstream was ready"})
                    return

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
    Other keyword arguments are the fields of :class:`~xdep_sensors.probes.DagRunTarget`.
    """

    watch_class = DagRunTarget
    probe_class = DagRunProbe

    def __init__(self, *, remote_conn_id: str, external_dag_id: str, poke_interval: float = 60.0,
                 timeout_at: float | None = None, **watch: Any):
        super().__init__(remote_conn_id=remote_conn_id, poke_interval=poke_interval, timeout_at=timeout_at)
        self._set_watch(external_dag_id=external_dag_id, **watch)


class RemoteAssetTrigger(_PollingTrigger):
    """
    Waits in the triggerer for new upstream asset events (each consumed once, per the cursors).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param assets: the watched assets, as ``{"uri": ..., "name": ...}`` dicts.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.probes.AssetTarget`.
    """

    watch_class = AssetTarget
    probe_class = AssetProbe

    def __init__(self, *, remote_conn_id: str, assets: list[dict[str, str | None]], poke_interval: float = 60.0,
                 timeout_at: float | None = None, **watch: Any):
        super().__init__(remote_conn_id=remote_conn_id, poke_interval=poke_interval, timeout_at=timeout_at)
        self._set_watch(assets=assets, **watch)


# The AssetWatcher triggers live in ``watchers`` and are part of this module's public API.
from xdep_sensors.watchers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger  # noqa: E402
from xdep_sensors.alerts import (  # noqa: E402
    RemoteDagRunDeadlineTrigger, RemoteDagRunDurationTrigger, RemoteTaskInstanceEventTrigger,
)

__all__ = ["RemoteAssetEventTrigger", "RemoteAssetTrigger", "RemoteDagRunDeadlineTrigger", "RemoteDagRunDurationTrigger",
           "RemoteDagRunEventTrigger", "RemoteDagRunTrigger", "RemoteTaskInstanceEventTrigger"]
