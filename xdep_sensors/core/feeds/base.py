"""What every feed is: a read position (the mark), an overlap window behind it, the keys read in it."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# How far behind its mark a feed looks again for items that became visible late (docs/explanation/feeds.md).
OVERLAP = timedelta(seconds=float(os.environ.get("XDEP_SENSORS_FEED_OVERLAP", "60")))

Key = Hashable
Position = Callable[[Any], "tuple[datetime, Key]"]


@dataclass(frozen=True)
class Step:
    """One request of a read: items at or after ``lower`` (None: no time filter), from ``offset``."""

    lower: datetime | None
    offset: int
    newest_first: bool = False
    anchor: tuple[Key, datetime] | None = None  # the known item expected first on this page
    known: int | None = None  # a warm read's top page: items of the window read before
    head: bool = False  # a look at the newest item only: where a feed that starts "now" begins
    skipped: int | None = None  # newest first: the page at this offset was skipped to reach this one
    backfill: tuple[int, int] | None = None  # a skipped page read after all: (its end, where to read on)


class Feed:
    """Read position over one upstream listing, planned a :class:`Step` at a time.

    :meth:`first_step`, then :meth:`absorb` each page until no next step (:meth:`cut` at the page cap).

    :param start: the earliest time of interest (items before it are never new); ``None``: all.
    :param position: ``item -> (time, key)``; an item's identity is ``(key, time)``.
    :param at_head: start at the listing's newest item: what is visible now counts as read.
    :param ordered: whether the listing can be ordered by time (not Airflow 2's task instances):
        unordered listings re-read their whole window on every read.
    """

    time_filter: bool  # whether the server filters the listing by time

    def __init__(
        self,
        start: datetime | None,
        *,
        position: Position,
        overlap: timedelta = OVERLAP,
        at_head: bool = False,
        ordered: bool = True,
    ):
        self.ordered = ordered
        self._silent = at_head  # the first read only finds the position
        self.floor = start
        self.mark = start
        self.position = position
        self.overlap = overlap
        self.seen: dict[tuple[Key, datetime], None] = {}  # ordered set of (key, time) in the window
        self.warm = False  # ``seen`` holds every item of the window
        self.behind = False  # the last read stopped at the page cap
        self._settled: datetime | None = None  # the mark when a read last covered the whole window
        self._covering = False  # the current read started at the window's lower bound
        self._found = 0  # per read: new items found, and how many the listing's total promises
        self._expect: int | None = None
        self.budget = 1  # requests the current read may make
        self._init_reads()

    def _init_reads(self) -> None:
        """The algorithm's own read state (each subclass sets its fields here)."""

    @property
    def established(self) -> bool:
        """A first read went through: every item the feed sees from now on is delivered."""
        return self.warm and not self._silent

    @property
    def lower(self) -> datetime | None:
        """Where a read must start covering: the overlap window behind the mark, never before the start."""
        if self.mark is None:
            return None
        # from the last read that covered the window: a catch-up that moved the mark far ahead must
        # still look back for items that became visible while it ran
        settled = self.mark if self._settled is None else min(self.mark, self._settled)
        low = settled - self.overlap
        return max(low, self.floor) if self.floor is not None else low

    # a read ------------------------------------------------------------------------------------

    def first_step(self) -> Step:
        """The first request of the next read."""
        raise NotImplementedError

    def absorb(self, step: Step, items: list[Any], total: int | None) -> tuple[list[Any], Step | None]:
        """Take one page: the items never seen before, and the next step (None: read done)."""
        raise NotImplementedError

    def cut(self, next_step: Step | None = None) -> None:
        """The read stopped at the page cap: the next read continues after it."""
        raise NotImplementedError

    def _start_read(self) -> None:
        self._found = 0
        self._covering = True

    # helpers ------------------------------------------------------------------------------------

    def _take(self, placed: list[tuple[tuple[datetime, Key], Any]]) -> list[Any]:
        fresh: list[Any] = []
        for (when, key), item in placed:
            if self._is_new(when, key):
                self.seen[(key, when)] = None
                fresh.append(item)
                if self.mark is None or when > self.mark:
                    self.mark = when
        return [] if self._silent else fresh

    def _is_new(self, when: datetime, key: Key) -> bool:
        """Not read before, and not before the start."""
        return (self.floor is None or when >= self.floor) and (key, when) not in self.seen

    def _finish(self, behind: bool = False) -> None:
        self.warm = True
        self.behind = behind
        self._silent = self._silent and behind
        if self._covering and not behind:
            self._settled = self.mark
        low = self.lower
        if low is not None:
            self.seen = {kt: None for kt in self.seen if kt[1] >= low}

    # other feeds from this one -------------------------------------------------------------------

    def derive(self, position: Position) -> Feed:
        """A feed over one asset of this listing, from this position; its first read covers the window."""
        return type(self)(self.lower, position=position, overlap=self.overlap, ordered=self.ordered)

    @classmethod
    def merged(cls, feeds: list[Feed], position: Position, head: datetime | None = None) -> Feed:
        """A feed over a wider listing (every asset) that continues from where ``feeds`` all were.

        Its first read covers the window behind the lowest of their marks, or behind ``head`` (a quiet
        feed's mark is old, yet it read up to ``head``).
        """
        first = feeds[0]
        marks = [head] if head is not None else [f.mark for f in feeds if f.mark is not None]
        feed = type(first)(
            None, position=position, overlap=first.overlap, ordered=first.ordered, at_head=not marks
        )
        if marks:
            feed.mark = feed._settled = min(marks)
            feed.floor = feed.mark - feed.overlap
            for f in feeds:
                feed.seen.update(f.seen)
        return feed
