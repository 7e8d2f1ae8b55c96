"""The polling loop every trigger runs: look, hand over, pause; after failures ``RetryPolicy.poll_delay``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from xdep_sensors.client.policy import POLICY
from xdep_sensors.errors import XdepError

T = TypeVar("T")


async def sleep(seconds: float) -> None:
    """Every pause of a polling loop goes through here (tests replace this one function)."""
    await asyncio.sleep(seconds)


class Pace:
    """A loop's interval and its failed looks in a row: how long to wait before the next look."""

    def __init__(self, interval: float):
        self.interval = interval
        self.failures = 0
        self.error: XdepError | None = None

    def ok(self) -> None:
        """A look went through: the next one is an interval away."""
        self.failures, self.error = 0, None

    def failed(self, err: XdepError) -> float:
        """Count a failed look; return the seconds until the next one."""
        self.failures, self.error = self.failures + 1, err
        return self.delay

    @property
    def delay(self) -> float:
        """Seconds until the next look: the interval, or longer after failures."""
        return POLICY.poll_delay(self.interval, self.failures, self.error)

    async def back_off(self, err: XdepError, log: logging.Logger | Any, what: str) -> None:
        """Count a failed look, say so (ERROR when retrying cannot help), and wait for the next one."""
        wait = self.failed(err)
        (log.warning if err.transient else log.error)(
            "upstream error on %s (%d in a row), retrying in %.0fs: %s", what, self.failures, wait, err
        )
        await sleep(wait)


async def paced(
    look: Callable[[], Awaitable[T]],
    *,
    interval: float,
    log: logging.Logger | Any,
    what: str,
    pause: Callable[[T], float] | None = None,
) -> AsyncIterator[T]:
    """Each successful look's result, one look every ``interval`` (or ``pause(result)``) seconds.

    A failed look (``XdepError``) is logged and backs off. The caller handles a result before the pause.
    """
    pace = Pace(interval)
    while True:
        try:
            result = await look()
        except XdepError as err:
            await pace.back_off(err, log, what)
            continue
        pace.ok()
        yield result
        await sleep(interval if pause is None else pause(result))
