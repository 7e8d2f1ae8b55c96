"""The classpath a trigger is stored under: one fixed public path, whichever module defines it."""

from __future__ import annotations

PUBLIC_MODULE = "xdep_sensors.triggers"


def classpath(cls: type) -> str:
    """``xdep_sensors.triggers.<Name>`` for our triggers (Airflow stores it); others keep their own."""
    if cls.__module__.startswith(PUBLIC_MODULE + ".") and not cls.__qualname__.startswith("_"):
        return f"{PUBLIC_MODULE}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"
