"""Typed records returned by the client: the same shape whatever the upstream API version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def parse_dt(value: Any) -> datetime | None:
    """Parse an API datetime (``Z`` or offset suffix) into an aware datetime."""
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict (datetimes as ISO strings), fit for XCom and trigger events."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Dag(_Record):
    """An upstream DAG."""

    dag_id: str
    is_paused: bool | None = None


@dataclass(frozen=True)
class DagRun(_Record):
    """An upstream DAG run."""

    dag_id: str
    run_id: str
    state: str | None
    logical_date: datetime | None
    run_after: datetime | None
    start_date: datetime | None = None
    end_date: datetime | None = None
    run_type: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)
    partition_key: str | None = None  # Airflow 3.2+: the partition the run is for


@dataclass(frozen=True)
class TaskInstance(_Record):
    """An upstream task instance (one map index of it)."""

    dag_id: str
    run_id: str
    task_id: str
    state: str | None
    map_index: int = -1
    start_date: datetime | None = None
    end_date: datetime | None = None
    try_number: int | None = None


@dataclass(frozen=True)
class Asset(_Record):
    """An upstream asset (a dataset on Airflow 2, whose name is its URI)."""

    id: int
    uri: str
    name: str
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the DAGs whose tasks have it as an outlet (not those that emit through an alias); Airflow 3 only
    producers: tuple[str, ...] = ()
    # the newest event's time, whoever produced it: the event listing may hide it (Airflow 3 only)
    last_event_at: datetime | None = None

    def is_(self, by: str, value: str) -> bool:
        """Whether this is the asset with that URI (``by="uri"``; Airflow normalizes "scheme://host" to
        "scheme://host/") or that name (``by="name"``)."""
        return self.uri.rstrip("/") == value.rstrip("/") if by == "uri" else self.name == value


@dataclass(frozen=True)
class AssetEvent(_Record):
    """An upstream asset (dataset) event (``id``: a string only where an Airflow 2 server sends none)."""

    id: int | str
    asset_id: int
    uri: str
    name: str
    timestamp: datetime
    extra: dict[str, Any] = field(default_factory=dict)
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int | None = None
    partition_key: str | None = None  # Airflow 3.2+: the partition the event is for
