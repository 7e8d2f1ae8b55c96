"""What a wait needs a shared poll to read for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class RunNeedKind(str, Enum):
    """What a run wait's next look reads."""

    FIRST_LOOK = "dag"  # the DAG's existence, then its run
    RUN_CHANGES = "run"  # the runs that started or ended since the previous look
    ENDED_RUNS = "finished"  # the run is known and only its end decides
    EXACT = "exact"  # a wait decided by ``queued``, which no change listing shows


@dataclass(frozen=True)
class RunNeed:
    """A run wait's need: which reads, for which DAG.

    ``bound``: on a first look, the lowest ``run_after`` that can matter.
    """

    kind: RunNeedKind
    dag_id: str
    bound: datetime | None = None

    @property
    def from_changes(self) -> bool:
        """Whether the runs that started or ended since the previous look answer it."""
        return self.kind in (RunNeedKind.RUN_CHANGES, RunNeedKind.ENDED_RUNS)


@dataclass(frozen=True)
class AssetNeed:
    """An asset wait's need: the events of these assets (empty: none of its assets is resolved yet)."""

    asset_ids: frozenset[int] = frozenset()
