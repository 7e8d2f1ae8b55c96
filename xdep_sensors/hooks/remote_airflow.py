"""``RemoteAirflowHook``: an Airflow connection of type ``remote_airflow`` turned into a client."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from airflow import __version__ as airflow_version
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook
from asgiref.sync import async_to_sync

from xdep_sensors.client import ClientConfig, RemoteAirflowClient, normalize_base_url
from xdep_sensors.client.session import unknown_auth
from xdep_sensors.core.registry import PerLoop
from xdep_sensors.errors import ConfigurationError
from xdep_sensors.hooks.aws_mwaa import mwaa_settings
from xdep_sensors.hooks.google_composer import google_settings

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

T = TypeVar("T")

# one client (so one aiohttp session) per event loop and connection, shared by every trigger
CLIENTS: PerLoop[ClientConfig, RemoteAirflowClient] = PerLoop()

# Triggers of one loop share one connection lookup for CONFIG_TTL_S instead of asking the secrets
# backend on every poll; a changed connection reaches them within the TTL.
CONFIG_TTL_S = 30.0
_ttl_clock = time.monotonic
CONFIGS: PerLoop[str, tuple[float, asyncio.Future]] = PerLoop()  # conn id -> (when, its config lookup)


def _as_bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool) or value is None:
        return True if value is None else value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes", ""):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    return text


# the ClientConfig fields of each cloud's ``auth`` (importing their modules registers their transports)
CLOUD_SETTINGS = {"aws_mwaa": mwaa_settings, "google": google_settings}


def config_from_connection(conn: Connection, extra: dict[str, Any]) -> ClientConfig:
    """Build a :class:`ClientConfig` from a connection and its decoded extra."""
    try:
        timeout = float(extra.get("timeout") or 30)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"extra timeout={extra.get('timeout')!r} of connection {conn.conn_id!r} "
            "is not a number of seconds"
        ) from None
    auth = str(extra.get("auth") or "").strip().lower()
    if auth in CLOUD_SETTINGS:
        where = CLOUD_SETTINGS[auth](conn, extra)
    elif auth:
        raise unknown_auth(conn.conn_id, str(extra.get("auth")))
    else:
        where = {
            "base_url": normalize_base_url(conn.host or "", schema=conn.schema, port=conn.port),
            "login": conn.login or None,
            "password": conn.password or None,
        }
    ui_url = extra.get("ui_url") or where.pop("ui_url", None)
    return ClientConfig(
        **where,
        api_version=str(extra.get("api_version") or "auto").lower(),
        verify=_as_bool_or_path(extra.get("verify")),
        timeout=timeout,
        ui_url=ui_url,
        conn_id=conn.conn_id,
        client_name=str(extra["client_name"]) if extra.get("client_name") else None,
        airflow_version=airflow_version,
    )


def _missing(conn_id: str) -> ConfigurationError:
    return ConfigurationError(
        f"connection {conn_id!r} does not exist in this deployment",
        hint="create it (type remote_airflow, host = the upstream URL, password = a read-only API token), "
        f"e.g. with the environment variable AIRFLOW_CONN_{conn_id.upper()}",
    )


class RemoteAirflowHook(BaseHook):
    """
    Reads an upstream Airflow deployment's REST API (v2 for Airflow 3, v1 for Airflow 2.9+).

    :param remote_conn_id: connection of type ``remote_airflow`` pointing at the upstream deployment.
    """

    conn_name_attr = "remote_conn_id"
    default_conn_name = "remote_airflow_default"
    conn_type = "remote_airflow"
    hook_name = "Remote Airflow deployment"

    def __init__(self, remote_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.remote_conn_id = remote_conn_id

    async def aget_config(self) -> ClientConfig:
        """Resolve the connection without blocking the event loop (safe in the triggerer)."""
        try:
            conn = await get_async_connection(self.remote_conn_id, self)
        except Exception as exc:
            if type(exc).__name__ in ("AirflowNotFoundException", "ConnectionNotFound"):
                raise _missing(self.remote_conn_id) from None
            raise
        return config_from_connection(conn, await get_async_extra_dejson(conn))

    def get_config(self) -> ClientConfig:
        """Resolve the connection synchronously (worker, CLI)."""
        try:
            conn = self.get_connection(self.remote_conn_id)
        except Exception as exc:
            if type(exc).__name__ in ("AirflowNotFoundException", "ConnectionNotFound"):
                raise _missing(self.remote_conn_id) from None
            raise
        return config_from_connection(conn, conn.extra_dejson)

    async def aget_shared_config(self) -> ClientConfig:
        """The connection's client config, read at most once per ``CONFIG_TTL_S`` on this event loop."""
        return await shared_config(self.remote_conn_id, self)

    async def aget_client(self) -> RemoteAirflowClient:
        """Return the client shared on this event loop for this connection.

        The connection is read at most once per ``CONFIG_TTL_S`` per event loop.
        """
        return self.client_for(await self.aget_shared_config())

    @staticmethod
    def client_for(config: ClientConfig) -> RemoteAirflowClient:
        """Return the client (one aiohttp session) shared on this event loop for ``config``."""
        return CLIENTS.get(config, lambda: RemoteAirflowClient(config))

    def run(self, fn: Callable[[RemoteAirflowClient], Awaitable[T]], config: ClientConfig | None = None) -> T:
        """Run ``fn(client)`` from synchronous code: the same async path, wrapped by ``async_to_sync``."""
        config = config or self.get_config()

        async def _go() -> T:
            async with RemoteAirflowClient(config) as client:
                return await fn(client)

        return async_to_sync(_go)()

    def test_connection(self) -> tuple[bool, str]:
        """Check reachability, API version, authentication and read access, as the UI Test button expects."""
        from xdep_sensors.core.doctor import diagnose, summarize

        try:
            checks = self.run(lambda client: diagnose(client))
        except Exception as exc:
            return False, str(exc)
        return summarize(checks)


async def shared_config(remote_conn_id: str, hook: RemoteAirflowHook | None = None) -> ClientConfig:
    """``remote_conn_id``'s client config, read at most once per ``CONFIG_TTL_S`` on this event loop."""
    per_loop = CONFIGS.here()
    now = _ttl_clock()
    hit = per_loop.get(remote_conn_id)
    if hit is None or now - hit[0] > CONFIG_TTL_S or (hit[1].done() and hit[1].exception() is not None):
        lookup = (hook or RemoteAirflowHook(remote_conn_id)).aget_config()
        hit = per_loop[remote_conn_id] = (now, asyncio.ensure_future(lookup))
    if hit[1].done():
        return hit[1].result()
    return await asyncio.shield(hit[1])
