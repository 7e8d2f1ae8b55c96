"""Hooks: an Airflow connection turned into a client of the upstream deployment."""

from __future__ import annotations

from xdep_sensors.hooks.remote_airflow import RemoteAirflowHook

__all__ = ["RemoteAirflowHook"]
