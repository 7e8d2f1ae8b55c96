"""devtools/google_doubles.py: the Google side of Cloud Composer, driven by real google-auth.

The front's upstream here is a tiny aiohttp echo server on loopback (this tests the doubles only).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
import types
from collections.abc import Iterator
from typing import Any

import google.auth._exponential_backoff as backoff
import pytest
import requests
from aiohttp import web
from google.auth import crypt, exceptions, jwt
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2 import _client, service_account

from devtools.google_doubles import (
    CLOUD_PLATFORM_SCOPE,
    GOOGLE_TOKEN_AUDIENCE,
    BearerFront,
    FrontCall,
    TokenCall,
    TokenEndpoint,
)
from devtools.loopback import Loopback

ALICE = "alice@xdep-test.iam.gserviceaccount.com"
BOB = "bob@xdep-test.iam.gserviceaccount.com"
STRANGER = "stranger@xdep-test.iam.gserviceaccount.com"
ALICE_AIRFLOW = {"Authorization": "Bearer airflow-jwt-alice"}
BOB_AIRFLOW = {"Authorization": "Basic Ym9iOmJvYi1wYXNz"}
BIGQUERY = "https://www.googleapis.com/auth/bigquery"


# ---------------------------------------------------------------------------------------------- helpers


async def _echo(request: web.Request) -> web.Response:
    path = request.raw_path.split("?")[0]
    if path.endswith("/missing"):
        return web.json_response({"detail": "Not Found"}, status=404)
    if path.endswith("/teapot"):
        return web.Response(status=418, text="short and stout", content_type="text/plain")
    raw = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": path,
            "query": request.raw_path.partition("?")[2],  # raw, as it arrived
            "auth": request.headers.get("Authorization"),
            "role": request.headers.get("X-Role"),
            "content_type": request.headers.get("Content-Type"),
            "body": raw.decode(),
        }
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _credentials(key: dict[str, str], scopes: list[str] | None = None) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_info(key, scopes=scopes or [CLOUD_PLATFORM_SCOPE])


def _token(key: dict[str, str]) -> str:
    creds = _credentials(key)
    creds.refresh(Request())
    return str(creds.token)


def _post_assertion(tokens: TokenEndpoint, assertion: bytes | str, **form: str) -> requests.Response:
    data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion, **form}
    return requests.post(tokens.token_uri, data=data, timeout=10)


def _assertion(key: dict[str, str], **claims: Any) -> bytes:
    now = int(time.time())
    payload = {
        "iss": key["client_email"],
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        "scope": CLOUD_PLATFORM_SCOPE,
    }
    payload.update(claims)
    return jwt.encode(crypt.RSASigner.from_service_account_info(key), payload)


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def keys(tokens: TokenEndpoint) -> dict[str, dict[str, str]]:
    return {email: tokens.service_account_key(email) for email in (ALICE, BOB, STRANGER)}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with Loopback(routes=lambda app: app.router.add_route("*", "/{tail:.*}", _echo)) as server:
        yield server.start()


@pytest.fixture(scope="module")
def front(tokens: TokenEndpoint, upstream: str) -> Iterator[tuple[BearerFront, str]]:
    double = BearerFront(tokens, upstream, {ALICE: ALICE_AIRFLOW, BOB: BOB_AIRFLOW})
    url = double.start()
    yield double, url
    double.stop()


@pytest.fixture
def backoff_waits(monkeypatch) -> list[float]:
    """google-auth's token-endpoint backoff sleeps, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(backoff, "time", types.SimpleNamespace(sleep=waits.append))
    return waits


# ---------------------------------------------------------------------------------------------- tokens


def test_the_key_is_a_service_account_key_google_auth_loads(tokens, keys):
    key = keys[ALICE]
    assert set(key) == {
        "type", "project_id", "private_key_id", "private_key", "client_email", "client_id", "auth_uri",
        "token_uri", "auth_provider_x509_cert_url", "client_x509_cert_url", "universe_domain",
    }  # fmt: skip
    assert key["type"] == "service_account"
    assert key["project_id"] == "xdep-test"
    assert key["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n")
    assert key["token_uri"] == tokens.token_uri == tokens.base_url + "/token"
    assert key["universe_domain"] == "googleapis.com"
    assert key["client_x509_cert_url"].endswith("/alice%40xdep-test.iam.gserviceaccount.com")
    assert len(key["client_id"]) == 21 and key["client_id"].isdigit()
    creds = _credentials(key)
    assert creds.service_account_email == ALICE
    assert creds._token_uri == tokens.token_uri


def test_refresh_gets_a_token_from_the_double(tokens, keys):
    before = tokens.grants(ALICE)
    creds = _credentials(keys[ALICE])
    creds.refresh(Request())
    assert creds.token.startswith("ya29.")
    assert tokens.token_owner(creds.token) == ALICE
    left = creds.expiry - dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert dt.timedelta(seconds=3590) < left <= dt.timedelta(seconds=3600)
    assert creds.valid
    assert tokens.grants(ALICE) == before + 1
    assert tokens.calls[-1] == TokenCall(ALICE, "granted")
    assert tokens.token_owner("ya29.never-issued") is None and tokens.token_owner(None) is None


def test_the_token_answer_is_googles_shape_and_lifetime_5_says_expires_in_5():
    with TokenEndpoint(lifetime=5) as short:
        short.start()
        key = short.service_account_key(ALICE)
        answer = _post_assertion(short, _assertion(key))
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("application/json")
        body = answer.json()
        assert set(body) == {"access_token", "expires_in", "token_type"}
        assert body["expires_in"] == 5 and body["token_type"] == "Bearer"
        creds = _credentials(key)
        creds.refresh(Request())
        left = creds.expiry - dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        assert dt.timedelta(seconds=3) < left <= dt.timedelta(seconds=5)
        # google-auth counts a token with less than 3 min 45 s left as expired: never valid here
        assert creds.expired and not creds.valid
        assert short.grants() == 2


def test_the_assertion_may_name_this_endpoint_as_audience(tokens, keys):
    answer = _post_assertion(tokens, _assertion(keys[ALICE], aud=tokens.token_uri))
    assert answer.status_code == 200
    assert tokens.token_owner(answer.json()["access_token"]) == ALICE


def test_a_tampered_key_is_invalid_grant(tokens, keys):
    tampered = {**keys[ALICE], "private_key": keys[BOB]["private_key"]}
    with pytest.raises(exceptions.RefreshError) as caught:
        _credentials(tampered).refresh(Request())
    error = caught.value
    assert type(error) is exceptions.RefreshError
    assert error.args[0] == "invalid_grant: Invalid JWT Signature."
    assert error.args[1] == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    assert "invalid_grant" in str(error)
    assert error.retryable is False
    assert tokens.calls[-1] == TokenCall(ALICE, "invalid_grant")


def test_an_unknown_key_id_is_invalid_grant(tokens, keys):
    unknown = {**keys[ALICE], "private_key_id": "0" * 40}
    with pytest.raises(exceptions.RefreshError, match="invalid_grant: Invalid JWT Signature"):
        _credentials(unknown).refresh(Request())


def test_an_issuer_other_than_the_keys_email_is_invalid_grant(tokens, keys):
    answer = _post_assertion(tokens, _assertion(keys[ALICE], iss=BOB))
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    assert tokens.calls[-1] == TokenCall(BOB, "invalid_grant")  # the claimed e-mail, unverified


def test_a_revoked_account_is_invalid_grant():
    with TokenEndpoint() as endpoint:
        endpoint.start()
        key = endpoint.service_account_key(ALICE)
        token = _token(key)
        endpoint.revoke(ALICE)
        with pytest.raises(exceptions.RefreshError) as caught:
            _credentials(key).refresh(Request())
        assert caught.value.args[0] == "invalid_grant: Invalid grant: account not found"
        assert caught.value.retryable is False
        assert endpoint.token_owner(token) == ALICE  # issued tokens live on unless revoked too
        endpoint.revoke(ALICE, tokens=True)
        assert endpoint.token_owner(token) is None
        assert [c.outcome for c in endpoint.calls] == ["granted", "invalid_grant"]


def test_a_wrong_audience_is_invalid_grant(tokens, keys):
    answer = _post_assertion(tokens, _assertion(keys[ALICE], aud="https://example.invalid/token"))
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "Invalid JWT: Failed audience check.",
    }


@pytest.mark.parametrize(
    "shift",
    [
        pytest.param({"iat": -4000, "exp": -3700}, id="expired"),
        pytest.param({"iat": 600, "exp": 1200}, id="issued-in-the-future"),
        pytest.param({"iat": 0, "exp": 3601}, id="longer-than-an-hour"),
        pytest.param({"iat": 0, "exp": 0}, id="empty-lifetime"),
    ],
)
def test_an_unreasonable_timeframe_is_invalid_grant(tokens, keys, shift):
    now = int(time.time())
    claims = {name: now + delta for name, delta in shift.items()}
    answer = _post_assertion(tokens, _assertion(keys[ALICE], **claims))
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"].startswith("Invalid JWT: Token must be a short-lived token")


def test_a_timeframe_within_the_skew_is_granted(tokens, keys):
    now = int(time.time())
    answer = _post_assertion(tokens, _assertion(keys[ALICE], iat=now + 240, exp=now + 3000))
    assert answer.status_code == 200


def test_a_scope_without_cloud_platform_is_invalid_scope(tokens, keys):
    with pytest.raises(exceptions.RefreshError) as caught:
        _credentials(keys[ALICE], scopes=[BIGQUERY]).refresh(Request())
    error = caught.value
    assert error.args[0].startswith("invalid_scope: Invalid OAuth scope or ID token audience provided.")
    assert error.args[1]["error"] == "invalid_scope"
    assert BIGQUERY in error.args[1]["error_description"]
    assert error.retryable is False
    assert tokens.calls[-1] == TokenCall(ALICE, "invalid_scope")
    # cloud-platform among other scopes is fine
    _credentials(keys[ALICE], scopes=[BIGQUERY, CLOUD_PLATFORM_SCOPE]).refresh(Request())


def test_malformed_requests(tokens):
    answer = _post_assertion(tokens, "x", grant_type="refresh_token")
    assert (answer.status_code, answer.json()["error"]) == (400, "unsupported_grant_type")
    answer = requests.post(tokens.token_uri, data={"grant_type": _client._JWT_GRANT_TYPE}, timeout=10)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    answer = _post_assertion(tokens, "not.a-jwt")
    assert answer.json() == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    assert tokens.calls[-1] == TokenCall(None, "invalid_grant")


def test_down_once_google_auth_retries_after_about_a_second(tokens, keys, backoff_waits):
    """A 5xx is retryable for google-auth: it tries again (after ~1 s) within the same refresh."""
    start = len(tokens.calls)
    tokens.down(1)
    creds = _credentials(keys[BOB])
    creds.refresh(Request())
    assert creds.valid and tokens.token_owner(creds.token) == BOB
    assert tokens.calls[start:] == [TokenCall(BOB, "internal_failure"), TokenCall(BOB, "granted")]
    assert len(backoff_waits) == 1 and 0.9 <= backoff_waits[0] <= 1.1


def test_down_three_times_google_auth_gives_up_with_a_retryable_refresh_error(tokens, keys, backoff_waits):
    """Three attempts per refresh (waits ~1 s, ~2 s), then RefreshError(retryable=True)."""
    start = len(tokens.calls)
    tokens.down(3)
    with pytest.raises(exceptions.RefreshError) as caught:
        _credentials(keys[BOB]).refresh(Request())
    error = caught.value
    assert type(error) is exceptions.RefreshError
    assert error.retryable is True
    assert error.args == ("internal_failure: None", {"error": "internal_failure"})
    assert tokens.calls[start:] == [TokenCall(BOB, "internal_failure")] * 3
    assert len(backoff_waits) == 2
    assert 0.9 <= backoff_waits[0] <= 1.1 and 1.8 <= backoff_waits[1] <= 2.2
    _credentials(keys[BOB]).refresh(Request())  # up again


def test_an_unreachable_token_endpoint_is_a_transport_error_without_retry(keys, backoff_waits):
    key = {**keys[ALICE], "token_uri": f"http://127.0.0.1:{_free_port()}/token"}
    with pytest.raises(exceptions.TransportError) as caught:
        _credentials(key).refresh(Request())
    assert not isinstance(caught.value, exceptions.RefreshError)
    assert caught.value.retryable is False
    assert isinstance(caught.value.args[0], requests.exceptions.ConnectionError)
    assert backoff_waits == []  # the exception leaves the retry loop at once


# ---------------------------------------------------------------------------------------------- front


def test_an_issued_token_is_forwarded_with_the_principals_headers(front, keys):
    double, url = front
    token = _token(keys[ALICE])
    answer = requests.get(
        url + "/api/v2/dags?limit=2&tags=a&tags=b&dag_id_pattern=x%25y",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    echoed = answer.json()
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/api/v2/dags"
    assert echoed["query"] == "limit=2&tags=a&tags=b&dag_id_pattern=x%25y"
    assert echoed["auth"] == ALICE_AIRFLOW["Authorization"]  # never the caller's token
    assert token not in answer.text
    assert double.calls[-1] == FrontCall(ALICE, "GET", "/api/v2/dags", 200)


def test_an_authorized_session_reaches_airflow_through_the_front(front, keys):
    double, url = front
    session = AuthorizedSession(_credentials(keys[BOB]))
    try:
        answer = session.get(url + "/api/v1/dags/example/dagRuns", timeout=10)
    finally:
        session.close()
    assert answer.status_code == 200
    assert answer.json()["auth"] == BOB_AIRFLOW["Authorization"]
    assert answer.json()["path"] == "/api/v1/dags/example/dagRuns"


def test_a_post_body_and_content_type_are_forwarded(front, keys):
    double, url = front
    token = _token(keys[ALICE])
    body = '{"dag_ids": ["a", "b"], "page_limit": 5}'
    answer = requests.post(
        url + "/api/v2/dags/~/dagRuns/list",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    echoed = answer.json()
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("POST", "/api/v2/dags/~/dagRuns/list", body)
    assert echoed["content_type"] == "application/json"
    assert double.count(status=200, email=ALICE) >= 1


def test_the_upstream_answer_comes_back_as_is(front, keys):
    double, url = front
    headers = {"Authorization": f"Bearer {_token(keys[ALICE])}"}
    missing = requests.get(url + "/api/v2/dags/missing", headers=headers, timeout=10)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert missing.headers["Content-Type"].startswith("application/json")
    teapot = requests.get(url + "/teapot", headers=headers, timeout=10)
    assert (teapot.status_code, teapot.text) == (418, "short and stout")
    assert teapot.headers["Content-Type"].startswith("text/plain")
    assert double.count(status=418, email=ALICE) == 1


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-token"),
        pytest.param("Bearer ya29.never-issued", id="unknown-token"),
        pytest.param("Basic YWxpY2U6cGFzcw==", id="basic"),
        pytest.param("Bearer ", id="empty-bearer"),
    ],
)
def test_no_admitted_token_is_401(front, authorization):
    double, url = front
    before = double.unauthorized
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.delete(url + "/api/v2/dags/x", headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Unauthorized"}
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert double.unauthorized == before + 1
    assert double.calls[-1] == FrontCall(None, "DELETE", "/api/v2/dags/x", 401)


def test_an_expired_token_is_401(upstream):
    with TokenEndpoint(lifetime=0.2) as short, BearerFront(short, upstream, {ALICE: ALICE_AIRFLOW}) as double:
        short.start()
        url = double.start()
        token = _token(short.service_account_key(ALICE))
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(url + "/api/v2/version", headers=headers, timeout=10).status_code == 200
        _wait_until(lambda: short.token_owner(token) is None)
        answer = requests.get(url + "/api/v2/version", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert [c.status for c in double.calls] == [200, 401] and double.unauthorized == 1


def test_an_unregistered_email_is_403_without_default_headers(front, keys):
    double, url = front
    token = _token(keys[STRANGER])
    answer = requests.get(url + "/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 403 and answer.json() == {"detail": "Forbidden"}
    assert double.calls[-1] == FrontCall(STRANGER, "GET", "/api/v2/dags", 403)


def test_an_unregistered_email_goes_with_the_default_headers(tokens, keys, upstream):
    with BearerFront(
        tokens, upstream, {ALICE: ALICE_AIRFLOW}, default_headers={"X-Role": "Public"}
    ) as double:
        url = double.start()
        token = _token(keys[STRANGER])
        answer = requests.get(url + "/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["role"] == "Public"
        assert answer.json()["auth"] is None  # the caller's Authorization is never forwarded
        assert double.count(email=STRANGER) == 1


def test_an_unreachable_upstream_is_502(tokens, keys):
    with BearerFront(tokens, f"http://127.0.0.1:{_free_port()}", {ALICE: ALICE_AIRFLOW}) as double:
        url = double.start()
        token = _token(keys[ALICE])
        answer = requests.get(url + "/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 502
        assert double.calls == [FrontCall(ALICE, "GET", "/api/v2/dags", 502)]


def test_no_secret_in_the_logs_or_reprs(tokens, keys, front):
    double, _ = front
    text = repr(tokens.calls) + repr(double.calls) + repr(tokens) + repr(double)
    for key in keys.values():
        assert key["private_key"] not in text and key["private_key_id"] not in text
    assert "ya29." not in text and "airflow-jwt-alice" not in text
