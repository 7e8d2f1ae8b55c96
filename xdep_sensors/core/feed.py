"""Reading an upstream listing as a feed: how far it has been read, and what is new since.

Every wait and watcher reads upstream listings (asset events, runs that ended, task instances that
ended) through a :class:`Feed`: a keyset position (the newest item's time, the *mark*) plus the
items read within an overlap window behind it. This module is pure: a feed plans each request as
a :class:`Step` and absorbs each page; ``RemoteAirflowClient.read_feed`` sends them.

Why an overlap window: an item becomes visible upstream after its timestamp is set (its
transaction commits later; replicas' clocks differ), so a later poll may find an item older than
the mark. Each poll re-covers ``[mark - overlap, ...)`` and de-duplicates by (key, time).

Why it stays cheap: a warm feed does not re-read the window. It asks for the window newest first;
the listing's total, less the window's items it has read, is how many items are unseen (new ones,
and any that landed late inside the window), and it reads down only until it has found them. A quiet
poll is one request, a busy one ``ceil(new / page size)`` requests at the page size the server
returns, and a late item costs the pages down to it. Where the late items this feed found lately sat
two pages or more below the top more often than right below it, a read skips the page below the top
and reads the next: the first item there tells, by its offset less the known items newer than it,
whether anything unseen is in the page skipped, which is then read (see :meth:`Feed.skip_ahead`).
The end of a listing is told by its total (or an empty page), never by a page shorter than asked
for: ``[api] maximum_page_limit`` may be below 100. Without a total, a warm read continues from the
last item it knows (the *anchor*) and re-reads the window once if anything landed inside it.
A read cut at the page cap keeps its position and continues there on the next poll.

API v1 asset events have no time filter: their feed reads newest-first and uses the listing's
``total_entries`` to know how many items are new, stopping as soon as it has found them.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from xdep_sensors.client.dialects import PAGE_LIMIT, listing_ends

# The overlap window. Seen on loopback Airflow 3.3.2 and 2.11.2 (tests/integration/test_feed_live.py,
# TestVisibilityLag prints it): asset events and runs' end dates are listed within 0.01-0.7 s of their
# timestamps (Airflow 2's even "before" them by up to 0.7 s: the scheduler's clock vs ours). One
# minute covers a slow commit under load and clock differences between an upstream's api-server,
# scheduler and worker hosts with a wide margin; a warm feed does not pay for it in requests (only a
# late item does, in pages proportional to its lateness), only in memory (the window's keys).
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
    known: int | None = None  # a warm read's top page: how many items of the window were read before
    head: bool = False  # a look at the newest item only: where a feed that starts "now" begins
    skipped: int | None = None  # newest first: this page was reached by skipping the page at this offset
    backfill: tuple[int, int] | None = (
        None  # a skipped page read after all: (where it ends, where to read on)
    )


class Feed:
    """Read position over one upstream listing: mark, overlap window, and the keys read in it.

    :param start: the earliest time of interest (items before it are never new); ``None``: all.
    :param time_filter: whether the listing filters by time server-side (else: newest-first + totals).
    :param position: ``item -> (time, key)``; an item's identity is ``(key, time)``.
    :param at_head: start at the listing's newest item: what is visible now counts as read (a shared
        read's subscribers cover it with their own catch-up), only later items are new.
    :param ordered: whether the listing can be ordered by time (Airflow 2's task-instance listing
        cannot): unordered listings re-read their whole window on every read.
    """

    def __init__(
        self,
        start: datetime | None,
        *,
        time_filter: bool,
        position: Position,
        overlap: timedelta = OVERLAP,
        at_head: bool = False,
        ordered: bool = True,
    ):
        self.ordered = ordered
        self._silent = at_head  # the first read only establishes the position
        self.floor = start
        self.mark = start
        self.time_filter = time_filter
        self.position = position
        self.overlap = overlap
        self.seen: dict[tuple[Key, datetime], None] = {}  # insertion-ordered set of (key, time) in the window
        self.warm = False  # ``seen`` holds every item of the window: the next read may start at the anchor
        self.behind = False  # the last read stopped at the page cap: more is waiting upstream
        self.total: int | None = None  # no-time-filter listings: the listing's size when last read through
        self._backlog: tuple[int, int, datetime | None] | None = (
            None  # no-time-filter: (offset, total then, stop)
        )
        self._found = 0  # no-time-filter listings, per read: new items found, expected, top total, phase
        self._expect: int | None = None
        self._top_total: int | None = None
        self._phase = "top"
        self._stop: datetime | None = None
        self._resume: datetime | None = None  # time-filtered listings: keyset time where a cut read continues
        self._settled: datetime | None = None  # the mark when a read last covered the whole window
        self._covering = False  # the current read started at the window's lower bound
        self.budget = 1  # requests the current read may make (``RemoteAirflowClient.read_feed`` sets it)
        # pages below a warm read's top page where its last late items were found (1: right below it)
        self.late_depths: deque[int] = deque(maxlen=32)
        self._page_size = PAGE_LIMIT  # items per page, as the server last returned a full top page

    @property
    def established(self) -> bool:
        """A first read went through: from here on, every item the feed sees is delivered."""
        return self.warm and not self._silent

    # planning ---------------------------------------------------------------------------------

    @property
    def lower(self) -> datetime | None:
        """Where a read must start covering: the overlap window behind the mark, never before the start."""
        if self.mark is None:
            return None
        # from the mark of the last read that covered the window: a catch-up that moved the mark far
        # ahead must still look back for items that became visible while it ran
        settled = self.mark if self._settled is None else min(self.mark, self._settled)
        low = settled - self.overlap
        return max(low, self.floor) if self.floor is not None else low

    def _in_window(self) -> list[tuple[Key, datetime]]:
        low = self.lower
        return [kt for kt in self.seen if low is None or kt[1] >= low]

    def first_step(self) -> Step:
        """The first request of the next read."""
        self._found = 0
        self._covering = True
        if not self.time_filter:
            # stop where coverage is needed: the window when warm, else all the way back to the start
            self._stop = self.lower if self.warm else self.floor
            return Step(None, 0, newest_first=True)
        if self._silent and self.mark is None:
            if not self.ordered:
                # an unordered listing has no "newest first" page to find its head on (Airflow 2.9's
                # task-instance batch returns every match at once): cover the window behind now instead
                self.mark = datetime.now(timezone.utc)
                return Step(self.lower, 0)
            return Step(None, 0, newest_first=True, head=True)
        if not self.ordered:
            return Step(self.lower, 0)
        if self._resume is not None:  # the last read was cut at the page cap: continue it (keyset)
            last_time, self._resume = self._resume, None
            self._covering = False
            return Step(last_time, sum(1 for (_, t) in self.seen if t == last_time))
        if not self.warm:
            return Step(self.lower, 0)
        known = len(self._in_window())
        if not known:
            return Step(self.lower, 0)
        return Step(self.lower, 0, newest_first=True, known=known)

    def absorb(self, step: Step, items: list[Any], total: int | None) -> tuple[list[Any], Step | None]:
        """Take one page; return the items never seen before and the next step (None: read done)."""
        if not self.time_filter:
            return self._absorb_newest_first(step, items, total)
        placed = [(self.position(i), i) for i in items]
        if step.head:
            if not placed:  # an empty listing: everything that appears later is new
                self._silent = False
                self._finish()
                return [], None
            self.mark = max(when for (when, _), _ in placed)
            return [], Step(self.lower, 0)
        last = listing_ends(step.offset, len(items), total)
        if not self.ordered:
            fresh = self._take(placed)
            if last:
                self._finish()
                return fresh, None
            return fresh, Step(step.lower, step.offset + len(items))
        if step.known is not None:
            # Newest first only when the whole window fits in this read's pages: a read cut half-way
            # down would hand consumers newer items before older ones. Otherwise (a burst, or no total
            # to count with) read on from the newest known item, oldest first.
            unseen = None if total is None else total - step.known  # new items, and any that landed late
            on_page = sum(1 for (when, key), _ in placed if (key, when) not in self.seen)
            if unseen is None or (on_page < unseen and total > max(len(items), 1) * self.budget):  # type: ignore[operator]
                window = sorted(self._in_window(), key=lambda kt: (kt[1], str(kt[0])))
                return [], Step(self.lower, len(window) - 1, anchor=window[-1])
            self._expect = unseen
        if step.anchor is not None:
            # the first item must be known and at the anchor's time (tied items may come in any order)
            first_known = (
                bool(placed)
                and placed[0][0][0] == step.anchor[1]
                and (placed[0][0][1], placed[0][0][0]) in self.seen
            )
            later_known = any((k, t) in self.seen for (t, k), _ in placed[1:])
            added_up = total is None or not last or total == step.offset + len(items)
            if not first_known or later_known or not added_up:
                # Something landed inside the window (or was deleted). Late items are mostly recent: read
                # the window newest-first until the total's count of unseen items is found.
                if total is None:
                    return [], Step(self.lower, 0)
                self._expect, self._found = total - (step.offset + 1), 0
                return [], Step(self.lower, 0, newest_first=True)
        if step.newest_first:
            return self._absorb_down(step, placed, last, total)
        fresh = self._take(placed)
        if last:
            self._finish()
            return fresh, None
        last_time = placed[-1][0][0]
        at_last = sum(1 for (_, t) in self.seen if t == last_time)
        return fresh, Step(last_time, at_last)

    def _absorb_down(
        self, step: Step, placed: list[tuple[tuple[datetime, Key], Any]], last: bool, total: int | None
    ) -> tuple[list[Any], Step | None]:
        """A page of a newest-first read of the window: take it; go on until the unseen items are found."""
        if step.known is not None:  # the top page: its length is the server's page size
            self._page_size = max(len(placed), 1)
        size = self._page_size
        if step.known is None and step.offset:  # below the top page: where late items lie
            self.late_depths.extend(
                (step.offset + i) // size
                for i, ((when, key), _) in enumerate(placed)
                if self._is_new(when, key)
            )
        fresh = self._take(placed)
        self._found += len(fresh)
        done = self._found >= (self._expect or 0)
        below = step.offset + len(placed)
        if step.skipped is not None and not done and self._unseen_above(step.offset, placed) != 0:
            # something unseen may be in the page skipped: read it, then on below this page
            return fresh, Step(self.lower, step.skipped, newest_first=True, backfill=(step.offset, below))
        if last or done:
            self._finish()
            return fresh, None
        if step.backfill is not None and below < step.backfill[0]:  # the page skipped, still
            return fresh, Step(self.lower, below, newest_first=True, backfill=step.backfill)
        if step.backfill is not None:
            below = step.backfill[1]  # the skipped page is read: on below the page read after skipping it
        elif step.known is not None and self.skip_ahead() and total is not None and total > below + size:
            return fresh, Step(self.lower, below + size, newest_first=True, skipped=below)
        return fresh, Step(self.lower, below, newest_first=True)

    def skip_ahead(self) -> bool:
        """Whether a read should skip the page below its top page and read the next one first.

        For a late item ``j`` pages below the top page, reading down costs ``j`` requests; skipping one
        page costs 1 for ``j = 2``, 2 for ``j = 1`` (the skipped page is read after all) and ``j - 1``
        below. So it pays when the late items found lately lay deeper than the page right below the
        top more often than on it (late commits of seconds on a busy upstream; never with sub-second ones).
        """
        right_below = sum(1 for j in self.late_depths if j == 1)
        return len(self.late_depths) - right_below > right_below

    def _unseen_above(self, offset: int, placed: list[tuple[tuple[datetime, Key], Any]]) -> int | None:
        """How many items above ``offset`` of this newest-first listing are still unseen (None: cannot tell).

        The page's first item is at ``offset``: every item newer than it is above it. Known items tied
        with it may be above or below it, so a count above zero may be only them (the caller reads then).
        """
        if not placed:
            return None
        first = placed[0][0][0]
        newer = sum(1 for (_, when) in self.seen if when > first)
        return offset - newer

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
        """Not read before, and not before the start (items before it are never new)."""
        return (self.floor is None or when >= self.floor) and (key, when) not in self.seen

    def _finish(self, behind: bool = False) -> None:
        self.warm = True
        self.behind = behind
        self._silent = self._silent and behind  # the position is established once the first read is through
        if self._covering and not behind:
            self._settled = self.mark
        low = self.lower
        if low is not None:
            self.seen = {kt: None for kt in self.seen if kt[1] >= low}

    def _absorb_newest_first(
        self, step: Step, items: list[Any], total: int | None
    ) -> tuple[list[Any], Step | None]:
        """v1: newest-first pages; the total says how many are new, the window floor says where to stop."""
        low = self._stop
        if step.offset == 0:  # the top of the listing: what is new since the last read
            if self._silent and self.mark is None and items:  # starting at the head: cover its window
                low = self._stop = self.position(items[0])[0] - self.overlap
            self._top_total = total
            self._phase = "top"
            synced = self.warm and self.total is not None and total is not None
            self._expect = total - self.total if synced else None  # type: ignore[operator]
        placed = [(self.position(i), i) for i in items]
        # below the stop point everything was read before (or is before the start)
        fresh = self._take([p for p in placed if low is None or p[0][0] >= low])
        self._found += len(fresh)
        ended = listing_ends(step.offset, len(items), total)
        passed_floor = bool(placed) and low is not None and placed[-1][0][0] < low
        found_all = self._phase == "top" and self._expect is not None and self._found >= self._expect
        if not (ended or passed_floor or found_all):
            return fresh, Step(None, step.offset + len(items), newest_first=True)
        if self._phase == "top" and self._backlog is not None:
            offset, then, self._stop = self._backlog  # an older read was cut at the page cap: continue it
            self._phase = "backlog"
            return fresh, Step(None, offset + ((self._top_total or then) - then), newest_first=True)
        self._backlog = None
        self.total = self._top_total
        self._finish()
        return fresh, None

    def cut(self, next_step: Step | None = None) -> None:
        """The read stopped at the page cap: keep what was read; the next read continues after it."""
        if not self.time_filter and next_step is not None:
            # offsets are relative to this read's total; keep reading down to where this read had to go
            self._backlog = (next_step.offset, self._top_total or 0, self._stop)
            self.total = self._top_total
            self.warm = self.behind = True
            return
        if next_step is not None:
            self._resume = next_step.lower
        self._finish(behind=True)

    def derive(self, position: Position) -> Feed:
        """A feed over a narrower listing (one asset of this one) that continues from this position.

        Before this feed's window everything was read already: that is the new feed's floor. Its
        first read covers the window again (a few items of one asset; consumers de-duplicate).
        """
        return Feed(
            self.lower,
            time_filter=self.time_filter,
            position=position,
            overlap=self.overlap,
            ordered=self.ordered,
        )

    @classmethod
    def merged(cls, feeds: list[Feed], position: Position, head: datetime | None = None) -> Feed:
        """A feed over a wider listing (every asset) that continues from where ``feeds`` all were.

        Its first read covers the window behind the lowest of their marks (or behind ``head``, the
        listing's newest item when they last read, if known: a quiet feed's mark is old, yet it read
        up to then); items of other targets found there are new to it.
        """
        first = feeds[0]
        marks = [head] if head is not None else [f.mark for f in feeds if f.mark is not None]
        feed = cls(
            None,
            time_filter=first.time_filter,
            position=position,
            overlap=first.overlap,
            ordered=first.ordered,
            at_head=not marks,
        )
        if marks:
            feed.mark = feed._settled = min(marks)
            feed.floor = feed.mark - feed.overlap
            for f in feeds:
                feed.seen.update(f.seen)
        return feed
