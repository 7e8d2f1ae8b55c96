"""Airflow's own partition mappers for waits across deployments (Airflow 3.2+ downstreams).

A sensor's mapper travels as Airflow encodes it in a serialized DAG (``encode_partition_mapper``) and
is decoded into the scheduler's own class (``decode_partition_mapper``: ``airflow.partition_mappers``):
the same logic that maps keys inside one deployment decides which upstream keys feed a wait here. The
engine below sees only :class:`~xdep_sensors.core.probes.PartitionRule`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from xdep_sensors.core.probes import AssetProbe, AssetWait

if TYPE_CHECKING:
    from xdep_sensors.core.probes import PartitionRule


def encode_mapper(name: str, mapper: Any) -> str:
    """A DAG author's ``airflow.sdk`` partition mapper as JSON text; a clear error naming ``name``.

    Text, not a dict: Airflow reads a dict with ``__type`` in trigger kwargs and serialized operators as
    an object of its own to decode (and fails on a mapper's).
    """
    try:
        from airflow.serialization.encoders import encode_partition_mapper
    except ImportError:
        from airflow import __version__

        raise ValueError(
            f"{name} needs Airflow 3.2 or later in this deployment (partition mappers); it runs {__version__}"
        ) from None
    try:
        encoded = encode_partition_mapper(mapper)
    except Exception as exc:  # noqa: BLE001 - whatever Airflow says of an object it cannot encode
        raise ValueError(
            f"{name} must be an airflow.sdk partition mapper (e.g. StartOfDayMapper(), RollupMapper(...)), "
            f"got {mapper!r}: {exc}"
        ) from None
    return json.dumps(encoded, sort_keys=True)  # Airflow's keys are str enums: plain JSON keys


def decode_mapper(encoded: str) -> Any:
    """The scheduler's own mapper (``airflow.partition_mappers``) for an encoded one."""
    from airflow.serialization.decoders import decode_partition_mapper

    return decode_partition_mapper(json.loads(encoded))


class MappedKey:
    """A wait's partition key as seen through an Airflow partition mapper (:class:`PartitionRule`)."""

    def __init__(self, mapper: Any, key: str) -> None:
        self.mapper = mapper
        self.key = key
        self.rollup = bool(getattr(mapper, "is_rollup", False))
        self._expected: frozenset[str] | None = None
        self._fed: dict[str, bool] = {}

    def feeds(self, upstream_key: str | None) -> bool:
        """Whether an upstream event of ``upstream_key`` maps to this key (as the scheduler maps it)."""
        if upstream_key is None:
            return False
        if upstream_key not in self._fed:  # each key is mapped once, not at every poll
            try:
                mapped = self.mapper.to_downstream(upstream_key)
                fed = mapped == self.key if isinstance(mapped, str) else self.key in set(mapped)
            except Exception:  # noqa: BLE001 - a key this mapper cannot map feeds nothing (as the scheduler)
                fed = False
            self._fed[upstream_key] = fed
        return self._fed[upstream_key]

    def expected(self) -> frozenset[str]:
        if self._expected is None:
            self._expected = frozenset(self.mapper.to_upstream(self.key)) if self.rollup else frozenset()
        return self._expected

    def satisfied(self, arrived: set[str]) -> tuple[bool, str | None]:
        result = self.mapper.wait_policy.is_satisfied_by_keys(matched=arrived, expected=self.expected())
        return bool(result.satisfied), (result.unreachable_reason if result.unreachable else None)


def checked_key(label: str, encoded: str, key: str) -> tuple[MappedKey, datetime | None]:
    """The mapper's view of ``key`` and the partition's own date (``None``: the mapper knows none).

    A key the mapper cannot decode (a daily mapper given ``"eu"``) is a ``ValueError`` naming both.
    """
    mapper = decode_mapper(encoded)
    rule = MappedKey(mapper, key)
    try:
        date = getattr(mapper, "to_partition_date", lambda _key: None)(key)
        rule.expected()  # a roll-up decodes the key into its window
    except Exception as exc:  # noqa: BLE001 - each mapper says in its own words why a key is not its
        raise ValueError(
            f"partition_key {key!r} is not a key {type(mapper).__name__} can decode (asset {label}): {exc}"
        ) from None
    return rule, date


def partition_rules(watch: AssetWait) -> dict[str, PartitionRule]:
    """Per asset label with a mapper, its rule (the others: exactly the key, the probe's default)."""
    if watch.partition_key is None or not watch.partition_mappers:
        return {}
    return {
        label: checked_key(label, encoded, watch.partition_key)[0]
        for label, encoded in watch.partition_mappers.items()
    }


def asset_probe(watch: AssetWait, logger: logging.Logger | logging.LoggerAdapter | None = None) -> AssetProbe:
    """The probe of an asset wait, with Airflow's mappers deciding which upstream keys count."""
    return AssetProbe(watch, logger, rules=partition_rules(watch))


async def rollup_progress(client: Any, label: str, key: str, encoded: str) -> dict[str, Any] | None:
    """How far a roll-up wait's window has come upstream: the keys expected, arrived and missing.

    Read from the upstream's events of the asset since the partition's own date (the mapper's), as the
    sensor's first look reads them; ``None`` when the mapper is not a roll-up. For the page and the
    doctor: the sensor itself logs the same at every look.
    """
    from xdep_sensors.core.listings import list_asset_events

    rule, date = checked_key(label, encoded, key)
    if not rule.rollup:
        return None
    expected = rule.expected()
    asset = None
    for by in ("uri", "name"):
        found = await client.list_assets(**{f"{by}_pattern": label})
        asset = next((a for a in found if a.is_(by, label)), None)
        if asset is not None:
            break
    events = await list_asset_events(client, asset_ids=[asset.id], since=date) if asset and date else []
    arrived = {e.partition_key for e in events if e.partition_key is not None and rule.feeds(e.partition_key)}
    arrived &= expected
    missing = sorted(expected - arrived)
    done, _never = rule.satisfied(arrived)
    return {
        "asset": label,
        "partition_key": key,
        "expected": len(expected),
        "arrived": len(arrived),
        "missing": missing[:6],
        "missing_count": len(missing),
        "complete": done,
        "read_since": date.isoformat() if date else None,
    }


def rollup_line(progress: dict[str, Any]) -> str:
    """One line for the doctor and the page: ``17 of 24 partitions of 2026-12-06 arrived; missing …``."""
    line = (
        f"{progress['arrived']} of {progress['expected']} partitions of {progress['partition_key']} "
        f"arrived upstream"
    )
    if progress["missing_count"]:
        more = progress["missing_count"] - len(progress["missing"])
        line += "; missing " + ", ".join(progress["missing"]) + (f" and {more} more" if more > 0 else "")
    return line + (" (enough for its wait policy)" if progress["complete"] else "")
