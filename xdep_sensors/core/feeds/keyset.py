"""The feed of a listing the server filters by time (``docs/explanation/feeds.md``)."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone
from typing import Any

from xdep_sensors.client.dialects import PAGE_LIMIT, listing_ends
from xdep_sensors.core.feeds.base import Feed, Key, Step

Placed = list[tuple[tuple[datetime, Key], Any]]


class KeysetFeed(Feed):
    """A feed over a listing with a server-side time filter (every listing but API v1 asset events)."""

    time_filter = True

    def _init_reads(self) -> None:
        self._resume: datetime | None = None  # keyset time where a read cut at the page cap continues
        # pages below a warm read's top page where its last late items were found (1: right below it)
        self.late_depths: deque[int] = deque(maxlen=32)
        self._page_size = PAGE_LIMIT  # as the server last returned a top page

    def _in_window(self) -> list[tuple[Key, datetime]]:
        low = self.lower
        return [kt for kt in self.seen if low is None or kt[1] >= low]

    def first_step(self) -> Step:
        self._start_read()
        if self._silent and self.mark is None:
            if not self.ordered:
                # no newest-first page to find the head on (Airflow 2.9's task-instance batch): cover
                # the window behind now instead
                self.mark = datetime.now(timezone.utc)
                return Step(self.lower, 0)
            return Step(None, 0, newest_first=True, head=True)
        if not self.ordered:
            return Step(self.lower, 0)
        if self._resume is not None:  # the last read was cut at the page cap: continue it (keyset)
            last_time, self._resume = self._resume, None
            self._covering = False
            return Step(last_time, sum(1 for (_, t) in self.seen if t == last_time))
        known = len(self._in_window()) if self.warm else 0
        if not known:
            return Step(self.lower, 0)
        return Step(self.lower, 0, newest_first=True, known=known)

    def absorb(self, step: Step, items: list[Any], total: int | None) -> tuple[list[Any], Step | None]:
        placed = [(self.position(i), i) for i in items]
        if step.head:
            return self._absorb_head(placed)
        last = listing_ends(step.offset, len(items), total)
        if not self.ordered:
            return self._absorb_unordered(step, placed, last)
        redirect = None
        if step.known is not None:
            redirect = self._from_top_page(step, placed, total)
        if redirect is None and step.anchor is not None:
            redirect = self._from_anchor(step, placed, last, total)
        if redirect is not None:
            return [], redirect
        if step.newest_first:
            return self._absorb_down(step, placed, last, total)
        return self._absorb_up(placed, last)

    def cut(self, next_step: Step | None = None) -> None:
        if next_step is not None:
            self._resume = next_step.lower
        self._finish(behind=True)

    # the pages of a read ---------------------------------------------------------------------------

    def _absorb_head(self, placed: Placed) -> tuple[list[Any], Step | None]:
        """The newest item: where a feed that starts "now" begins; then its window is covered."""
        if not placed:
            self._silent = False
            self._finish()
            return [], None
        self.mark = max(when for (when, _), _ in placed)
        return [], Step(self.lower, 0)

    def _absorb_unordered(self, step: Step, placed: Placed, last: bool) -> tuple[list[Any], Step | None]:
        fresh = self._take(placed)
        if last:
            self._finish()
            return fresh, None
        return fresh, Step(step.lower, step.offset + len(placed))

    def _from_top_page(self, step: Step, placed: Placed, total: int | None) -> Step | None:
        """A warm read's top page: go on newest first (``None``), or read up from the newest known item.

        Newest first only when the window fits in this read's pages, or consumers get newer items first.
        """
        assert step.known is not None
        unseen = None if total is None else total - step.known  # new items, and any that landed late
        on_page = sum(1 for (when, key), _ in placed if (key, when) not in self.seen)
        if (
            total is None
            or unseen is None
            or (on_page < unseen and total > max(len(placed), 1) * self.budget)
        ):
            window = sorted(self._in_window(), key=lambda kt: (kt[1], str(kt[0])))
            return Step(self.lower, len(window) - 1, anchor=window[-1])
        self._expect = unseen
        return None

    def _from_anchor(self, step: Step, placed: Placed, last: bool, total: int | None) -> Step | None:
        """A page read up from the newest known item: ``None`` when it is where it was, else a re-read."""
        assert step.anchor is not None
        # the first item must be known and at the anchor's time (tied items may come in any order)
        first_known = (
            bool(placed)
            and placed[0][0][0] == step.anchor[1]
            and (placed[0][0][1], placed[0][0][0]) in self.seen
        )
        later_known = any((k, t) in self.seen for (t, k), _ in placed[1:])
        added_up = total is None or not last or total == step.offset + len(placed)
        if first_known and not later_known and added_up:
            return None
        # something landed inside the window (or was deleted): read it newest first
        if total is None:
            return Step(self.lower, 0)
        self._expect, self._found = total - (step.offset + 1), 0
        return Step(self.lower, 0, newest_first=True)

    def _absorb_up(self, placed: Placed, last: bool) -> tuple[list[Any], Step | None]:
        """A page of an oldest-first read: take it; go on from its last item (keyset)."""
        fresh = self._take(placed)
        if last:
            self._finish()
            return fresh, None
        last_time = placed[-1][0][0]
        at_last = sum(1 for (_, t) in self.seen if t == last_time)
        return fresh, Step(last_time, at_last)

    def _absorb_down(
        self, step: Step, placed: Placed, last: bool, total: int | None
    ) -> tuple[list[Any], Step | None]:
        """A page of a newest-first read of the window: go on until the unseen items are found."""
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
            # something unseen may be in the page skipped: read it, then go on below
            return fresh, Step(self.lower, step.skipped, newest_first=True, backfill=(step.offset, below))
        if last or done:
            self._finish()
            return fresh, None
        if step.backfill is not None and below < step.backfill[0]:  # the page skipped, still
            return fresh, Step(self.lower, below, newest_first=True, backfill=step.backfill)
        if step.backfill is not None:
            below = step.backfill[1]  # the skipped page is read: go on below
        elif step.known is not None and self.skip_ahead() and total is not None and total > below + size:
            return fresh, Step(self.lower, below + size, newest_first=True, skipped=below)
        return fresh, Step(self.lower, below, newest_first=True)

    def skip_ahead(self) -> bool:
        """Whether to skip the page below the top page: late items lately lay deeper more often than not."""
        right_below = sum(1 for j in self.late_depths if j == 1)
        return len(self.late_depths) - right_below > right_below

    def _unseen_above(self, offset: int, placed: Placed) -> int | None:
        """How many items above ``offset`` of this newest-first listing are unseen (None: cannot tell).

        Known items tied with the page's first item may be on either side: a count above zero may be them.
        """
        if not placed:
            return None
        first = placed[0][0][0]
        newer = sum(1 for (_, when) in self.seen if when > first)
        return offset - newer
