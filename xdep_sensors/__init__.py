"""Pull-based cross-deployment sensors and AssetWatcher triggers for Apache Airflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xdep_sensors.version import __version__

# Public names are imported lazily: the provider entry point imports this package while Airflow's
# providers manager is still starting, before the SDK can be imported safely.
_LAZY = {
    "RemoteAirflowHook": "xdep_sensors.hooks",
    "RemoteDagRunSensor": "xdep_sensors.sensors",
    "RemoteAssetSensor": "xdep_sensors.sensors",
}

if TYPE_CHECKING:
    from xdep_sensors.hooks import RemoteAirflowHook
    from xdep_sensors.sensors import RemoteAssetSensor, RemoteDagRunSensor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xdep_sensors' has no attribute {name!r}")


__all__ = ["RemoteAirflowHook", "RemoteAssetSensor", "RemoteDagRunSensor", "__version__"]
