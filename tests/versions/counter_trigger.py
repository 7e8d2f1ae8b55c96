"""A test-only AssetWatcher trigger: read a counter from TriggerState, add one, write it, fire it.

Each time a triggerer (re)starts the trigger it fires the next number, so the fired numbers prove
that the state was read and written durably: without a durable store every start fires 1.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from xdep_sensors.triggers.state import TriggerState


class CounterTrigger(BaseEventTrigger):
    """Fire ``{"n": previous n + 1, "backend": ...}`` once per start, then idle."""

    def __init__(self, *, key: str) -> None:
        super().__init__()
        self.key = key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"key": self.key}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = TriggerState.for_trigger(self)
        n = ((await state.aget(self.key)) or {}).get("n", 0) + 1
        await state.aset(self.key, {"n": n})
        self.log.info("counter %s: fired %d, kept in %s", self.key, n, state.backend)
        yield TriggerEvent({"n": n, "backend": state.backend})
        await asyncio.Event().wait()  # a watcher trigger keeps running; idle until cancelled
