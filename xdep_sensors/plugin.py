"""Moved to :mod:`xdep_sensors.plugins.plugin`; this path keeps the entry point of earlier releases
working."""

from __future__ import annotations

from xdep_sensors.plugins.plugin import XdepSensorsPlugin

__all__ = ["XdepSensorsPlugin"]
