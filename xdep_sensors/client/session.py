"""The one HTTP path: an aiohttp session, authentication, retries and error classification."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

import aiohttp

from xdep_sensors.client.dialects import Request
from xdep_sensors.client.policy import MAX_BODY_BYTES, RetryPolicy, decipher_response, is_retryable
from xdep_sensors.errors import (
    AuthenticationError,
    BadResponse,
    ConfigurationError,
    PermissionDenied,
    TLSError,
    UpstreamUnavailable,
    XdepError,
    safe_url,
)

log = logging.getLogger(__name__)

API_VERSIONS = ("auto", "v1", "v2")


def normalize_base_url(host: str, *, schema: str | None = None, port: int | None = None) -> str:
    """Return ``scheme://host[:port][/prefix]`` from what a user typed (scheme optional, https assumed)."""
    host = (host or "").strip()
    if not host:
        raise ConfigurationError("the connection has no host", hint="set it to the upstream deployment's URL")
    if "://" not in host:
        scheme = schema if schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"the connection's host {safe_url(host)!r} is not an http(s) URL")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port or port:
        netloc = f"{netloc}:{parts.port or port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client needs, built from an Airflow connection; secrets never appear in its repr."""

    base_url: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    api_version: str = "auto"
    verify: bool | str = True
    timeout: float = 30.0
    ui_url: str | None = None
    conn_id: str = "remote_airflow_default"
    client_name: str | None = None  # who polls, in the User-Agent (see :func:`user_agent`)
    airflow_version: str = "unknown"  # the downstream's Airflow, in the User-Agent (the hook sets it)
    # How requests reach the upstream: "" (HTTP to ``base_url`` with the login/password/token above) or
    # the name of a cloud transport (:data:`TRANSPORTS`, e.g. "aws_mwaa"), with its own settings.
    auth: str = ""
    mwaa_environment: str | None = None
    aws_conn_id: str | None = None
    gcp_conn_id: str | None = None

    def __post_init__(self):
        if self.api_version not in API_VERSIONS:
            raise ConfigurationError(
                f"extra api_version={self.api_version!r} is not one of {', '.join(API_VERSIONS)}",
                hint=f"fix the extra of connection {self.conn_id!r}",
            )
        if self.timeout <= 0:
            raise ConfigurationError(f"extra timeout={self.timeout!r} must be a positive number of seconds")

    @property
    def auth_mode(self) -> str:
        """``token`` (password only), ``login`` (login + password), ``none``, or the cloud ``auth``."""
        if self.auth:
            return self.auth
        if self.password and self.login:
            return "login"
        return "token" if self.password else "none"

    @property
    def ui_base(self) -> str:
        """The upstream UI's root for links; empty when no web address is known (an MWAA environment
        reached without its web server URL)."""
        base = self.ui_url or self.base_url
        return base.rstrip("/") if base.startswith(("http://", "https://")) else ""

    @property
    def who(self) -> str:
        """Whom the upstream sees, as the fix for a permission names it (never a secret)."""
        return {
            "login": f"user {self.login!r}",
            "token": "the connection's token",
            "aws_mwaa": f"the Airflow role that AWS connection {self.aws_conn_id!r}'s IAM identity maps to",
            "google": f"the Airflow user of Google connection {self.gcp_conn_id!r}'s identity",
        }.get(self.auth_mode, "an anonymous caller")

    @property
    def where(self) -> str:
        """The upstream as people name it: its URL, or ``MWAA environment <name>``."""
        if self.auth == "aws_mwaa":
            return f"MWAA environment {self.mwaa_environment}"
        return self.base_url


CLIENT_NAME_ENV = "XDEP_SENSORS_CLIENT_NAME"


def user_agent(client_name: str | None = None, airflow_version: str = "unknown") -> str:
    """``xdep-sensors/<version> (Airflow <version>; <client name>)``: who sends the upstream requests.

    The name: ``client_name``, else ``XDEP_SENSORS_CLIENT_NAME``; printable ASCII without ``();``, at
    most 100 characters.
    """
    from xdep_sensors.version import __version__

    name = client_name if client_name is not None else os.environ.get(CLIENT_NAME_ENV, "")
    name = " ".join(
        "".join(c if c.isprintable() and c.isascii() and c not in "();" else " " for c in name).split()
    )
    details = f"Airflow {airflow_version}" + (f"; {name[:100]}" if name else "")
    return f"xdep-sensors/{__version__} ({details})"


class BaseTransport:
    """Sends :class:`Request` objects to one upstream, retrying transient failures by the one rule.

    A kind of transport says how one request reaches the upstream (:meth:`deliver`): HTTP with an
    Airflow token or password (:class:`Transport`), or a cloud's API signed with the caller's cloud
    identity. The client above never knows which.
    """

    # The longest path the transport can send (``None``: no limit); the client reads around it.
    path_limit: int | None = None

    def __init__(self, config: ClientConfig, *, retry: RetryPolicy | None = None, sleep=None):
        self.config = config
        self.retry = retry or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self.dialect_name: str | None = None  # set by the client once the API version is known
        self.requests_sent = 0

    def fits(self, request: Request) -> bool:
        """Whether ``request``'s path is short enough for this transport."""
        return True

    async def deliver(self, request: Request) -> Any:
        """One try at ``request`` (with its authentication); raise an :class:`XdepError` when it fails."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the transport holds (sessions, cloud clients)."""

    async def send(self, request: Request) -> Any:
        """Send with the retry policy; raise an :class:`XdepError` when it fails."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.deliver(request)
            except XdepError as err:
                if not is_retryable(err) or attempt >= self.retry.attempts:
                    raise
                wait = self.retry.delay(attempt, err)
                log.info(
                    "upstream %s (%s); retry %d/%d in %.1fs",
                    safe_url(err.url),
                    err.message,
                    attempt,
                    self.retry.attempts - 1,
                    wait,
                )
                await self._sleep(wait)


class TokenSource(Protocol):
    """Bearer tokens that expire, from a cloud identity (e.g. Google's, for Cloud Composer).

    ``token()`` returns one valid for a while yet (renewed before it expires); ``refresh(stale)``
    renews it once the upstream refused ``stale``; ``refused_hint`` says what to fix when the upstream
    refuses a fresh one too.
    """

    refused_hint: str

    async def token(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


class Transport(BaseTransport):
    """HTTP to the upstream's URL: one reused aiohttp session, an Airflow token, password or JWT, or
    the bearer tokens of a :class:`TokenSource`."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        retry: RetryPolicy | None = None,
        sleep=None,
        tokens: TokenSource | None = None,
    ):
        super().__init__(config, retry=retry, sleep=sleep)
        self._session: aiohttp.ClientSession | None = None
        self._jwt: str | None = None
        self._jwt_lock = asyncio.Lock()
        self.tokens = tokens

    def _ssl(self) -> ssl.SSLContext | bool:
        verify = self.config.verify
        if verify is False:
            return False
        if isinstance(verify, str):
            return ssl.create_default_context(cafile=verify)
        return True

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=32),
                headers={
                    "Accept": "application/json",
                    "User-Agent": user_agent(self.config.client_name, self.config.airflow_version),
                },
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _auth_headers(self, request: Request) -> tuple[dict[str, str], aiohttp.BasicAuth | None]:
        cfg = self.config
        if not request.auth or cfg.auth_mode == "none":
            return {}, None
        if cfg.auth_mode == "token":
            return {"Authorization": f"Bearer {cfg.password}"}, None
        if self.dialect_name == "v1":
            return {}, aiohttp.BasicAuth(cfg.login or "", cfg.password or "")
        return {"Authorization": f"Bearer {await self._get_jwt()}"}, None

    async def _get_jwt(self, stale: str | None = None) -> str:
        async with self._jwt_lock:
            if self._jwt is None or self._jwt == stale:
                body = {"username": self.config.login, "password": self.config.password}
                try:
                    answer = await self._send_once(Request("POST", "/auth/token", json=body, auth=False))
                except AuthenticationError as err:
                    raise self._auth_failed(err) from None
                except XdepError as err:
                    if err.status in (400, 401, 403, 422):
                        raise self._auth_failed(err) from None
                    raise
                token = answer.get("access_token") if isinstance(answer, dict) else None
                if not token:
                    raise BadResponse(
                        "POST /auth/token answered without an access_token", url=self._url("/auth/token")
                    )
                self._jwt = token
            return self._jwt

    def _auth_failed(self, err: XdepError) -> AuthenticationError:
        return AuthenticationError(
            f"authentication failed for conn {self.config.conn_id!r} at {self.config.base_url}",
            status=err.status,
            url=err.url,
            hint="check the login and password (or use an API token in the password field alone)",
        )

    def _url(self, path: str) -> str:
        return f"{self.config.base_url}{path}"

    async def _send_once(
        self,
        request: Request,
        *,
        headers: dict[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> Any:
        url = self._url(request.path)
        self.requests_sent += 1
        try:
            async with self.session().request(
                request.method,
                url,
                params=list(request.params) or None,
                json=request.json,
                headers=headers,
                auth=auth,
                allow_redirects=False,
            ) as resp:
                body = await _read_body(resp.content, MAX_BODY_BYTES + 1)
                if len(body) > MAX_BODY_BYTES:
                    raise BadResponse(
                        f"the upstream answer exceeds {MAX_BODY_BYTES // 2**20} MiB",
                        url=url,
                        hint="the upstream or a proxy is misbehaving",
                    )
                return decipher_response(resp.status, resp.headers, body, url, api=self.dialect_name or "")
        except XdepError:
            raise
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TLSError(
                f"TLS certificate verification failed: {exc.certificate_error}",
                url=url,
                hint="fix the certificate, or set extra verify to a CA bundle path (or false)",
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise TLSError(
                f"TLS handshake failed: {type(exc).__name__}",
                url=url,
                hint="check the scheme (http vs https) or set extra verify",
            ) from None
        except aiohttp.ClientConnectorDNSError:
            raise ConfigurationError(
                f"cannot resolve host {urlsplit(url).hostname!r}",
                url=url,
                hint=f"check the host of connection {self.config.conn_id!r}",
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise UpstreamUnavailable(f"the upstream did not answer ({reason})", url=url) from None
        except aiohttp.InvalidURL:
            raise ConfigurationError("invalid upstream URL", url=url) from None

    async def deliver(self, request: Request) -> Any:
        if self.tokens is not None:
            return await self._deliver_with_tokens(request)
        headers, basic = await self._auth_headers(request)
        try:
            return await self._send_once(request, headers=headers, auth=basic)
        except AuthenticationError:
            if self.config.auth_mode == "login" and self.dialect_name != "v1" and request.auth:
                # the JWT expired: exchange the credentials once more, then try once more
                await self._get_jwt(stale=self._jwt)
                headers, basic = await self._auth_headers(request)
                try:
                    return await self._send_once(request, headers=headers, auth=basic)
                except AuthenticationError as again:
                    raise self._auth_failed(again) from None
            raise

    async def _deliver_with_tokens(self, request: Request) -> Any:
        """A refused token is renewed once and the request sent once more; refused again, the
        identity itself may not: say what to fix."""
        assert self.tokens is not None
        token = await self.tokens.token()
        try:
            return await self._send_once(request, headers={"Authorization": f"Bearer {token}"})
        except (AuthenticationError, PermissionDenied):
            token = await self.tokens.refresh(token)
        try:
            return await self._send_once(request, headers={"Authorization": f"Bearer {token}"})
        except (AuthenticationError, PermissionDenied) as err:
            err.hint = self.tokens.refused_hint
            raise


# How a request reaches the upstream, by the connection's ``auth`` extra: "" is HTTP (above); a cloud
# transport is registered under its name by the code that can build it (the hooks, which may use
# Airflow and the cloud's provider), so this layer stays free of both.
TRANSPORTS: dict[str, Callable[[ClientConfig], BaseTransport]] = {"": Transport}


def unknown_auth(conn_id: str, auth: str) -> ConfigurationError:
    known = ", ".join(repr(k) for k in sorted(TRANSPORTS) if k)
    return ConfigurationError(
        f"extra auth={auth!r} of connection {conn_id!r} is not a known way to authenticate",
        hint=f"use one of {known}, or remove the extra auth to use the login/password/token fields",
    )


def new_transport(config: ClientConfig) -> BaseTransport:
    """The transport ``config.auth`` names."""
    make = TRANSPORTS.get(config.auth)
    if make is None:
        raise unknown_auth(config.conn_id, config.auth)
    return make(config)


async def _read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Read the body up to ``limit`` bytes; ``read(n)`` alone returns only what has arrived so far."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
