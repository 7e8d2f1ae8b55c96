"""Moved to :mod:`xdep_sensors.hooks`; this path keeps the classpath of earlier releases importing."""

from __future__ import annotations

from xdep_sensors.hooks.remote_airflow import RemoteAirflowHook, config_from_connection

__all__ = ["RemoteAirflowHook", "config_from_connection"]
