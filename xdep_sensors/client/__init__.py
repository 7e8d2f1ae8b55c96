"""Pure async API layer for a remote Airflow REST API; imports nothing from Airflow."""

from __future__ import annotations

from xdep_sensors.client.client import RemoteAirflowClient
from xdep_sensors.client.records import Asset, AssetEvent, Dag, DagRun, TaskInstance
from xdep_sensors.client.session import ClientConfig, Transport, normalize_base_url

__all__ = [
    "Asset",
    "AssetEvent",
    "ClientConfig",
    "Dag",
    "DagRun",
    "RemoteAirflowClient",
    "TaskInstance",
    "Transport",
    "normalize_base_url",
]
