"""Connection checks shared by the UI "Test" button and ``xdep-sensors doctor``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.client.records import Asset, AssetEvent
from xdep_sensors.core.listings import (
    Listing,
    ListingKind,
    latest_asset_event,
    list_asset_events,
    newest_page,
)
from xdep_sensors.core.names import close_matches
from xdep_sensors.core.visibility import hidden_producers, visible_dag
from xdep_sensors.errors import NotFound, XdepError


@dataclass(frozen=True)
class Check:
    """One line of a diagnosis."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


async def _step(checks: list[Check], name: str, coro, describe) -> object | None:
    try:
        value = await coro
    except XdepError as err:
        checks.append(Check(name, False, err.message + (f" [{err.url}]" if err.url else ""), err.hint))
        return None
    checks.append(Check(name, True, describe(value)))
    return value


async def diagnose(
    client: RemoteAirflowClient,
    *,
    dag_id: str | None = None,
    asset_uri: str | None = None,
    asset_name: str | None = None,
    partition_key: str | None = None,
) -> list[Check]:
    """Run the checks in order; stop at the first failure that makes the next ones meaningless."""
    cfg = client.config
    if cfg.auth == "aws_mwaa":
        where = f"{cfg.where} through InvokeRestApi, signed by AWS connection {cfg.aws_conn_id!r}"
        via = " through airflow:InvokeRestApi (allowed)"
    elif cfg.auth == "google":
        where = f"{cfg.base_url} (TLS verify: {cfg.verify}; auth: Google connection {cfg.gcp_conn_id!r})"
        via = ""
    else:
        where, via = f"{cfg.base_url} (TLS verify: {cfg.verify}; auth: {cfg.auth_mode})", ""
    checks = [Check("url", True, where)]
    version = await _step(
        checks,
        "api",
        client.version(),
        lambda v: f"Airflow {v}, REST API {client.transport.dialect_name}{via}",
    )
    if version is None:
        return checks
    if not await _reads(checks, client, bool(dag_id), bool(asset_uri or asset_name)):
        return checks
    if partition_key is not None and not await client.partitions():
        checks.append(
            Check(
                f"partition {partition_key}",
                False,
                f"the upstream runs Airflow {version}, which has no partitioned runs or events (3.2+)",
                "wait without partition_key there, or upgrade the upstream to Airflow 3.2 or later",
            )
        )
        return checks
    if dag_id:
        await _check_dag(checks, client, dag_id, partition_key)
    if asset_uri or asset_name:
        try:
            await _check_asset(checks, client, asset_uri, asset_name, partition_key)
        except XdepError as err:
            checks.append(Check(f"asset {asset_uri or asset_name}", False, err.message, err.hint))
    return checks


async def _reads(checks: list[Check], client: RemoteAirflowClient, dag: bool, asset: bool) -> bool:
    """Whether the user may read DAG runs and asset events. With a DAG or an asset named, only what
    waiting for it needs (a least-privilege role reads no more): the DAG's own check reads its runs."""
    runs_via = " (the IAM policy's Airflow role may)" if client.config.auth == "aws_mwaa" else ""
    if not (dag or asset):
        runs = await _step(
            checks,
            "read dag runs",
            client.list_dag_runs("~", limit=1),
            lambda r: f"authenticated; allowed to read DAG runs{runs_via}",
        )
        if runs is None:
            return False
    if asset or not dag:
        events = await _step(
            checks,
            "read assets",
            list_asset_events(client, since=datetime.now(timezone.utc)),
            lambda e: (
                ("authenticated; " if asset and not dag else "") + "allowed to read assets and asset events"
            ),
        )
        return events is not None
    return True


async def _check_dag(
    checks: list[Check], client: RemoteAirflowClient, dag_id: str, partition_key: str | None = None
) -> None:
    try:
        dag = await visible_dag(client, dag_id)
    except NotFound:
        known = [d.dag_id for d in await client.list_dags()]
        nearby = close_matches(dag_id, known)
        checks.append(
            Check(
                f"dag {dag_id}",
                False,
                "does not exist upstream",
                f"close matches: {', '.join(nearby)}" if nearby else "check the DAG id",
            )
        )
        return
    except XdepError as err:
        checks.append(Check(f"dag {dag_id}", False, err.message, err.hint))
        return
    try:
        latest = await _newest_run(client, dag_id, partition_key)
    except XdepError as err:
        checks.append(Check(f"dag {dag_id}", False, err.message, err.hint))
        return
    paused = " (paused upstream: no new runs will come)" if dag.is_paused else ""
    checks.append(Check(f"dag {dag_id}", True, f"exists{paused}; {latest}"))


async def _newest_run(client: RemoteAirflowClient, dag_id: str, partition_key: str | None) -> str:
    if partition_key is not None:
        run = await client.newest_partition_run(dag_id, partition_key)
        latest = (
            f"newest run of partition {partition_key}: {run.run_id}: {run.state}"
            if run
            else f"no run of partition {partition_key} yet"
        )
    else:
        runs = await client.list_dag_runs(dag_id, limit=1)
        latest = f"latest run {runs[0].run_id}: {runs[0].state}" if runs else "no runs yet"
    return latest


async def _check_asset(
    checks: list[Check],
    client: RemoteAirflowClient,
    uri: str | None,
    name: str | None,
    partition_key: str | None = None,
) -> None:
    label = uri or name or ""
    assets = await client.list_assets()
    matches = [a for a in assets if (uri and a.uri == uri) or (name and a.name == name)]
    if not matches:
        nearby = close_matches(label, [a.uri for a in assets] + [a.name for a in assets])
        checks.append(
            Check(
                f"asset {label}",
                False,
                "does not exist upstream",
                f"close matches: {', '.join(nearby)}" if nearby else "check the asset URI or name",
            )
        )
        return
    if partition_key is not None:
        page = await newest_page(client, Listing(ListingKind.ASSET_EVENTS, asset_id=matches[0].id), None)
        event = next((e for e in page.items if e.partition_key == partition_key), None)
        latest = (
            f"latest event of partition {partition_key} {event.timestamp.isoformat()}"
            if event
            else f"no event of partition {partition_key} among the newest {len(page.items)}"
        )
    else:
        event = await latest_asset_event(client, matches[0].id)
        latest = f"latest event {event.timestamp.isoformat()}" if event else "no events yet"
    newest = page.items[0] if partition_key is not None and page.items else event
    hidden = await _hidden(client, matches[0], newest)
    if hidden is not None:
        checks.append(
            Check(f"asset {label}", False, f"exists (id {matches[0].id}); {latest}; {hidden[0]}", hidden[1])
        )
        return
    checks.append(Check(f"asset {label}", True, f"exists (id {matches[0].id}); {latest}"))


async def _hidden(
    client: RemoteAirflowClient, asset: Asset, newest: AssetEvent | None
) -> tuple[str, str] | None:
    """(what is hidden, the fix) when the event listing hides events of the asset from this user (3.3+):
    its newest event is not listed, or a producing DAG is not readable."""
    if not await client.events_scoped():
        return None
    who = client.config.who
    dags = (await hidden_producers(client, [asset])).get(asset.id, [])
    grant = f"grant {who} can_read on {', '.join(f'DAG:{d}' for d in dags)}" if dags else ""
    last = asset.last_event_at
    if last is not None and (newest is None or newest.timestamp < last):
        what = f"events exist that the listing hides from {who}: the newest at {last.isoformat()}" + (
            f" (cannot see producer {', '.join(dags)})" if dags else ""
        )
        return (
            what,
            grant
            or f"grant {who} can_read on the DAG that produces it (DAG:<id>; see the Permissions guide)",
        )
    if dags:
        return f"cannot see producer {', '.join(dags)}: its events would be hidden from {who}", grant
    return None


def summarize(checks: list[Check]) -> tuple[bool, str]:
    """Turn checks into the ``(ok, message)`` pair Airflow's connection test expects."""
    failed = [c for c in checks if not c.ok]
    if failed:
        c = failed[0]
        return False, f"{c.name}: {c.detail}" + (f". {c.hint}" if c.hint else "")
    return True, "; ".join(c.detail for c in checks)


def render(checks: list[Check]) -> str:
    """Render checks as a terminal report."""
    lines = []
    for c in checks:
        lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if c.hint and not c.ok:
            lines.append(f"       fix: {c.hint}")
    return "\n".join(lines)
