"""What a wait needs a shared poll to read for it (small immutable values: thousands a cycle)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import NamedTuple


class RunNeedKind(str, Enum):
    """What a run wait's next look reads."""

    FIRST_LOOK = "dag"  # the DAG's existence, then its run
    RUN_CHANGES = "run"  # the runs that started or ended since the previous look
    ENDED_RUNS = "finished"  # the run is known and only its end decides
    EXACT = "exact"  # a wait decided by ``queued``, which no change listing shows


class RunNeed(NamedTuple):
    """A run wait's need: which reads, for which DAG.

    ``bound``: on a first look, the lowest ``run_after`` that can matter.
    """

    kind: RunNeedKind
    dag_id: str
    bound: datetime | None = None

    @property
    def from_changes(self) -> bool:
        """Whether the runs that started or ended since the previous look answer it."""
        return self.kind is RunNeedKind.RUN_CHANGES or self.kind is RunNeedKind.ENDED_RUNS


class AssetNeed(NamedTuple):
    """An asset wait's need: the events of these assets (empty: none of its assets is resolved yet)."""

    asset_ids: frozenset[int] = frozenset()
