"""What the connection's user cannot see: under per-DAG roles Airflow answers 403 for a DAG it may not
read (and for an absent one), and its listings leave such DAGs and, from 3.3, their asset events out in
silence. See docs/guides/permissions.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.client.records import Asset, Dag
from xdep_sensors.core.names import close_matches
from xdep_sensors.errors import NotVisible, PermissionDenied, XdepError


def dag_not_visible(client: RemoteAirflowClient, dag_id: str, readable: Iterable[str]) -> NotVisible:
    """The error for a DAG that answers 403 while the user may list DAGs: absent, or not readable."""
    who = client.config.who
    nearby = close_matches(dag_id, list(readable))
    return NotVisible(
        f"DAG {dag_id!r} not found at {client.config.where}, or not readable by {who}",
        hint=(f"check the DAG id (close matches: {', '.join(nearby)})" if nearby else "check the DAG id")
        + f", or grant {who} read on DAG:{dag_id} (can_read on DAG:{dag_id}; see the Permissions guide)",
    )


async def readable_dag_ids(client: RemoteAirflowClient) -> list[str]:
    """The ids of every DAG the upstream lists to this user (only those it may read)."""
    return [d.dag_id for d in await client.list_dags()]


async def visible_dag(
    client: RemoteAirflowClient,
    dag_id: str,
    fetch: Callable[[str], Awaitable[Dag]] | None = None,
    readable: Callable[[], Awaitable[list[str]]] | None = None,
) -> Dag:
    """``fetch(dag_id)``; a 403 becomes :class:`NotVisible` when the user may list DAGs (``readable``),
    and stays itself when it may not (wrong credentials on Airflow 2, no read on DAGs at all)."""
    try:
        return await (fetch or client.get_dag)(dag_id)
    except PermissionDenied as denied:
        try:
            known = await (readable() if readable else readable_dag_ids(client))
        except XdepError:
            raise denied from None
        raise dag_not_visible(client, dag_id, known) from None


async def hidden_producers(
    client: RemoteAirflowClient, assets: Iterable[Asset], source_dag_id: str | None = None
) -> dict[int, list[str]]:
    """Per asset id, the producing DAGs whose events the event listing leaves out for this user.

    Only Airflow 3.3+ scopes events to readable DAGs; ``source_dag_id`` counts as a producer. One DAG
    listing (the user's readable DAGs) answers for every asset.
    """
    assets = list(assets)
    if not assets or not await client.events_scoped():
        return {}
    wanted = {a.id: set(a.producers) | ({source_dag_id} if source_dag_id else set()) for a in assets}
    every = sorted(set().union(*wanted.values()))
    if not every:
        return {}
    try:
        seen = await client.find_dags(every)
    except PermissionDenied:  # it may read no DAG at all: every producer is hidden
        seen = {}
    hidden = {asset_id: sorted(d for d in dags if d not in seen) for asset_id, dags in wanted.items()}
    return {asset_id: dags for asset_id, dags in hidden.items() if dags}


def producers_line(client: RemoteAirflowClient, label: str, dag_ids: list[str]) -> str:
    """What a wait says when a producer's events are hidden (no secret: DAG ids and the user)."""
    who = client.config.who
    grants = ", ".join(f"DAG:{d}" for d in dag_ids)
    return (
        f"{label}: cannot see producer {', '.join(dag_ids)}: {client.config.where} lists no event of a DAG "
        f"{who} may not read (Airflow 3.3+); grant {who} can_read on {grants}"
    )


def source_not_visible(client: RemoteAirflowClient, source_dag_id: str) -> NotVisible:
    """The error for ``source_dag_id`` hidden from the user: no event of it can ever be seen."""
    who = client.config.who
    return NotVisible(
        f"source_dag_id {source_dag_id!r}: DAG not found at {client.config.where}, or not readable by {who}, "
        "whose asset event listing then leaves its events out",
        hint=f"check source_dag_id, or grant {who} can_read on DAG:{source_dag_id} "
        "(see the Permissions guide)",
    )
