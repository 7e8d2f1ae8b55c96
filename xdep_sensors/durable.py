"""Moved to :mod:`xdep_sensors.triggers.state` (and :mod:`xdep_sensors.core.cursors`); kept for
earlier imports."""

from __future__ import annotations

from xdep_sensors.core.cursors import Cursor
from xdep_sensors.triggers.state import CursorStore, TriggerState, variable_key

__all__ = ["Cursor", "CursorStore", "TriggerState", "variable_key"]
