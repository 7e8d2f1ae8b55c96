"""What a consumer has consumed of an upstream feed: a cursor kept in durable state between reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, cast

from xdep_sensors.client.records import AssetEvent, parse_dt
from xdep_sensors.core.feeds import OVERLAP
from xdep_sensors.core.listings import POSITIONS, ListingKind


@dataclass(frozen=True)
class Cursor:
    """What a consumer has consumed of an upstream feed (asset events, runs that ended).

    An item is new when it is at or after ``floor`` and not consumed. ``recent`` holds the items
    consumed within the overlap window, so a late item is still new and none is consumed twice. A
    cursor of the earlier form (``timestamp`` + ``seen_ids``) reads as a floor at ``timestamp``.
    """

    timestamp: str | None = None  # ISO-8601, timezone-aware: the newest consumed item (or the start)
    seen_ids: tuple[int | str, ...] = field(default_factory=tuple)  # keys consumed at exactly ``timestamp``
    recent: tuple[tuple[int | str, str], ...] = field(default_factory=tuple)  # (key, ISO time) in the window
    floor: str | None = None  # items before it are never new (default: ``timestamp``)

    # parsed once per cursor, on first use
    @cached_property
    def _consumed(self) -> set[tuple[int | str, datetime]]:
        return {(k, parse_dt(t)) for k, t in self.recent}  # type: ignore[misc]

    @cached_property
    def _mine(self) -> datetime | None:
        return parse_dt(self.timestamp)

    @cached_property
    def _floor(self) -> datetime | None:
        return parse_dt(self.floor) or self._mine

    def is_new_at(self, when: datetime, key: int | str) -> bool:
        mine = self._mine
        if mine is None:
            return True
        if when < self._floor or (key, when) in self._consumed:  # type: ignore[operator]
            return False
        return not (when == mine and key in self.seen_ids)

    def advance_with(self, items: Iterable[tuple[datetime, int | str]]) -> Cursor:
        """Return the cursor after consuming ``(timestamp, key)`` items (any order)."""
        items = list(items)
        if not items:
            return self
        mine = self._mine
        latest = max([t for t, _ in items] + ([mine] if mine else []))
        old_floor = self._floor
        floor = latest - OVERLAP
        if old_floor is not None:
            floor = max(floor, old_floor)
        consumed = set(self._consumed) | {(k, t) for t, k in items}
        if mine is not None:
            consumed |= {(k, mine) for k in self.seen_ids}
        kept = sorted(((k, t) for k, t in consumed if t >= floor), key=lambda kt: (kt[1], str(kt[0])))
        return Cursor(
            latest.isoformat(),
            tuple(sorted({k for k, t in kept if t == latest}, key=str)),
            tuple((k, t.isoformat()) for k, t in kept),
            floor.isoformat(),
        )

    def merged(self, other: Cursor) -> Cursor:
        """The cursor that has consumed what this one or ``other`` (another copy of it) has."""
        theirs = [(t, k) for k, t in other._consumed]
        if other._mine is not None:
            theirs += [(other._mine, k) for k in other.seen_ids]
        both = self.advance_with(theirs)
        if other._floor is None or (both._floor is not None and both._floor >= other._floor):
            return both
        floor = other._floor
        return Cursor(
            both.timestamp,
            both.seen_ids,
            tuple(kt for kt in both.recent if cast(datetime, parse_dt(kt[1])) >= floor),  # ISO, never empty
            floor.isoformat(),
        )

    def is_new(self, event: AssetEvent) -> bool:
        when, key = event_position(event)
        return self.is_new_at(when, key)

    def advance(self, events: Iterable[AssetEvent]) -> Cursor:
        """Return the cursor after consuming ``events`` (any order)."""
        return self.advance_with(event_position(e) for e in events)

    @property
    def start(self) -> datetime | None:
        """The earliest time an unconsumed item can have."""
        return self._floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "seen_ids": list(self.seen_ids),
            "recent": [list(kt) for kt in self.recent],
            "floor": self.floor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Cursor:
        if not data:
            return cls()
        recent = tuple((k, t) for k, t in data.get("recent") or ())
        return cls(data.get("timestamp"), tuple(data.get("seen_ids") or ()), recent, data.get("floor"))


event_position = POSITIONS[ListingKind.ASSET_EVENTS]
