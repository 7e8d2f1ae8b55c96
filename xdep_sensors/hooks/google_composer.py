"""``auth: google``: Cloud Composer's web server, with bearer tokens of an Airflow Google connection.

The Google provider's own hook reads the connection (a key file or dict, impersonation chains,
workload identity, the default credentials) and google-auth makes and renews the OAuth 2 access token
(cloud-platform scope). google-auth is synchronous: every renewal runs in a thread, never on the
triggerer's event loop. A token is renewed before it expires (a quarter of its life early, at most a
minute) and once more when the environment refuses it (401 or 403).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from asgiref.sync import sync_to_async

from xdep_sensors.client.session import TRANSPORTS, ClientConfig, Transport, normalize_base_url
from xdep_sensors.errors import AuthenticationError, ConfigurationError, UpstreamUnavailable, XdepError

AUTH = "google"
DEFAULT_GCP_CONN_ID = "google_cloud_default"
INSTALL = "pip install 'xdep-sensors[google]'"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
EARLY_MAX = timedelta(minutes=1)  # renew at most this long before a token expires
REFUSED_HINT = (
    "the environment refused a fresh Google token: give the service account the IAM role Composer User "
    "(roles/composer.user) on the project, and an Airflow role that may read DAGs, DAG runs and assets: "
    "register it as Viewer (Composer registers a first-time API caller in its default role)"
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # google-auth's expiry is naive UTC


class GoogleTokens:
    """The access tokens of one Airflow Google connection, renewed off the event loop."""

    refused_hint = REFUSED_HINT

    def __init__(self, gcp_conn_id: str):
        self.gcp_conn_id = gcp_conn_id
        self._credentials: Any = None
        self._early = EARLY_MAX
        self._lock = asyncio.Lock()
        self.renewals = 0

    def _fresh(self) -> bool:
        creds = self._credentials
        if creds is None or not creds.token:
            return False
        return creds.expiry is None or _utcnow() < creds.expiry - self._early

    async def token(self) -> str:
        async with self._lock:
            if not self._fresh():
                await self._renew()
            return str(self._credentials.token)

    async def refresh(self, stale: str) -> str:
        async with self._lock:
            if self._credentials is None or self._credentials.token == stale:
                await self._renew()
            return str(self._credentials.token)

    async def _renew(self) -> None:
        try:
            self._credentials = await sync_to_async(self._renewed, thread_sensitive=False)()
        except XdepError:
            raise
        except Exception as exc:
            raise _google_error(exc, self.gcp_conn_id) from None
        self.renewals += 1
        expiry = self._credentials.expiry
        if expiry is not None:  # a quarter of the token's life early, at most EARLY_MAX
            self._early = min(EARLY_MAX, max(expiry - _utcnow(), timedelta(0)) / 4)

    def _renewed(self) -> Any:
        """Synchronous, in a thread: the provider's credentials (once), renewed by google-auth."""
        try:
            from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
            from google.auth.transport.requests import Request
        except ImportError as exc:
            raise ConfigurationError(
                f"auth={AUTH} needs the Google provider ({exc.name or exc} is not installed)", hint=INSTALL
            ) from None
        credentials = self._credentials
        if credentials is None:
            credentials, _ = GoogleBaseHook(gcp_conn_id=self.gcp_conn_id).get_credentials_and_project_id()
        credentials.refresh(Request())
        return credentials


def _google_error(exc: BaseException, gcp_conn_id: str) -> XdepError:
    """google-auth's and the provider's errors as the library's, with the fix; no key or token in it."""
    name = type(exc).__name__
    conn = f"Google connection {gcp_conn_id!r}"
    text = str(exc)
    if name == "RefreshError":
        if "invalid_scope" in text:
            return ConfigurationError(
                f"Google issues no token with the cloud-platform scope for {conn} (invalid_scope)",
                hint=f'set the connection\'s "scope" extra to {CLOUD_PLATFORM}, or leave it empty',
            )
        if "invalid_grant" in text:
            return AuthenticationError(
                f"Google refused the key of {conn} (invalid_grant)",
                hint="the service account key was deleted or disabled, or the account no longer exists: "
                "create a new key (or check this machine's clock)",
            )
        if getattr(exc, "retryable", False):
            return UpstreamUnavailable(f"the Google token endpoint is unavailable ({name})")
        return AuthenticationError(f"Google refused to issue a token for {conn} ({name})")
    if name == "TransportError":
        return UpstreamUnavailable(f"the Google token endpoint did not answer ({name})")
    if name == "DefaultCredentialsError":
        return AuthenticationError(
            f"no Google credentials for {conn}",
            hint="give the connection a key (key_path or keyfile_dict), or run where the default "
            "credentials are found (workload identity, GOOGLE_APPLICATION_CREDENTIALS)",
        )
    if name in ("AirflowNotFoundException", "ConnectionNotFound"):
        return ConfigurationError(
            f"{conn} does not exist in this deployment", hint="create it (type google_cloud_platform)"
        )
    return ConfigurationError(f"{conn} cannot be used ({name})")


def google_transport(config: ClientConfig) -> Transport:
    """The transport for ``config`` (``auth: google``): HTTP to the host with the tokens above."""
    return Transport(config, tokens=GoogleTokens(config.gcp_conn_id or DEFAULT_GCP_CONN_ID))


TRANSPORTS[AUTH] = google_transport


def google_settings(conn: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The :class:`ClientConfig` fields of an ``auth: google`` connection: its host is the web server."""
    return {
        "auth": AUTH,
        "gcp_conn_id": str(extra.get("gcp_conn_id") or DEFAULT_GCP_CONN_ID),
        "base_url": normalize_base_url(conn.host or "", schema=conn.schema, port=conn.port),
    }
