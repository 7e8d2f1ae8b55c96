"""What this deployment waits on across deployments: the data of the Remote dependencies page.

No DAG file is parsed and no credential read or returned. See ``docs/guides/remote-dependencies.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable

from xdep_sensors.core.listings import newest_page
from xdep_sensors.errors import AuthenticationError, PermissionDenied, XdepError, safe_url

log = logging.getLogger(__name__)

SENSOR_KINDS = {"dag_run": "dag_run_sensor", "asset": "asset_sensor"}
WAITING_STATES = ("deferred", "up_for_reschedule", "running")  # running: a sensor poking on a worker
ENDED_STATES = ("success", "failed", "skipped", "upstream_failed")
RECENT = 5  # outcomes kept per sensor task
FACTS_TTL_S = 30.0
FACTS_TIME_LIMIT_S = 5.0
TRIGGER_MODULE = "xdep_sensors."
SENSORS_MODULE = "xdep_sensors.sensors"
# trigger kwargs shown as a wait's (rendered) upstream target; the rest is bookkeeping
TARGET_KEYS = (
    "external_dag_id",
    "run_id",
    "logical_date",
    "latest_after",
    "partition_key",
    "task_ids",
    "task_group_id",
    "assets",
    "asset_uri",
    "asset_name",
    "require",
    "source_dag_id",
    "since",
    "dag_ids",
    "states",
)


# --- declared dependencies (serialized DAGs) -------------------------------------------------------


def _is_sensor_module(module: Any) -> bool:
    """Whether a serialized task's ``_task_module`` is ``xdep_sensors.sensors`` or below."""
    return isinstance(module, str) and (module == SENSORS_MODULE or module.startswith(SENSORS_MODULE + "."))


def _declared(op: dict[str, Any]) -> dict[str, Any] | None:
    """A sensor task's declared dependency (``None``: not one of ours)."""
    raw = op.get("xdep_dependency")
    if isinstance(raw, str):
        try:
            declared = json.loads(raw)
        except ValueError:
            return None
        return declared if isinstance(declared, dict) else None
    # serialized by an earlier xdep_sensors: only its templated fields were kept
    task_type = op.get("task_type") or op.get("_task_type")
    if not _is_sensor_module(op.get("_task_module")) or task_type not in (
        "RemoteDagRunSensor",
        "RemoteAssetSensor",
    ):
        return None
    kind = "dag_run" if task_type == "RemoteDagRunSensor" else "asset"
    declared = {
        "kind": kind,
        "remote_conn_id": op.get("remote_conn_id", "remote_airflow_default"),
        "mode": "reschedule" if op.get("reschedule") else "unknown",
    }
    for key in ("external_dag_id", "task_ids", "task_group_id", "asset_uri", "asset_name", "source_dag_id"):
        if op.get(key) is not None:
            declared[key] = op[key]
    if kind == "asset":
        ref = {"uri": op.get("asset_uri"), "name": op.get("asset_name")}
        declared["assets"] = [ref] if any(ref.values()) else []
    return declared


def sensor_dependencies(dags: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One item per ``RemoteDagRunSensor`` / ``RemoteAssetSensor`` task in serialized DAG data."""
    items = []
    for dag_id, data in dags:
        dag = data.get("dag", data)
        for node in dag.get("tasks") or []:
            op = node.get("__var", node) if isinstance(node, dict) else {}
            declared = _declared(op)
            if declared is None:
                continue
            target = {
                k: v
                for k, v in declared.items()
                if k not in ("kind", "remote_conn_id", "mode", "start_from_trigger", "end_from_trigger")
            }
            if declared["kind"] == "asset" and "assets" not in target:
                target["assets"] = []
            mode = declared.get("mode", "unknown")
            if declared.get("start_from_trigger") or declared.get("end_from_trigger"):
                mode = (
                    "worker-free"
                    if declared.get("start_from_trigger")
                    else "deferrable, ends in the triggerer"
                )
            items.append(
                {
                    "kind": SENSOR_KINDS.get(declared["kind"], "dag_run_sensor"),
                    "dag_id": dag_id,
                    "task_id": op.get("task_id"),
                    "remote_conn_id": str(declared.get("remote_conn_id")),
                    "mode": mode,
                    "upstream": target,
                }
            )
    return items


def _target(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in TARGET_KEYS if kwargs.get(k) not in (None, [], "")}


def watcher_dependency(
    classpath: str, kwargs: dict[str, Any], assets: list[dict[str, Any]]
) -> dict[str, Any]:
    """One AssetWatcher trigger of ours, its local assets and the DAGs they schedule."""
    return {
        "kind": "watcher",
        "trigger": classpath.rsplit(".", 1)[-1],
        "remote_conn_id": str(kwargs.get("remote_conn_id", "remote_airflow_default")),
        "mode": "asset watcher",
        "upstream": _target(kwargs),
        "assets": [{"uri": a["uri"], "name": a["name"]} for a in assets],
        "schedules": sorted({d for a in assets for d in a["dags"]}),
    }


# --- the metadata database ---------------------------------------------------------------------------


def _trigger_assets(trigger: Any) -> list[Any]:
    """The assets a trigger watches: ``asset_watcher`` rows from 3.2, the ``asset_trigger`` table before."""
    watchers = getattr(trigger, "asset_watchers", None)
    if watchers is not None:
        return [w.asset for w in watchers]
    return list(getattr(trigger, "assets", None) or [])


def _scheduled_dag_ids(asset: Any) -> list[str]:
    """The DAGs an asset schedules (``AssetModel.scheduled_dags``; ``consuming_dags`` in Airflow 3.0)."""
    refs = getattr(asset, "scheduled_dags", None)
    if refs is None:
        refs = getattr(asset, "consuming_dags", None)
    return [ref.dag_id for ref in refs or []]


def _kwargs(trigger: Any) -> dict[str, Any]:
    try:
        kwargs = trigger.kwargs  # decrypted and deserialized by Airflow
    except Exception:  # a Fernet key this process does not have
        return {}
    return dict(kwargs) if isinstance(kwargs, dict) else {}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value else None


_DECLARED: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # dag_id -> (dag_hash, its sensors' items)


def _declared_sensors(dag_ids: set[str] | None, session: Any) -> list[dict[str, Any]]:
    """The sensors the newest serialized form of each DAG declares."""
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import and_, func, select

    latest = select(SerializedDagModel.dag_id, func.max(SerializedDagModel.created_at).label("at")).group_by(
        SerializedDagModel.dag_id
    )
    if dag_ids is not None:
        latest = latest.where(SerializedDagModel.dag_id.in_(sorted(dag_ids)))
    newest = latest.subquery()
    is_newest = and_(
        SerializedDagModel.dag_id == newest.c.dag_id, SerializedDagModel.created_at == newest.c.at
    )
    heads = session.execute(
        select(SerializedDagModel.dag_id, SerializedDagModel.dag_hash).join(newest, is_newest)
    ).all()
    # parsed once per DAG version (its hash), not on every page view
    changed = [h.dag_id for h in heads if _DECLARED.get(h.dag_id, ("",))[0] != h.dag_hash]
    if changed:
        for row in session.scalars(
            select(SerializedDagModel).join(newest, is_newest).where(SerializedDagModel.dag_id.in_(changed))
        ):
            _DECLARED[row.dag_id] = (row.dag_hash, sensor_dependencies([(row.dag_id, row.data or {})]))
    sensors = [dict(item) for h in heads for item in _DECLARED.get(h.dag_id, ("", []))[1]]
    return sensors


def _watchers(dag_ids: set[str] | None, session: Any) -> list[dict[str, Any]]:
    """The library's asset watchers in the trigger table, for the DAGs they schedule."""
    from airflow.models.trigger import Trigger
    from sqlalchemy import select

    watchers: list[dict[str, Any]] = []
    for trigger in session.scalars(select(Trigger).where(Trigger.classpath.like(TRIGGER_MODULE + "%"))):
        assets = [
            {"uri": a.uri, "name": getattr(a, "name", a.uri), "dags": _scheduled_dag_ids(a)}
            for a in _trigger_assets(trigger)
        ]
        if not assets:
            continue  # a sensor's trigger: shown with its task below
        item = watcher_dependency(trigger.classpath, _kwargs(trigger), assets)
        if dag_ids is None or set(item["schedules"]) & dag_ids:
            watchers.append(item)
    return watchers


def read_deployment(dag_ids: set[str] | None, session: Any) -> dict[str, Any]:
    """This deployment's remote dependencies of ``dag_ids`` (``None``: all). Sync: run in a thread."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from sqlalchemy import func, select, tuple_

    sensors = _declared_sensors(dag_ids, session)
    watchers = _watchers(dag_ids, session)

    pairs = sorted({(s["dag_id"], s["task_id"]) for s in sensors})
    in_flight: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    recent: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    if pairs:
        ti = TaskInstance
        waiting = session.execute(
            select(
                ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.state, ti.start_date, ti.trigger_id
            ).where(tuple_(ti.dag_id, ti.task_id).in_(pairs), ti.state.in_(WAITING_STATES))
        ).all()
        trigger_ids = sorted({w.trigger_id for w in waiting if w.trigger_id is not None})
        triggers = (
            {t.id: t for t in session.scalars(select(Trigger).where(Trigger.id.in_(trigger_ids)))}
            if trigger_ids
            else {}
        )
        for w in waiting:
            trigger = triggers.get(w.trigger_id)
            kwargs = _kwargs(trigger) if trigger is not None else {}
            wait = {
                "run_id": w.run_id,
                "map_index": w.map_index,
                "state": w.state,
                "since": _iso(w.start_date),
                "target": _target(kwargs) if trigger is not None else None,
            }
            if kwargs.get("partition_key") and kwargs.get("partition_mappers"):
                # what compose needs to show a roll-up's progress (then dropped from the JSON)
                wait["_mappers"] = (kwargs["partition_key"], dict(kwargs["partition_mappers"]))
            in_flight[(w.dag_id, w.task_id)].append(wait)
        rank = (
            func.row_number()
            .over(partition_by=(ti.dag_id, ti.task_id), order_by=ti.end_date.desc())
            .label("rank")
        )
        ended = (
            select(ti.dag_id, ti.task_id, ti.run_id, ti.state, ti.end_date, rank).where(
                tuple_(ti.dag_id, ti.task_id).in_(pairs), ti.state.in_(ENDED_STATES), ti.end_date.is_not(None)
            )
        ).subquery()
        for r in session.execute(select(ended).where(ended.c.rank <= RECENT).order_by(ended.c.rank)).all():
            recent[(r.dag_id, r.task_id)].append(
                {"run_id": r.run_id, "state": r.state, "end_date": _iso(r.end_date)}
            )
    for s in sensors:
        key = (s["dag_id"], s["task_id"])
        s["in_flight"], s["recent"] = in_flight.get(key, []), recent.get(key, [])
    return {"sensors": sensors, "watchers": watchers}


# --- the upstream deployments ------------------------------------------------------------------------


def asset_labels(target: dict[str, Any]) -> list[str]:
    """The asset URIs or names a target waits on, in order, without repeats."""
    refs = [*(target.get("assets") or []), {"uri": target.get("asset_uri"), "name": target.get("asset_name")}]
    labels = [(r.get("uri") or r.get("name")) if isinstance(r, dict) else r for r in refs]
    return list(dict.fromkeys(label for label in labels if isinstance(label, str) and label))


def wanted(items: list[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """Per connection: the upstream DAG ids and asset labels (URI or name) the items wait on."""
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"dags": set(), "assets": set()})
    for item in items:
        up = item["upstream"]
        want = out[item["remote_conn_id"]]
        for dag_id in [up.get("external_dag_id"), *(up.get("dag_ids") or [])]:
            if isinstance(dag_id, str) and dag_id and "{{" not in dag_id:
                want["dags"].add(dag_id)
        want["assets"].update(label for label in asset_labels(up) if "{{" not in label)
    return dict(out)


def _run(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": run.state,
        "run_after": _iso(run.run_after),
        "end_date": _iso(run.end_date),
    }


async def read_upstream(client: Any, dags: set[str], assets: set[str]) -> dict[str, Any]:
    """What an upstream shows now, in at most three requests: version, newest runs, newest asset events."""
    from xdep_sensors.core.listings import Listing, ListingKind

    facts: dict[str, Any] = {
        "reachable": False,
        "authenticated": None,
        "api": None,
        "version": None,
        "dags": {},
        "assets": {},
    }
    facts["version"] = await client.version()
    facts["reachable"], facts["api"] = True, (await client.dialect()).name
    if dags:
        runs, _complete = await client.newest_runs(sorted(dags))
        for run in runs:  # newest first
            entry = facts["dags"].setdefault(
                run.dag_id,
                {"latest": _run(run), "last_success": None, "url": client.run_url(run.dag_id, run.run_id)},
            )
            if entry["last_success"] is None and run.state == "success":
                entry["last_success"] = _run(run)
    if assets:
        page = await newest_page(client, Listing(ListingKind.ASSET_EVENTS), None)
        for event in page.items:  # newest first
            for label in (event.uri, event.name, event.uri.rstrip("/")):
                if label in assets and label not in facts["assets"]:
                    facts["assets"][label] = {
                        "event_id": event.id,
                        "timestamp": _iso(event.timestamp),
                        "source_dag_id": event.source_dag_id,
                        "url": client.asset_url(event.asset_id),
                    }
    facts["authenticated"] = True if (dags or assets) else None
    facts["unseen"] = await _unseen(client, dags - set(facts["dags"]), assets)
    return facts


async def _unseen(client: Any, quiet_dags: set[str], assets: set[str]) -> dict[str, str]:
    """Per DAG id or asset label: why the user cannot see it (absent or unreadable DAGs, among those with
    no recent run; assets whose producing DAGs it may not read, on 3.3+). One request per kind at most."""
    from xdep_sensors.core.visibility import dag_not_visible, hidden_producers, producers_line

    unseen: dict[str, str] = {}
    if quiet_dags:
        listed = await client.find_dags(sorted(quiet_dags))
        for dag_id in sorted(quiet_dags - set(listed)):
            unseen[dag_id] = str(dag_not_visible(client, dag_id, listed))
    if assets and await client.events_scoped():
        found = [
            *await client.find_assets("uri", sorted(assets)),
            *await client.find_assets("name", sorted(assets)),
        ]
        mine = {a.id: a for a in found if a.uri in assets or a.name in assets or a.uri.rstrip("/") in assets}
        hidden = await hidden_producers(client, mine.values())
        for asset_id, dags in hidden.items():
            a = mine[asset_id]
            label = next(x for x in (a.uri, a.name, a.uri.rstrip("/")) if x in assets)
            unseen[label] = producers_line(client, label, dags)
    return unseen


def _connection_config(conn_id: str) -> Any:
    """The client config of a connection, read as the API server reads connections."""
    from airflow.models.connection import Connection

    from xdep_sensors.hooks.remote_airflow import config_from_connection

    conn = Connection.get_connection_from_secrets(conn_id)
    return config_from_connection(conn, conn.extra_dejson)


class UpstreamFacts:
    """Per connection, one read of the upstream shared by every viewer for ``ttl`` seconds.

    Concurrent requests await the same read; one not done within ``time_limit`` says unreachable.
    A roll-up wait in flight costs one read more (its asset's events since the partition's date),
    shared and kept as long.
    """

    def __init__(
        self, ttl: float = FACTS_TTL_S, time_limit: float = FACTS_TIME_LIMIT_S, clock=time.monotonic
    ):
        self.ttl, self.time_limit, self.clock = ttl, time_limit, clock
        self._cache: dict[str, tuple[float, frozenset, asyncio.Future]] = {}
        self.reads = 0

    async def get(self, conn_id: str, dags: set[str], assets: set[str]) -> dict[str, Any]:
        want = frozenset({("dag", d) for d in dags} | {("asset", a) for a in assets})
        hit = self._cache.get(conn_id)
        if (
            hit is None
            or self.clock() - hit[0] > self.ttl
            or not want <= hit[1]
            or hit[2].get_loop() is not asyncio.get_running_loop()
        ):
            future = asyncio.ensure_future(self._read(conn_id, dags, assets))
            hit = self._cache[conn_id] = (self.clock(), want, future)
        return await asyncio.shield(hit[2])

    async def rollup(self, conn_id: str, label: str, key: str, encoded: str) -> dict[str, Any] | None:
        """A roll-up wait's progress upstream (``None``: not a roll-up), or ``{"error": ...}``."""
        cache_key = f"rollup\0{conn_id}\0{label}\0{key}\0{encoded}"
        hit = self._cache.get(cache_key)
        if (
            hit is None
            or self.clock() - hit[0] > self.ttl
            or hit[2].get_loop() is not asyncio.get_running_loop()
        ):
            future = asyncio.ensure_future(self._read_rollup(conn_id, label, key, encoded))
            hit = self._cache[cache_key] = (self.clock(), frozenset(), future)
        return await asyncio.shield(hit[2])

    async def _read_rollup(self, conn_id: str, label: str, key: str, encoded: str) -> dict[str, Any] | None:
        from asgiref.sync import sync_to_async

        from xdep_sensors.hooks import RemoteAirflowHook
        from xdep_sensors.triggers.partitions import rollup_line, rollup_progress

        try:
            config = await sync_to_async(_connection_config, thread_sensitive=False)(conn_id)
            client = RemoteAirflowHook.client_for(config)
            progress = await asyncio.wait_for(rollup_progress(client, label, key, encoded), self.time_limit)
        except asyncio.TimeoutError:
            return {"error": f"no answer within {self.time_limit:g} s"}
        except (XdepError, ValueError) as err:
            return {"error": str(err)}
        except Exception as err:  # one wait never breaks the page; details only in the server's log
            log.warning("Remote dependencies: a roll-up's progress on %s failed", conn_id, exc_info=True)
            return {"error": f"unexpected {type(err).__name__}; the API server's log has the details"}
        return progress and {**progress, "line": rollup_line(progress)}

    async def _read(self, conn_id: str, dags: set[str], assets: set[str]) -> dict[str, Any]:
        from asgiref.sync import sync_to_async

        from xdep_sensors.hooks import RemoteAirflowHook

        self.reads += 1
        checked = datetime.now(timezone.utc).isoformat()
        base: dict[str, Any] = {"conn_id": conn_id, "host": None, "checked_at": checked}
        try:
            config = await sync_to_async(_connection_config, thread_sensitive=False)(conn_id)
        except Exception as err:
            missing = type(err).__name__ in ("AirflowNotFoundException", "ConnectionNotFound")
            return {
                **base,
                "reachable": False,
                "error": f"connection {conn_id!r} does not exist in this deployment: "
                "create it (type remote_airflow)"
                if missing
                else f"connection {conn_id!r} cannot be read ({type(err).__name__}): "
                "check its definition and the secrets backend",
            }
        base.update(
            host=config.where if config.auth else safe_url(config.base_url), ui=safe_url(config.ui_base)
        )
        client = RemoteAirflowHook.client_for(config)
        try:
            facts = await asyncio.wait_for(read_upstream(client, dags, assets), self.time_limit)
        except asyncio.TimeoutError:
            return {**base, "reachable": False, "error": f"no answer within {self.time_limit:g} s"}
        except XdepError as err:
            # an upstream that refused the credentials answered: reached (behind MWAA even the version
            # needs them, so it is unknown then)
            refused = isinstance(err, (AuthenticationError, PermissionDenied))
            reached = client.upstream_version is not None or refused
            return {
                **base,
                "reachable": reached,
                "version": client.upstream_version,
                "authenticated": False if err.status in (401, 403) else None,
                "error": str(err),
            }
        except Exception as err:  # one upstream never breaks the page; details only in the server's log
            log.warning("Remote dependencies: reading %s (%s) failed", conn_id, base["host"], exc_info=True)
            return {
                **base,
                "reachable": False,
                "error": (
                    f"unexpected {type(err).__name__} reading the upstream; "
                    "the API server's log has the details"
                ),
            }
        return {**base, **facts}


# --- one item per dependency -------------------------------------------------------------------------


def _age_s(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    return round((now - datetime.fromisoformat(iso)).total_seconds(), 1)


def _upstream_now(item: dict[str, Any], facts: dict[str, Any], now: datetime) -> dict[str, Any]:
    up = item["upstream"]
    if not facts.get("reachable") or facts.get("error"):
        problem = (
            "auth failed"
            if facts.get("authenticated") is False
            else "unreachable"
            if not facts.get("reachable")
            else "upstream error"
        )
        return {"error": facts.get("error") or "unreachable", "problem": problem}
    dag_id = up.get("external_dag_id")
    unseen = facts.get("unseen") or {}
    if isinstance(dag_id, str) and dag_id in unseen:
        return {"error": unseen[dag_id], "problem": "cannot see DAG"}
    blind = [unseen[label] for label in asset_labels(up) if label in unseen]
    if blind:
        return {"error": "; ".join(blind), "problem": "cannot see producer"}
    if isinstance(dag_id, str) and dag_id in facts.get("dags", {}):
        dag = facts["dags"][dag_id]
        success = dag["last_success"]
        return {
            "latest_run": dag["latest"],
            "last_success": success,
            "url": dag["url"],
            "lag_s": _age_s(success and (success["end_date"] or success["run_after"]), now),
        }
    events = [facts["assets"][label] for label in asset_labels(up) if label in facts.get("assets", {})]
    if events:
        latest = max(events, key=lambda e: e["timestamp"])
        return {"latest_event": latest, "url": latest["url"], "lag_s": _age_s(latest["timestamp"], now)}
    return {"note": "nothing recent upstream (or its target is templated: see the waits in flight)"}


def status(item: dict[str, Any]) -> str:
    """``unreachable``, ``auth failed``, ``upstream error``, ``cannot see DAG``, ``cannot see producer``,
    ``failed`` (its last outcome), ``waiting``, ``ok`` or ``idle``."""
    now = item.get("upstream_now", {})
    if "error" in now:
        return now.get("problem", "unreachable")
    if item.get("in_flight"):
        return "waiting"
    recent = item.get("recent") or []
    if recent:
        return "ok" if recent[0]["state"] in ("success", "skipped") else "failed"
    return "idle"


async def compose(
    deployment: dict[str, Any], facts: UpstreamFacts, now: datetime | None = None
) -> dict[str, Any]:
    """The JSON of ``GET /xdep-sensors/api/dependencies``: dependencies and the upstreams' health."""
    now = now or datetime.now(timezone.utc)
    items = [*deployment["sensors"], *deployment["watchers"]]
    per_conn = wanted(items)
    conn_ids = sorted(per_conn)
    read = await asyncio.gather(*(facts.get(c, per_conn[c]["dags"], per_conn[c]["assets"]) for c in conn_ids))
    by_conn = dict(zip(conn_ids, read))
    for item in items:
        item["upstream_now"] = _upstream_now(item, by_conn[item["remote_conn_id"]], now)
        for wait in item.get("in_flight") or []:
            if "_mappers" in wait:
                key, mappers = wait.pop("_mappers")
                rollups = [
                    facts.rollup(item["remote_conn_id"], label, key, enc) for label, enc in mappers.items()
                ]
                wait["partitions"] = [p for p in await asyncio.gather(*rollups) if p is not None]
        item.setdefault("in_flight", [])
        item.setdefault("recent", [])
        item["status"] = status(item)
    upstreams = {
        c: {k: v for k, v in f.items() if k not in ("dags", "assets", "unseen")} for c, f in by_conn.items()
    }
    return {"generated_at": now.isoformat(), "upstreams": upstreams, "dependencies": items}
