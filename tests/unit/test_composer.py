"""Cloud Composer (``auth: google``): bearer tokens of a Google identity, renewed off the event loop
before they expire and once more when refused. A recording stand-in for google-auth's credentials
here; real google-auth against a token endpoint double and real upstreams in
tests/integration/test_composer_live.py."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from google.auth import exceptions as gexc

from tests.helpers import UPSTREAM, upstream_mock, url
from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.errors import AuthenticationError, ConfigurationError, PermissionDenied, UpstreamUnavailable
from xdep_sensors.hooks.google_composer import GoogleTokens, google_transport
from xdep_sensors.hooks.remote_airflow import config_from_connection

DAG = {"dag_id": "d", "is_paused": False}


class Credentials:
    """google-auth's credentials as the tokens use them: ``token``, naive-UTC ``expiry``, ``refresh``."""

    def __init__(self, lifetime: timedelta = timedelta(hours=1), fail: BaseException | None = None):
        self.lifetime, self.fail = lifetime, fail
        self.token: str | None = None
        self.expiry: datetime | None = None
        self.refreshes: list[int] = []  # the thread of each refresh

    def refresh(self, request: Any) -> None:
        self.refreshes.append(threading.get_ident())
        if self.fail is not None:
            raise self.fail
        self.token = f"ya29.token-{len(self.refreshes)}"
        self.expiry = datetime.now(timezone.utc).replace(tzinfo=None) + self.lifetime


@pytest.fixture
def creds(monkeypatch) -> Credentials:
    made = Credentials()

    class Hook:
        def __init__(self, gcp_conn_id: str):
            assert gcp_conn_id == "gcp_x"

        def get_credentials_and_project_id(self):
            return made, "project"

    import airflow.providers.google.common.hooks.base_google as base_google

    monkeypatch.setattr(base_google, "GoogleBaseHook", Hook)
    return made


def client() -> RemoteAirflowClient:
    config = ClientConfig(
        base_url=UPSTREAM, auth="google", gcp_conn_id="gcp_x", conn_id="up", api_version="v2"
    )
    return RemoteAirflowClient(config, transport=google_transport(config))


def bearer(m, method: str, path: str) -> list[str]:
    return [
        call.kwargs["headers"]["Authorization"]
        for (verb, u), calls in m.requests.items()
        if verb == method and str(u).split("?")[0] == UPSTREAM + path
        for call in calls
    ]


async def test_every_request_carries_a_token_renewed_off_the_loop(creds):
    with upstream_mock() as m:
        m.get(url("/api/v2/dags/d"), payload=DAG, repeat=True)
        async with client() as c:
            await c.get_dag("d")
            await c.get_dag("d")
    assert bearer(m, "GET", "/api/v2/dags/d") == ["Bearer ya29.token-1"] * 2
    assert bearer(m, "GET", "/api/v2/version") == ["Bearer ya29.token-1"]  # the version too
    assert len(creds.refreshes) == 1 and creds.refreshes[0] != threading.get_ident()


async def test_a_token_is_renewed_before_it_expires(creds):
    creds.lifetime = timedelta(seconds=2)  # renewed a quarter of its life early: at most 0.5 s left
    tokens = GoogleTokens("gcp_x")
    first = await tokens.token()
    assert await tokens.token() == first  # 2 s of life left: kept
    creds.expiry = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=0.4)
    assert await tokens.token() != first and tokens.renewals == 2


async def test_a_refused_token_is_renewed_once_and_the_request_sent_again(creds):
    with upstream_mock() as m:
        m.get(url("/api/v2/dags/d"), status=401, payload={"detail": "Unauthorized"})
        m.get(url("/api/v2/dags/d"), payload=DAG)
        async with client() as c:
            assert (await c.get_dag("d")).dag_id == "d"
    assert bearer(m, "GET", "/api/v2/dags/d") == ["Bearer ya29.token-1", "Bearer ya29.token-2"]


@pytest.mark.parametrize(("status", "kind"), [(401, AuthenticationError), (403, PermissionDenied)])
async def test_refused_twice_says_which_roles_are_missing(creds, status, kind):
    with upstream_mock() as m:
        m.get(url("/api/v2/dags/d"), status=status, payload={"detail": "Forbidden"}, repeat=True)
        async with client() as c:
            with pytest.raises(kind) as caught:
                await c.get_dag("d")
    assert "roles/composer.user" in str(caught.value) and "Viewer" in str(caught.value)
    assert len(bearer(m, "GET", "/api/v2/dags/d")) == 2 and len(creds.refreshes) == 2


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (
            gexc.RefreshError("invalid_grant: Invalid JWT Signature.", {}),
            AuthenticationError,
            "create a new key",
        ),
        (gexc.RefreshError("invalid_scope: Bad scope", {}), ConfigurationError, "cloud-platform"),
        (gexc.RefreshError("server error", retryable=True), UpstreamUnavailable, "unavailable"),
        (gexc.TransportError("connection refused"), UpstreamUnavailable, "did not answer"),
        (gexc.DefaultCredentialsError("none"), AuthenticationError, "workload identity"),
    ],
)
async def test_google_faults_with_the_fix(creds, error, kind, words):
    creds.fail = error
    with pytest.raises(kind, match=words) as caught:
        await GoogleTokens("gcp_x").token()
    assert caught.value.transient == (kind is UpstreamUnavailable)
    assert "gcp_x" in str(caught.value) or kind is UpstreamUnavailable


async def test_without_the_google_extra_the_first_look_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.auth.transport.requests", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'xdep-sensors\[google\]'"):
        await GoogleTokens("gcp_x").token()


def test_the_connection_extra_says_google():
    conn = SimpleNamespace(
        conn_id="up",
        host="https://abc-dot-europe-west1.composer.googleusercontent.com",
        schema=None,
        port=None,
    )
    conn.login = conn.password = None
    config = config_from_connection(conn, {"auth": "google"})
    assert (config.auth, config.gcp_conn_id) == ("google", "google_cloud_default")
    assert config.base_url == "https://abc-dot-europe-west1.composer.googleusercontent.com"
    assert config.where == config.base_url
