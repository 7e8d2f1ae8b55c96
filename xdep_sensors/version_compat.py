"""The running Airflow's version, for the few places that behave differently by release."""

from __future__ import annotations

import functools

from xdep_sensors.client.client import version_tuple


@functools.cache
def airflow_version() -> tuple[int, ...]:
    """The running Airflow's version as a tuple, e.g. ``(3, 3, 2)``."""
    from airflow import __version__

    return version_tuple(__version__)
