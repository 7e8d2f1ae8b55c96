"""The shared poll: one look per interval for every deferred sensor on one connection, in the triggerer.

``SharedPoller`` wakes a trigger only when its view changed (or every ``HEARTBEAT_S``); ``LoneLooks``
is the same interface for a trigger that polls alone. See ``docs/guides/running-at-scale.md``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import types
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.core.needs import RunNeed, RunNeedKind
from xdep_sensors.core.pacing import Pace, sleep
from xdep_sensors.core.registry import PerLoop
from xdep_sensors.core.shared_reads import RunChanges, SharedReads, asset_reads_for
from xdep_sensors.core.sources import BatchSource
from xdep_sensors.errors import XdepError

if TYPE_CHECKING:
    from xdep_sensors.core.decisions import Decision

log = logging.getLogger(__name__)

# Set XDEP_SENSORS_SHARED_POLLING=0 to give every deferred sensor its own poll loop.
SHARED_POLLING = os.environ.get("XDEP_SENSORS_SHARED_POLLING", "1").lower() not in ("0", "false", "no")

HEARTBEAT_S = 600.0  # an unchanged wait still reports (and logs) this often
STEP_WORKERS = 32  # the client's connection pool size
YIELD_S = 0.02  # a worker hands the loop back this often
HAND_OVER_BATCH = 100  # outcomes handed to triggers per loop turn
_clock = time.monotonic


def _lower(bounds: dict[str, datetime | None], dag_id: str, bound: datetime | None) -> datetime | None:
    """The lower of a DAG's first-look bounds so far and ``bound`` (``None``: no bound)."""
    if dag_id not in bounds:
        return bound
    previous = bounds[dag_id]
    return None if bound is None or previous is None else min(bound, previous)


@types.coroutine
def _pass_turn() -> Any:
    """Let the loop run other callbacks (``asyncio.sleep(0)`` without being a sleep)."""
    yield


class _Subscriber:
    """One wait's place in a shared poll: its own context manager and mailbox.

    No queue, event or generator per wait: thousands of them would weigh on every full garbage collection.
    """

    __slots__ = ("poller", "probe", "every_look", "last", "delivered", "_pending", "_waiter", "_timer")

    def __init__(self, probe: Any, every_look: bool = False, poller: SharedPoller | None = None):
        self.poller = poller
        self.probe = probe
        self.every_look = every_look
        self.last: Any = None
        self.delivered = float("-inf")
        self._pending: list[Any] | None = None  # outcomes not taken yet (rare: the trigger was busy)
        self._waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None

    def put(self, outcome: Any) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._settle(outcome)
        elif self._pending is None:
            self._pending = [outcome]
        else:
            self._pending.append(outcome)

    def get(self, timeout: float | None = None) -> asyncio.Future:
        """A future (nothing more is kept per trigger) of the next outcome; ``None`` after ``timeout``."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if self._pending:
            waiter.set_result(self._pending.pop(0))
            if not self._pending:
                self._pending = None
            return waiter
        self._waiter = waiter
        if timeout is not None:
            self._timer = loop.call_later(timeout, _expire, self, context=_NO_CONTEXT)
        return waiter

    def _settle(self, outcome: Any) -> None:
        waiter, timer = self._waiter, self._timer
        self._waiter = self._timer = None
        if timer is not None:
            timer.cancel()
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    async def __aenter__(self) -> _Subscriber:
        if self.poller is not None:
            self.poller._join(self)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._waiter = self._timer = None
        if self.poller is not None:
            self.poller._leave(self)


_NO_CONTEXT = contextvars.Context()  # deadline timers run here: no context copy per timer


def _expire(sub: _Subscriber) -> None:
    sub._settle(None)


class Narration:
    """What a wait logs: a view when it changes (INFO), a heartbeat every ``HEARTBEAT_S``, else DEBUG."""

    def __init__(self, log: Any):
        self.log = log
        self.said: str | None = None  # the message last logged at INFO
        self.said_at = 0.0

    def trouble(self) -> None:
        """The upstream failed a look: say what it shows once it answers again."""
        self.said = None

    def tell(self, outcome: Decision) -> None:
        now = _clock()
        if outcome.done or outcome.message != self.said:
            self.log.info("%s", outcome.message)
            self.said, self.said_at = outcome.message, now
        elif now - self.said_at >= HEARTBEAT_S:
            self.log.info("still waiting: %s", outcome.message)
            self.said_at = now
        else:
            self.log.debug("%s", outcome.message)


class LoneLooks:
    """A trigger's own looks when polls are not shared, behind the subscription's interface."""

    def __init__(
        self,
        probe: Callable[[RemoteAirflowClient], Awaitable[Decision]],
        client: RemoteAirflowClient,
        interval: float,
    ):
        self.probe, self.client, self.interval = probe, client, interval
        self._looked = False
        self._pace = Pace(interval)

    async def __aenter__(self) -> LoneLooks:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def get(self, timeout: float | None = None) -> Any:
        """The next look's decision or error; ``None`` if ``timeout`` passes before it is due."""
        if self._looked:
            wait = self._pace.delay
            if timeout is not None and timeout < wait:
                await sleep(timeout)
                return None
            await sleep(wait)
        self._looked = True
        try:
            result = await self.probe(self.client)
        except XdepError as err:
            if err.transient:
                self._pace.failed(err)
            else:
                self._pace.ok()
            return err
        self._pace.ok()
        return result


class SharedPoller:
    """One poll loop for every deferred sensor on one connection and interval, in this event loop."""

    def __init__(self, config: ClientConfig, interval: float, on_empty: Callable[[], None]):
        self.config = config
        self.interval = interval
        self.subscribers: dict[int, _Subscriber] = {}
        self._on_empty = on_empty
        self._task: asyncio.Task | None = None
        self.cycles = 0
        self._asset_reads: SharedReads | None = None
        self.run_changes = RunChanges()  # kept across cycles

    def subscribe(self, probe: Any, every_look: bool = False) -> _Subscriber:
        """A place in the poll, to ``async with``; the loop runs while it has subscribers.

        ``get()`` returns a look's outcome when it is a new object, at least every ``HEARTBEAT_S``, or
        every look with ``every_look``.
        """
        return _Subscriber(probe, every_look, self)

    def _join(self, sub: _Subscriber) -> None:
        self.subscribers[id(sub)] = sub
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    @property
    def asset_reads(self) -> SharedReads:
        """The connection's asset-event reads (shared with the watchers' stream)."""
        if self._asset_reads is None:
            self._asset_reads = asset_reads_for(self.config)
        return self._asset_reads

    def _leave(self, sub: _Subscriber) -> None:
        self.subscribers.pop(id(sub), None)
        if not self.subscribers:
            self._on_empty()
            if self._task is not None and not self._task.done():
                self._task.cancel()

    def _needs(self, subs: list[_Subscriber]) -> BatchSource:
        """This cycle's source, from what the waits need."""
        first_bounds: dict[str, datetime | None] = {}
        first_waits = 0
        started = ended = False
        asset_targets: set[int] = set()
        unresolved: list[tuple[str, str]] = []  # one listing finds many (3.2+)
        dialect = self.client.known_dialect
        by_name = dialect.has_asset_names if dialect else True
        for sub in subs:
            need = sub.probe.need()
            if isinstance(need, RunNeed):
                if need.kind is RunNeedKind.FIRST_LOOK:
                    first_waits += 1
                    first_bounds[need.dag_id] = _lower(first_bounds, need.dag_id, need.bound)
                started = started or need.kind is RunNeedKind.RUN_CHANGES
                ended = ended or need.from_changes
                continue
            probe = sub.probe
            if not need.asset_ids and self.asset_reads.asset_ids:
                probe.adopt_ids(self.asset_reads.asset_ids, bool(dialect and dialect.has_asset_names))
                need = probe.need()
            unresolved += [ref.lookup_key(by_name) for ref in probe.refs if ref.label not in probe.ids]
            asset_targets |= need.asset_ids
        self.run_changes.keep(started, ended)
        if first_waits:
            self.run_changes.look_from(datetime.now(timezone.utc))
        if not asset_targets:
            self.asset_reads.leave(self)
        source = BatchSource(
            self.client,
            first_bounds,
            self.run_changes if ended else None,
            self.asset_reads,
            asset_targets,
            set(first_bounds),
            first_waits,
            read_started=started,
            reader=(self, self.interval / 2),
        )
        source.unresolved = unresolved
        return source

    async def _loop(self) -> None:
        self.client = RemoteAirflowClient(self.config)
        pace = Pace(self.interval)
        try:
            while self.subscribers:
                subs = list(self.subscribers.values())
                source = self._needs(subs)
                await source.prefetch()
                results = await self._step_all(subs, source)
                del source  # the cycle's listings go now, not when the next cycle replaces them
                self.cycles += 1
                now = _clock()
                handed = 0
                for sub, result in zip(subs, results):
                    if result is sub.last and not sub.every_look and now - sub.delivered < HEARTBEAT_S:
                        continue
                    sub.last, sub.delivered = result, now
                    sub.put(result)
                    handed += 1
                    if handed % HAND_OVER_BATCH == 0:  # let the woken triggers run, a few at a time
                        await _pass_turn()
                log.debug(
                    "shared poll of %s every %gs: %d waits looked, %d handed over",
                    self.config.base_url,
                    self.interval,
                    len(subs),
                    handed,
                )
                errors = [r for r in results if isinstance(r, XdepError) and r.transient]
                if errors and len(errors) == len(results):  # the whole upstream struggling: back off
                    pace.failed(max(errors, key=lambda e: getattr(e, "retry_after", None) or 0))
                else:
                    pace.ok()
                await sleep(pace.delay)
        except Exception as exc:  # a bug in the loop must fail the waits, not leave them hanging
            for sub in list(self.subscribers.values()):
                sub.put(exc)
            raise
        finally:
            self.asset_reads.leave(self)
            await self.client.close()

    @staticmethod
    async def _step_all(subs: list[_Subscriber], source: BatchSource) -> list[Any]:
        """Each subscriber's look (decision or exception), in order, by a few workers, not a task each.

        Most steps complete without suspending; a worker hands the loop back every ``YIELD_S``.
        """
        results: list[Any] = [None] * len(subs)
        turns = iter(range(len(subs)))
        loop = asyncio.get_running_loop()
        # one time budget per loop turn, shared by the workers
        budget: dict[str, Any] = {"until": _clock() + YIELD_S, "spent": False}

        def new_turn() -> None:
            budget["until"], budget["spent"] = _clock() + YIELD_S, False

        async def work() -> None:
            for i in turns:
                probe = subs[i].probe
                try:
                    result = probe.unchanged(source)
                    results[i] = result if result is not None else await probe.step(source)
                except Exception as exc:  # noqa: BLE001 - delivered to that subscriber
                    results[i] = exc
                if budget["spent"] or _clock() > budget["until"]:
                    if not budget["spent"]:
                        budget["spent"] = True
                        loop.call_soon(new_turn)  # runs before the workers resume
                    await _pass_turn()

        await asyncio.gather(*(work() for _ in range(min(STEP_WORKERS, len(subs)))))
        return results


class PollerRegistry:
    """The shared pollers of this process, per event loop, connection and interval."""

    def __init__(self) -> None:
        self.pollers: PerLoop[tuple[ClientConfig, float], SharedPoller] = PerLoop()

    def get(self, config: ClientConfig, interval: float) -> SharedPoller:
        key = (config, float(interval))

        def make() -> SharedPoller:
            return SharedPoller(config, float(interval), on_empty=lambda: self.pollers.discard(key))

        return self.pollers.get(key, make)


POLLERS = PollerRegistry()
