"""The triggers: the sensors' own, and triggers for Airflow 3 ``AssetWatcher`` (events, runs, alerts).

Each serializes under ``xdep_sensors.triggers.<Name>``, whichever module defines it.
"""

from __future__ import annotations

from xdep_sensors.triggers.alerts import (
    RemoteDagRunDeadlineTrigger,
    RemoteDagRunDurationTrigger,
    RemoteTaskInstanceEventTrigger,
)
from xdep_sensors.triggers.waits import TRIGGER_EVENT_STATUSES, RemoteAssetTrigger, RemoteDagRunTrigger
from xdep_sensors.triggers.watchers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger

__all__ = [
    "TRIGGER_EVENT_STATUSES",
    "RemoteAssetEventTrigger",
    "RemoteAssetTrigger",
    "RemoteDagRunDeadlineTrigger",
    "RemoteDagRunDurationTrigger",
    "RemoteDagRunEventTrigger",
    "RemoteDagRunTrigger",
    "RemoteTaskInstanceEventTrigger",
]
