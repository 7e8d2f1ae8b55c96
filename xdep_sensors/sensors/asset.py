"""``RemoteAssetSensor``: wait for asset events in another deployment, each consumed once per task."""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence, cast

from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk import Asset, AssetAlias

from xdep_sensors.core.probes import AssetWait
from xdep_sensors.links import UpstreamAssetLink
from xdep_sensors.triggers import RemoteAssetTrigger
from xdep_sensors.triggers.partitions import asset_probe, encode_mapper
from xdep_sensors.triggers.state import CursorStore
from xdep_sensors.triggers.task_args import asset_wait
from xdep_sensors.version_compat import airflow_version

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context

    from xdep_sensors.triggers.waits import Probe


from xdep_sensors.sensors.base import _RemoteSensor


def _asset_refs(asset_uri: Any, asset_name: Any, assets: Any) -> list[dict[str, str | None]]:
    given = [
        n
        for n, v in (("asset_uri", asset_uri), ("asset_name", asset_name), ("assets", assets))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of asset_uri, asset_name, assets; got {', '.join(given) or 'none'}"
        )
    if asset_uri is not None or asset_name is not None:
        value, key = (asset_uri, "uri") if asset_uri is not None else (asset_name, "name")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"asset_{key} must be a non-empty string, got {value!r}")
        return [{"uri": value if key == "uri" else None, "name": value if key == "name" else None}]
    if isinstance(assets, str) or not isinstance(assets, (list, tuple)) or not assets:
        raise ValueError(
            f"assets must be a non-empty list of URIs or airflow.sdk.Asset objects, got {assets!r}"
        )
    refs = []
    for item in assets:
        uri = getattr(item, "uri", item)
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f"assets has an entry that is neither a URI nor an Asset: {item!r}")
        refs.append({"uri": uri, "name": None})
    return refs


def _bridged_extra(event: dict[str, Any], upstream: str | None) -> dict[str, Any]:
    """A bridged event's ``extra``: the upstream's, and where it came from under ``xdep_upstream``."""
    provenance = {
        "url": upstream,
        "event_id": event["id"],
        "uri": event["uri"],
        "timestamp": event["timestamp"],
        "source_dag_id": event["source_dag_id"],
        "source_run_id": event["source_run_id"],
    }
    if event.get("partition_key") is not None:
        provenance["partition_key"] = event["partition_key"]
    return {**(event.get("extra") or {}), "xdep_upstream": provenance}


def _partition_mappers(
    refs: list[dict[str, str | None]], key: Any, default: Any, config: dict[Any, Any] | None
) -> dict[str, str] | None:
    """Per watched asset label, its mapper encoded as Airflow encodes it (``None``: no mapper)."""
    if default is None and not config:
        return None
    if key is None:
        raise ValueError("partition_mapper and partition_mapper_config need partition_key (this run's key)")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"partition_mapper_config must be a dict of asset -> mapper, got {config!r}")
    labels = {str(r["uri"] or r["name"]): r for r in refs}
    chosen: dict[str, Any] = dict.fromkeys(labels, default) if default is not None else {}
    for asset, mapper in (config or {}).items():
        names = (
            {getattr(asset, "uri", None), getattr(asset, "name", None)}
            if not isinstance(asset, str)
            else {asset}
        )
        hits = [label for label, r in labels.items() if {r["uri"], r["name"]} & names - {None}]
        if not hits:
            raise ValueError(
                f"partition_mapper_config names {asset!r}, which this sensor does not watch "
                f"({', '.join(labels)})"
            )
        chosen.update(dict.fromkeys(hits, mapper))
    return {label: encode_mapper(f"partition_mapper for {label}", mapper) for label, mapper in chosen.items()}


class RemoteAssetSensor(_RemoteSensor):
    """
    Waits for asset (dataset) events in another Airflow deployment; each event is consumed once.

    :param asset_uri: the upstream asset's URI (templated).
    :param asset_name: the upstream asset's name, Airflow 3 upstreams (templated).
    :param assets: several assets, as URIs or ``airflow.sdk.Asset`` objects.
    :param require: ``"all"`` (default: every asset has a new event) or ``"any"``.
    :param source_dag_id: only count events produced by this upstream DAG (templated).
    :param since: count events at or after this time instead of the task's cursor (templated).
    :param partition_key: count only events of this partition, matched exactly, each consumed once per
        task and key (templated, e.g. ``"{{ dag_run.partition_key }}"``; the upstream must run 3.2+).
    :param partition_mapper: an ``airflow.sdk`` partition mapper: the events whose upstream key it maps
        to ``partition_key`` count (``StartOfDayMapper()``: any hour of the day; a ``RollupMapper``: the
        wait ends when its window's keys have arrived as its wait policy says). Airflow 3.2+ here.
    :param partition_mapper_config: per asset (an ``Asset``, URI or name) a mapper of its own, as
        ``PartitionedAssetTimetable``'s; the others take ``partition_mapper`` (else: exactly the key).
    :param check_existence: an asset unknown upstream fails fast with close matches (default True).
    :param str remote_conn_id: connection of type ``remote_airflow`` to the upstream (templated; default
        ``remote_airflow_default``).
    :param bool deferrable: wait in the triggerer (default True); otherwise poke/reschedule.
    :param bool start_from_trigger: the scheduler hands the task straight to the triggerer, no worker run
        (Airflow 3.3+; below, a warning and the task starts on a worker).
    :param bool end_from_trigger: the trigger ends the task (success, failure, skip) instead of resuming it
        on a worker; a timeout, and a failure Airflow would retry differently, still resume on one.

    Local ``Asset`` outlets get one local event per matched upstream event, carrying the upstream
    ``extra`` plus provenance under ``xdep_upstream``.
    """

    template_fields: Sequence[str] = (
        "asset_uri",
        "asset_name",
        "remote_conn_id",
        "source_dag_id",
        "since",
        "partition_key",
    )
    ui_color = "#e6f4ea"
    link_class = UpstreamAssetLink
    trigger_class = RemoteAssetTrigger
    kind = "asset"
    operator_extra_links = (UpstreamAssetLink(),)

    def __init__(
        self,
        *,
        asset_uri: str | None = None,
        asset_name: str | None = None,
        assets: list[Any] | None = None,
        require: str = "all",
        source_dag_id: str | None = None,
        since: str | datetime | None = None,
        check_existence: bool = True,
        partition_key: str | None = None,
        partition_mapper: Any = None,
        partition_mapper_config: dict[Any, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_refs = _asset_refs(asset_uri, asset_name, assets)
        if partition_key is not None and (not isinstance(partition_key, str) or not partition_key.strip()):
            raise ValueError(
                f"partition_key must be a non-empty string (or a template), got {partition_key!r}"
            )
        self.partition_key = partition_key
        self.partition_mappers = _partition_mappers(
            self.asset_refs, partition_key, partition_mapper, partition_mapper_config
        )
        if require not in ("all", "any"):
            raise ValueError(f"require must be 'all' or 'any', got {require!r}")
        self.asset_uri = asset_uri
        self.asset_name = asset_name
        self.require = require
        self.source_dag_id = source_dag_id
        self.since = since
        self.check_existence = check_existence
        self._bridge_alias: AssetAlias | None = None
        if any(isinstance(o, Asset) for o in self.outlets):
            if partition_key is not None and airflow_version() < (3, 2):
                raise ValueError(
                    "outlets with partition_key: local asset events carry partition keys from Airflow 3.2 "
                    f"(this deployment runs {'.'.join(map(str, airflow_version()))}); they would carry "
                    "none. Remove the outlets, or bridge without partition_key"
                )
            if partition_key is None:
                # Concrete outlets yield one event each; an alias carries the 2nd..Nth matched event
                # (an alias's events take the run's own partition key: never used for partitions).
                self._bridge_alias = AssetAlias(
                    f"xdep_sensors_bridge__{self.dag_id if self.has_dag() else ''}__{self.task_id}"
                )
                self.outlets = [*self.outlets, self._bridge_alias]
            if self.end_from_trigger:
                warnings.warn(
                    f"{self.task_id}: end_from_trigger is off: Airflow records a task's local outlet "
                    "events only when a worker ends it (the trigger hands its events back to one)",
                    UserWarning,
                    stacklevel=2,
                )
                self.end_from_trigger = False
        self._finish_init(self._task_args())

    def _cursor_store(self, context: Context) -> CursorStore:
        return CursorStore(context["ti"].dag_id, self.task_id)

    def _task_args(self) -> dict[str, Any]:
        return {
            "asset_uri": self.asset_uri,
            "asset_name": self.asset_name,
            "assets": self.asset_refs,
            "require": self.require,
            "source_dag_id": self.source_dag_id,
            "since": self.since,
            "check_existence": self.check_existence,
            "partition_key": self.partition_key,
            "partition_mappers": self.partition_mappers,
        }

    def _watch(self, context: Context) -> AssetWait:
        return asset_wait(self._task_args(), context)

    def make_probe(self, context: Context) -> Probe:
        # the task logger takes the stdlib logging calls a probe makes
        return asset_probe(self._watch(context), cast("logging.Logger", self.log))

    def on_success(self, context: Context, result: Any) -> Any:
        events = result["events"]
        local = [o for o in self.outlets if isinstance(o, Asset)]
        keyed = self.partition_key is not None and local and events
        if keyed:  # checked before the events are consumed: a refusal loses none
            self._check_keys(context, events)
        self._cursor_store(context).commit(context["run_id"], result["started_from"], result["cursors"])
        if keyed:
            self._bridge_partitions(context, local, events, result.get("upstream"))
        else:
            self._bridge(context, events, result.get("upstream"))
        return events

    def _check_keys(self, context: Context, events: list[dict[str, Any]]) -> None:
        """Local events must carry each upstream event's key: per event from Airflow 3.3; on 3.2 an outlet
        event takes this run's own key, right only when every upstream key is that one."""
        if airflow_version() >= (3, 3):
            return
        own = getattr(context.get("dag_run"), "partition_key", None)
        other = sorted({e["partition_key"] for e in events} - {own})
        if other:
            raise AirflowException(
                f"cannot bridge upstream partition(s) {', '.join(other)} to local outlets: on Airflow "
                f"{'.'.join(map(str, airflow_version()))} a local asset event takes this run's own partition "
                f"key ({own!r}), and would be mislabelled; Airflow 3.3 gives each event its own key"
            )

    def _bridge_partitions(
        self, context: Context, local: list[Asset], events: list[dict[str, Any]], upstream: str | None
    ) -> None:
        """One local event per upstream partition key on each outlet (``add_partitions``). One outlet
        event has one ``extra`` for all its keys: with one upstream event, its extra and provenance (as
        without partitions); with several, ``xdep_upstream_partitions``: each key's events, each with its
        own extra and provenance."""
        keys = sorted({e["partition_key"] for e in events})
        if len(events) == 1:
            extra = _bridged_extra(events[0], upstream)
        else:
            by_key: dict[str, list[dict[str, Any]]] = {}
            for event in events:
                by_key.setdefault(event["partition_key"], []).append(_bridged_extra(event, upstream))
            extra = {"xdep_upstream_partitions": by_key}
        outlet_events = context["outlet_events"]
        for asset in local:
            outlet_events[asset].extra = extra
            if airflow_version() >= (3, 3):
                outlet_events[asset].add_partitions(keys)
        self.log.info(
            "re-emitted %d upstream event(s) of partition(s) %s to local asset(s) %s",
            len(events),
            ", ".join(keys),
            ", ".join(a.uri for a in local),
        )

    def _bridge(self, context: Context, events: list[dict[str, Any]], upstream: str | None) -> None:
        local = [o for o in self.outlets if isinstance(o, Asset)]
        if not local or not events:
            return
        outlet_events = context["outlet_events"]
        for asset in local:
            for i, event in enumerate(events):
                extra = _bridged_extra(event, upstream)
                if i == 0:
                    outlet_events[asset].extra = extra
                else:
                    # set in __init__ whenever an outlet is an Asset
                    outlet_events[cast(AssetAlias, self._bridge_alias)].add(asset, extra=extra)
        self.log.info(
            "re-emitted %d upstream event(s) to local asset(s) %s",
            len(events),
            ", ".join(a.uri for a in local),
        )
