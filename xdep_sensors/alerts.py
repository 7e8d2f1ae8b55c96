"""Moved to :mod:`xdep_sensors.triggers`; this path keeps triggers stored by earlier releases loading."""

from __future__ import annotations

from xdep_sensors.triggers.alerts import (
    RemoteDagRunDeadlineTrigger,
    RemoteDagRunDurationTrigger,
    RemoteTaskInstanceEventTrigger,
)

__all__ = ["RemoteDagRunDeadlineTrigger", "RemoteDagRunDurationTrigger", "RemoteTaskInstanceEventTrigger"]
