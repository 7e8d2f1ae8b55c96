"""The sensors: ``RemoteDagRunSensor`` and ``RemoteAssetSensor``."""

from __future__ import annotations

from xdep_sensors.sensors.asset import RemoteAssetSensor
from xdep_sensors.sensors.dag_run import RemoteDagRunSensor

__all__ = ["RemoteAssetSensor", "RemoteDagRunSensor"]
