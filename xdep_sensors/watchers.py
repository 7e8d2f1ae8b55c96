"""Moved to :mod:`xdep_sensors.triggers`; this path keeps triggers stored by earlier releases loading."""

from __future__ import annotations

from xdep_sensors.triggers.watchers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger

__all__ = ["RemoteAssetEventTrigger", "RemoteDagRunEventTrigger"]
