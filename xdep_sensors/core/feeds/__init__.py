"""Reading an upstream listing as a feed: how far it has been read, and what is new since.

:class:`KeysetFeed` for listings the server filters by time, :class:`NewestFirstFeed` for API v1 asset
events. See ``docs/explanation/feeds.md``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from xdep_sensors.core.feeds.base import OVERLAP, Feed, Key, Position, Step
from xdep_sensors.core.feeds.keyset import KeysetFeed
from xdep_sensors.core.feeds.newest_first import NewestFirstFeed


def new_feed(
    start: datetime | None,
    *,
    time_filter: bool,
    position: Position,
    overlap: timedelta = OVERLAP,
    at_head: bool = False,
    ordered: bool = True,
) -> Feed:
    """A feed over a listing that filters by time server-side (``time_filter``) or not (API v1 asset events).

    See :class:`Feed` for the other parameters.
    """
    kind = KeysetFeed if time_filter else NewestFirstFeed
    return kind(start, position=position, overlap=overlap, at_head=at_head, ordered=ordered)


__all__ = ["OVERLAP", "Feed", "Key", "KeysetFeed", "NewestFirstFeed", "Position", "Step", "new_feed"]
