"""What a sensor task waits for, from its (rendered) arguments and its run's context.

One function per sensor, used on a worker and (``start_from_trigger``) in the triggerer alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException

from xdep_sensors.client.records import parse_dt
from xdep_sensors.core.probes import AssetWait, DagRunWait, cursor_key
from xdep_sensors.triggers.partitions import checked_key
from xdep_sensors.triggers.state import CursorStore


def as_datetime(name: str, value: Any) -> datetime:
    """An aware datetime from a datetime or an ISO-8601 string (naive means UTC); the error names ``name``."""
    try:
        parsed = value if isinstance(value, datetime) else parse_dt(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise AirflowException(f"{name}={value!r} is not an ISO-8601 datetime")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def partition_key(value: Any) -> str:
    """A rendered ``partition_key``: a template of a run without a partition renders ``None`` or nothing."""
    key = str(value)
    if not key.strip() or key == "None":
        raise AirflowException(
            f"partition_key rendered to {key!r}: this run has no partition key (is its DAG scheduled by a "
            "partitioned timetable?); give the key, or wait by run_id, logical_date or latest_after"
        )
    return key


def dag_run_wait(
    args: Mapping[str, Any],
    context: Mapping[str, Any],
    logical_date_fn: Callable[[Any], datetime] | None = None,
) -> DagRunWait:
    """The run a ``RemoteDagRunSensor`` waits for.

    :param args: the sensor's rendered arguments (``external_dag_id``, ``run_id``, ``logical_date``,
        ``latest_after``, ``partition_key``, ``execution_delta`` (a timedelta or seconds), the state
        lists, ``task_ids``, ``task_group_id``, ``check_existence``).
    """
    selector: dict[str, str] = {}
    if args.get("run_id"):
        selector["run_id"] = str(args["run_id"])
    elif args.get("partition_key") is not None:
        selector["partition_key"] = partition_key(args["partition_key"])
    elif args.get("latest_after"):
        selector["latest_after"] = as_datetime("latest_after", args["latest_after"]).isoformat()
    elif args.get("logical_date"):
        selector["logical_date"] = as_datetime("logical_date", args["logical_date"]).isoformat()
    elif logical_date_fn is not None:
        selector["logical_date"] = as_datetime("logical_date_fn()", logical_date_fn(context)).isoformat()
    else:
        dag_run = context.get("dag_run")
        own = context.get("logical_date") or getattr(dag_run, "run_after", None)
        if own is None:
            raise AirflowException(
                "this run has neither a logical date nor run_after; give run_id, logical_date or latest_after"
            )
        delta = args.get("execution_delta") or timedelta()
        delta = delta if isinstance(delta, timedelta) else timedelta(seconds=float(delta))
        selector["logical_date"] = (as_datetime("logical_date", own) - delta).isoformat()
    task_ids = args.get("task_ids")
    return DagRunWait(
        external_dag_id=args["external_dag_id"],
        allowed_states=list(args["allowed_states"]),
        failed_states=list(args["failed_states"]),
        skipped_states=list(args["skipped_states"]),
        task_ids=list(task_ids) if task_ids else None,
        task_group_id=args.get("task_group_id") or None,
        check_existence=args.get("check_existence", True),
        **selector,
    )


def asset_wait(args: Mapping[str, Any], context: Mapping[str, Any]) -> AssetWait:
    """The events a ``RemoteAssetSensor`` waits for; without ``since``, its task's cursors (a Variable read).

    :param args: the sensor's rendered arguments (``asset_uri``, ``asset_name``, ``assets`` (refs),
        ``require``, ``source_dag_id``, ``since``, ``check_existence``, ``partition_key``).

    Without ``since`` or a cursor, the first look starts at the partition's own date where the mappers
    know it, else at the run's data interval start (else its logical date; else, for a run of this very
    partition, its partition date; else its ``run_after``).
    """
    refs = (
        [{"uri": args["asset_uri"], "name": None}]
        if args.get("asset_uri")
        else ([{"uri": None, "name": args["asset_name"]}] if args.get("asset_name") else list(args["assets"]))
    )
    since = (
        as_datetime("since", args["since"]).astimezone(timezone.utc).isoformat()
        if args.get("since")
        else None
    )
    key = partition_key(args["partition_key"]) if args.get("partition_key") is not None else None
    mappers = args.get("partition_mappers") or None
    dates = []
    for label, encoded in (mappers or {}).items():
        if key is None:
            break
        try:
            dates.append(checked_key(label, encoded, key)[1])
        except ValueError as err:
            raise AirflowException(str(err)) from None
    cursors: dict[str, Any] = {}
    if since is None:
        ti = context["ti"]
        stored = CursorStore(ti.dag_id, ti.task_id).start(context["run_id"])
        dag_run = context.get("dag_run")
        own_partition = key is not None and getattr(dag_run, "partition_key", None) == key
        known = [d for d in dates if d is not None]
        first = (
            (min(known) if known and len(known) == len(dates) else None)  # the mappers' partition date
            or context.get("data_interval_start")
            or context.get("logical_date")
            or (getattr(dag_run, "partition_date", None) if own_partition else None)
            or getattr(dag_run, "run_after", None)
        )
        start = (
            as_datetime("data_interval_start", first).astimezone(timezone.utc).isoformat() if first else None
        )
        labels = [cursor_key(r["uri"] or r["name"], key) for r in refs]
        cursors = {label: stored.get(label) or {"timestamp": start} for label in labels}
    return AssetWait(
        assets=refs,
        require=args.get("require", "all"),
        source_dag_id=args.get("source_dag_id") or None,
        since=since,
        cursors=cursors,
        check_existence=args.get("check_existence", True),
        partition_key=key,
        partition_mappers=mappers if key is not None else None,
    )
