"""Process-wide shared state, one pattern for all of it: a namespace per event loop.

``async_to_sync`` and tests make many loops, and what one loop made (sessions, futures, tasks) must
never be used from another.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable, MutableMapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PerLoop(Generic[K, V]):
    """A mapping per running event loop.

    :param weak: a value also goes once nothing else holds it (e.g. reads shared while a poll uses them).
    """

    def __init__(self, *, weak: bool = False) -> None:
        self._weak = weak
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MutableMapping[K, V]] = (
            weakref.WeakKeyDictionary()
        )

    def here(self) -> MutableMapping[K, V]:
        """This event loop's mapping."""
        loop = asyncio.get_running_loop()
        space = self._loops.get(loop)
        if space is None:
            space = self._loops[loop] = weakref.WeakValueDictionary() if self._weak else {}
        return space

    def get(self, key: K, make: Callable[[], V]) -> V:
        """This loop's value for ``key``, made on first use."""
        space = self.here()
        value = space.get(key)
        if value is None:
            value = space[key] = make()
        return value

    def discard(self, key: K) -> None:
        """Forget this loop's value for ``key`` (if any)."""
        self.here().pop(key, None)

    def everywhere(self) -> list[V]:
        """Every loop's values (a snapshot; e.g. for a sampler thread with no loop of its own)."""
        return [value for space in list(self._loops.values()) for value in list(space.values())]

    def drop_loop(self, loop: asyncio.AbstractEventLoop) -> list[V]:
        """Forget everything of ``loop`` (e.g. a finished test's loop); return what it held."""
        return list(self._loops.pop(loop, {}).values())
