"""The ``xdep-sensors`` command line (``doctor``)."""

from __future__ import annotations

from xdep_sensors.cli.main import main

__all__ = ["main"]
