"""``auth: aws_mwaa``: the transport to an MWAA environment, built from an Airflow AWS connection.

The Amazon provider's own code reads the AWS connection (keys, or the default credential chain, role
assumption, region, ``config_kwargs``, ``endpoint_url``) and makes the aiobotocore client
(``MwaaHook.get_async_conn``, as the provider's deferrable triggers do). The library calls
``invoke_rest_api`` on it directly: not ``MwaaHook.invoke_rest_api``, which on an IAM denial falls back
to a web login token and logs each error at ERROR, so a missing permission would never surface.
botocore's own retries are turned off: the library's one retry rule governs, and every call is counted.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async

from xdep_sensors.client.mwaa import MwaaTransport
from xdep_sensors.client.session import TRANSPORTS, ClientConfig, normalize_base_url
from xdep_sensors.errors import ConfigurationError

AUTH = "aws_mwaa"
DEFAULT_AWS_CONN_ID = "aws_default"
INSTALL = "pip install 'xdep-sensors[amazon]'"


def _mwaa_hook(aws_conn_id: str) -> Any:
    """An ``MwaaHook`` for the AWS connection with botocore's retries off (synchronous: it reads the
    connection; the triggerer runs it in a thread)."""
    try:
        from airflow.providers.amazon.aws.hooks.mwaa import MwaaHook
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigurationError(
            f"auth={AUTH} needs the Amazon provider ({exc.name or exc} is not installed)", hint=INSTALL
        ) from None
    try:
        import aiobotocore  # noqa: F401  (the provider's async client)
    except ImportError:
        raise ConfigurationError(
            f"auth={AUTH} needs aiobotocore for the Amazon provider's async client", hint=INSTALL
        ) from None
    conn_config = MwaaHook(aws_conn_id=aws_conn_id).config  # the AWS connection's config_kwargs
    one_try = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return MwaaHook(aws_conn_id=aws_conn_id, config=(conn_config or Config()).merge(one_try))


def mwaa_transport(config: ClientConfig) -> MwaaTransport:
    """The transport for ``config`` (``auth: aws_mwaa``): one aiobotocore client, made on first use."""
    aws_conn_id = config.aws_conn_id or DEFAULT_AWS_CONN_ID

    async def connect() -> Any:
        hook = await sync_to_async(_mwaa_hook)(aws_conn_id)
        creator = await hook.get_async_conn()
        return await creator.__aenter__()  # the client; MwaaTransport.close() closes it

    return MwaaTransport(config, connect)


TRANSPORTS[AUTH] = mwaa_transport


def mwaa_settings(conn: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ClientConfig` fields of an ``auth: aws_mwaa`` connection; its host, optional, is the
    environment's web server URL (links to the upstream UI only)."""
    environment = str(extra.get("mwaa_environment") or "").strip()
    if not environment:
        raise ConfigurationError(
            f"connection {conn.conn_id!r} says auth={AUTH} but has no extra mwaa_environment",
            hint='set "mwaa_environment" to the MWAA environment\'s name (and "aws_conn_id" to an AWS '
            f"connection, default {DEFAULT_AWS_CONN_ID})",
        )
    settings = {
        "auth": AUTH,
        "mwaa_environment": environment,
        "aws_conn_id": str(extra.get("aws_conn_id") or DEFAULT_AWS_CONN_ID),
        "base_url": f"mwaa://{environment}",
    }
    if conn.host:
        settings["ui_url"] = normalize_base_url(conn.host, schema=conn.schema, port=conn.port)
    return settings
