"""The classpath a trigger is stored under: one fixed public path, whichever module defines it."""

from __future__ import annotations

PUBLIC_MODULE = "xdep_sensors.triggers"


def classpath(cls: type) -> str:
    """``xdep_sensors.triggers.<Name>`` for the library's triggers; a subclass defined elsewhere keeps
    its own.

    Airflow stores this path (trigger table, ``start_trigger_args``, watchers in serialized DAGs) and
    imports it later: a module move must not strand what a deployment holds.
    """
    if cls.__module__.startswith(PUBLIC_MODULE + ".") and not cls.__qualname__.startswith("_"):
        return f"{PUBLIC_MODULE}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"
