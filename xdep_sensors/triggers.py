"""Triggers: the sensors' deferred waits, and event triggers for Airflow 3 ``AssetWatcher``.

``serialize()`` holds the connection id and plain values only; credentials are read from the
connection (asynchronously) inside the triggerer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from airflow.triggers.base import BaseTrigger, TriggerEvent

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.decisions import Decision
from xdep_sensors.errors import XdepError
from xdep_sensors.hook import RemoteAirflowHook
from xdep_sensors.probes import AssetProbe, AssetWatch, DagRunProbe, DagRunWatch

TRIGGER_EVENT_STATUSES = frozenset({"success", "failed", "skipped", "error", "timeout"})

Probe = Callable[[RemoteAirflowClient], Awaitable[Decision]]


class _PollingTrigger(BaseTrigger):
    """Looks at the upstream every ``poke_interval`` until a decision, an error or ``timeout_at``."""

    def __init__(self, *, remote_conn_id: str, poke_interval: float = 60.0, timeout_at: float | None = None):
        super().__init__()
        self.remote_conn_id = remote_conn_id
        self.poke_interval = float(poke_interval)
        self.timeout_at = timeout_at

    def _watch_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _make_probe(self) -> Probe:
        raise NotImplementedError

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {"remote_conn_id": self.remote_conn_id, "poke_interval": self.poke_interval,
                  "timeout_at": self.timeout_at, **self._watch_kwargs()}
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = RemoteAirflowHook(self.remote_conn_id)
        probe = self._make_probe()
        while True:
            try:
                decision = await probe(await hook.aget_client())
            except XdepError as err:
                if not err.transient:
                    yield TriggerEvent({"status": "error", "message": str(err)})
                    return
                self.log.warning("upstream trouble, looking again in %.0fs: %s", self.poke_interval, err)
            else:
                self.log.info("%s", decision.message)
                if decision.done:
                    yield TriggerEvent({"status": decision.status, "message": decision.message,
                                        "result": decision.result})
                    return
            wait = self.poke_interval
            if self.timeout_at is not None:
                remaining = self.timeout_at - time.time()
                if remaining <= 0:
                    yield TriggerEvent({"status": "timeout",
                                        "message": "the sensor timed out before the upstream was ready"})
                    return
                wait = min(wait, remaining)
            await asyncio.sleep(wait)


class RemoteDagRunTrigger(_PollingTrigger):
    """
    Waits in the triggerer until an upstream DAG run (or some of its tasks) reaches a decisive state.

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.probes.DagRunWatch`.
    """

    def __init__(self, *, remote_conn_id: str, external_dag_id: str, poke_interval: float = 60.0,
                 timeout_at: float | None = None, **watch: Any):
        super().__init__(remote_conn_id=remote_conn_id, poke_interval=poke_interval, timeout_at=timeout_at)
        self.watch = DagRunWatch(external_dag_id=external_dag_id, **watch)

    def _watch_kwargs(self) -> dict[str, Any]:
        return self.watch.to_kwargs()

    def _make_probe(self) -> Probe:
        return DagRunProbe(self.watch, self.log)


class RemoteAssetTrigger(_PollingTrigger):
    """
    Waits in the triggerer for new upstream asset events (each consumed once, per the cursors).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param assets: the watched assets, as ``{"uri": ..., "name": ...}`` dicts.
    :param poke_interval: seconds between looks at the upstream.
    :param timeout_at: epoch seconds after which the trigger reports ``timeout``.
    Other keyword arguments are the fields of :class:`~xdep_sensors.probes.AssetWatch`.
    """

    def __init__(self, *, remote_conn_id: str, assets: list[dict[str, str | None]], poke_interval: float = 60.0,
                 timeout_at: float | None = None, **watch: Any):
        super().__init__(remote_conn_id=remote_conn_id, poke_interval=poke_interval, timeout_at=timeout_at)
        self.watch = AssetWatch(assets=assets, **watch)

    def _watch_kwargs(self) -> dict[str, Any]:
        return self.watch.to_kwargs()

    def _make_probe(self) -> Probe:
        return AssetProbe(self.watch, self.log)


# The AssetWatcher triggers live in ``watchers`` and are part of this module's public API.
from xdep_sensors.watchers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger  # noqa: E402

__all__ = ["RemoteAssetEventTrigger", "RemoteAssetTrigger", "RemoteDagRunEventTrigger", "RemoteDagRunTrigger"]
