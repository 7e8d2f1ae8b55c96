"""The feed of API v1 asset events, which have no time filter (``docs/explanation/feeds.md``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from xdep_sensors.client.dialects import listing_ends
from xdep_sensors.core.feeds.base import Feed, Step


class NewestFirstFeed(Feed):
    """A feed over a listing without a server-side time filter: read from the top until the new items
    are found (by the total) or the window's floor is passed."""

    time_filter = False

    def _init_reads(self) -> None:
        self.total: int | None = None  # the listing's size when last read through
        self._backlog: tuple[int, int, datetime | None] | None = None  # a cut read: (offset, total, stop)
        self._top_total: int | None = None  # the total this read's top page gave
        self._backlog_phase = False  # reading on where a read cut at the page cap stopped
        self._stop: datetime | None = None  # below it everything was read (or is before the start)

    def first_step(self) -> Step:
        self._start_read()
        # stop where coverage is needed: the window when warm, else all the way back to the start
        self._stop = self.lower if self.warm else self.floor
        return Step(None, 0, newest_first=True)

    def absorb(self, step: Step, items: list[Any], total: int | None) -> tuple[list[Any], Step | None]:
        if step.offset == 0:
            self._top(items, total)
        low = self._stop
        placed = [(self.position(i), i) for i in items]
        fresh = self._take([p for p in placed if low is None or p[0][0] >= low])
        self._found += len(fresh)
        ended = listing_ends(step.offset, len(items), total)
        passed_floor = bool(placed) and low is not None and placed[-1][0][0] < low
        found_all = not self._backlog_phase and self._expect is not None and self._found >= self._expect
        if not (ended or passed_floor or found_all):
            return fresh, Step(None, step.offset + len(items), newest_first=True)
        if not self._backlog_phase and self._backlog is not None:
            offset, then, self._stop = self._backlog  # an older read was cut at the page cap: continue it
            self._backlog_phase = True
            return fresh, Step(None, offset + ((self._top_total or then) - then), newest_first=True)
        self._backlog = None
        self.total = self._top_total
        self._finish()
        return fresh, None

    def _top(self, items: list[Any], total: int | None) -> None:
        """The top of the listing: what is new since the last read."""
        if self._silent and self.mark is None and items:  # starting at the head: cover its window
            self._stop = self.position(items[0])[0] - self.overlap
        self._top_total = total
        self._backlog_phase = False
        synced = self.warm and self.total is not None and total is not None
        self._expect = total - self.total if synced else None  # type: ignore[operator]

    def cut(self, next_step: Step | None = None) -> None:
        if next_step is None:
            self._finish(behind=True)
            return
        # offsets are relative to this read's total; keep reading down to where this read had to go
        self._backlog = (next_step.offset, self._top_total or 0, self._stop)
        self.total = self._top_total
        self.warm = self.behind = True
