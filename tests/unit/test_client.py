"""Client unit tests: request building, both dialects, auth flows, retry decisions, error classes."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from aioresponses import aioresponses

from tests.helpers import upstream_mock, url
from xdep_sensors.client import ClientConfig, RemoteAirflowClient, Transport, normalize_base_url
from xdep_sensors.client.dialects import V1, V2, format_dt
from xdep_sensors.client.policy import RetryPolicy, decipher_response, is_retryable, retry_after_seconds
from xdep_sensors.core.listings import list_asset_events
from xdep_sensors.errors import (
    AuthenticationError,
    BadResponse,
    ConfigurationError,
    NotFound,
    PermissionDenied,
    RateLimited,
    UpstreamUnavailable,
)

BASE = "http://up.test:8080"
SECRET = "s3cr3t-T0KEN-xyz"
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


class Sleeps:
    def __init__(self):
        self.calls: list[float] = []

    async def __call__(self, seconds):
        self.calls.append(seconds)


def client_with_recorded_sleeps(version="v2", *, login=None, password=SECRET, sleeps=None, attempts=4):
    """A client of the mocked upstream whose retries record their pauses (``Sleeps``) instead of sleeping."""
    config = ClientConfig(base_url=BASE, login=login, password=password, api_version=version, conn_id="up")
    transport = Transport(config, retry=RetryPolicy(attempts=attempts), sleep=sleeps or Sleeps())
    return RemoteAirflowClient(config, transport=transport)


def sent(mocked, method="GET"):
    """All (url, kwargs) pairs aioresponses saw for ``method``."""
    return [
        (str(key[1]), call.kwargs)
        for key, calls in mocked.requests.items()
        if key[0] == method and not str(key[1]).endswith("/version")
        for call in calls
    ]


RUN_V2 = {
    "dag_run_id": "scheduled__2026-11-20T00:00:00+00:00",
    "dag_id": "producer",
    "state": "success",
    "logical_date": "2026-11-20T00:00:00Z",
    "run_after": "2026-11-21T00:00:00Z",
    "start_date": None,
    "end_date": "2026-11-21T00:05:00Z",
    "run_type": "scheduled",
    "conf": {"a": 1},
}
RUN_V1 = {
    "dag_run_id": "manual__x",
    "dag_id": "producer",
    "state": "running",
    "execution_date": "2026-11-20T00:00:00+00:00",
    "logical_date": "2026-11-20T00:00:00+00:00",
    "start_date": "2026-11-20T00:00:01+00:00",
    "end_date": None,
    "run_type": "manual",
    "conf": None,
}


class TestBaseUrl:
    @pytest.mark.parametrize(
        ("host", "schema", "port", "expected"),
        [
            ("abc.astronomer.run/d1234", None, None, "https://abc.astronomer.run/d1234"),
            ("abc.astronomer.run/d1234/", None, None, "https://abc.astronomer.run/d1234"),
            ("http://127.0.0.1:8080/", None, None, "http://127.0.0.1:8080"),
            ("airflow.internal", "http", 8080, "http://airflow.internal:8080"),
            ("https://x.example/prefix", None, 443, "https://x.example:443/prefix"),
        ],
    )
    def test_normalize(self, host, schema, port, expected):
        assert normalize_base_url(host, schema=schema, port=port) == expected

    def test_empty_host_is_a_configuration_error(self):
        with pytest.raises(ConfigurationError, match="no host"):
            normalize_base_url("")

    def test_bad_api_version_names_the_extra(self):
        with pytest.raises(ConfigurationError, match="api_version"):
            ClientConfig(base_url=BASE, api_version="v3")

    def test_secret_not_in_repr(self):
        assert SECRET not in repr(ClientConfig(base_url=BASE, password=SECRET))


class TestDialects:
    def test_naive_datetimes_become_utc(self):
        assert format_dt(datetime(2026, 1, 1)) == "2026-01-01T00:00:00+00:00"

    def test_v2_dag_runs_request(self):
        req = V2().dag_runs("producer", logical_date=T0)
        assert req.path == "/api/v2/dags/producer/dagRuns"
        assert ("logical_date_gte", T0.isoformat()) in req.params
        assert ("logical_date_lte", T0.isoformat()) in req.params
        assert ("order_by", "-run_after") in req.params

    def test_v1_dag_runs_request_uses_execution_date(self):
        req = V1().dag_runs("producer", run_after_gte=T0)
        assert req.path == "/api/v1/dags/producer/dagRuns"
        assert ("execution_date_gte", T0.isoformat()) in req.params
        assert ("order_by", "-execution_date") in req.params

    def test_run_ids_are_percent_encoded(self):
        assert (
            V2()
            .dag_run("d", "scheduled__2026-11-20T00:00:00+00:00")
            .path.endswith("/dagRuns/scheduled__2026-11-20T00%3A00%3A00%2B00%3A00")
        )

    def test_parse_runs_both_dialects(self):
        run2 = V2().parse_dag_run(RUN_V2)
        assert run2.logical_date == T0 and run2.run_after == T0 + timedelta(days=1) and run2.conf == {"a": 1}
        run1 = V1().parse_dag_run(RUN_V1)
        assert run1.logical_date == T0 and run1.run_after == T0 and run1.conf == {}

    def test_parse_events_both_dialects(self):
        v2 = V2().parse_asset_events(
            {
                "asset_events": [
                    {
                        "id": 7,
                        "asset_id": 3,
                        "uri": "s3://b/k",
                        "name": "bears",
                        "timestamp": "2026-11-20T00:00:00Z",
                        "extra": {"path": "/x"},
                        "source_dag_id": "p",
                        "source_task_id": "t",
                        "source_run_id": "r",
                        "source_map_index": -1,
                    }
                ],
                "total_entries": 1,
            }
        )
        assert v2.items[0].name == "bears" and v2.items[0].extra == {"path": "/x"}
        v1 = V1().parse_asset_events(
            {
                "dataset_events": [
                    {
                        "id": 7,
                        "dataset_id": 3,
                        "dataset_uri": "s3://b/k",
                        "timestamp": "2026-11-20T00:00:00+00:00",
                        "extra": None,
                        "source_dag_id": "p",
                        "source_task_id": "t",
                        "source_run_id": "r",
                    }
                ]
            }
        )
        assert v1.items[0].name == v1.items[0].uri == "s3://b/k" and v1.items[0].extra == {}


class TestDecipher:
    def test_json_ok(self):
        assert decipher_response(200, {"Content-Type": "application/json"}, b'{"a": 1}', BASE) == {"a": 1}

    def test_html_login_page(self):
        with pytest.raises(BadResponse, match="HTML page"):
            decipher_response(200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><form>login", BASE)

    def test_wrong_content_type(self):
        with pytest.raises(BadResponse, match="text/plain"):
            decipher_response(200, {"Content-Type": "text/plain"}, b"ok", BASE)

    def test_malformed_json(self):
        with pytest.raises(BadResponse, match="malformed JSON"):
            decipher_response(200, {"Content-Type": "application/json"}, b'{"a": ', BASE)

    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (401, AuthenticationError),
            (403, PermissionDenied),
            (404, NotFound),
            (429, RateLimited),
            (500, UpstreamUnavailable),
            (502, UpstreamUnavailable),
            (503, UpstreamUnavailable),
            (422, BadResponse),
            (302, ConfigurationError),
        ],
    )
    def test_status_classes(self, status, cls):
        with pytest.raises(cls) as info:
            decipher_response(
                status, {"Content-Type": "application/json"}, b'{"detail": "x"}', BASE + "/api/v2/x"
            )
        assert info.value.status == status
        assert is_retryable(info.value) == (status in (429, 500, 502, 503))

    def test_retry_after_forms(self):
        assert retry_after_seconds("7") == 7.0
        now = datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc)
        assert retry_after_seconds("Sat, 21 Nov 2026 10:00:30 GMT", now) == 30.0
        assert retry_after_seconds("soon") is None

    def test_backoff_grows_and_honours_retry_after(self):
        policy = RetryPolicy(base_delay=1, max_delay=8)
        assert 0.5 <= policy.delay(1) <= 1 and 4 <= policy.delay(4) <= 8 and policy.delay(10) <= 8
        assert policy.delay(1, RateLimited("x", retry_after=20)) == 20


class TestTransport:
    async def test_auto_probe_v2_then_cached(self):
        client = client_with_recorded_sleeps("auto")
        with aioresponses() as m:
            m.get(BASE + "/api/v2/version", payload={"version": "3.3.2"})
            m.get(
                url("/api/v2/dags/producer"), payload={"dag_id": "producer", "is_paused": False}, repeat=True
            )
            await client.get_dag("producer")
            await client.get_dag("producer")
            assert client.transport.dialect_name == "v2" and client.upstream_version == "3.3.2"
            assert (
                sum(len(calls) for key, calls in m.requests.items() if str(key[1]).endswith("/version")) == 1
            )
        await client.close()

    async def test_auto_probe_falls_back_to_v1(self):
        client = client_with_recorded_sleeps("auto")
        with aioresponses() as m:
            m.get(BASE + "/api/v2/version", status=404, payload={"detail": "Not Found"})
            m.get(BASE + "/api/v1/version", payload={"version": "2.11.2", "git_version": None})
            assert (await client.dialect()).name == "v1"
        await client.close()

    async def test_no_api_at_url(self):
        client = client_with_recorded_sleeps("auto")
        with aioresponses() as m:
            m.get(BASE + "/api/v2/version", status=404, body="nope", content_type="text/html")
            m.get(BASE + "/api/v1/version", status=404, body="<html>", content_type="text/html")
            with pytest.raises(ConfigurationError, match="no Airflow REST API found") as info:
                await client.dialect()
            assert "path prefix" in str(info.value)
        await client.close()

    async def test_login_page_instead_of_api_says_so(self):
        client = client_with_recorded_sleeps("auto")
        with aioresponses() as m:
            m.get(
                BASE + "/api/v2/version",
                status=200,
                body="<!DOCTYPE html><form>SSO",
                content_type="text/html",
            )
            m.get(
                BASE + "/api/v1/version",
                status=200,
                body="<!DOCTYPE html><form>SSO",
                content_type="text/html",
            )
            with pytest.raises(BadResponse, match="HTML page instead of the Airflow API"):
                await client.dialect()
        await client.close()

    async def test_static_token_is_a_bearer(self):
        client = client_with_recorded_sleeps()
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d/dagRuns"), payload={"dag_runs": [RUN_V2], "total_entries": 1})
            runs = await client.list_dag_runs("d", logical_date=T0)
            ((_, kwargs),) = sent(m)
            assert kwargs["headers"]["Authorization"] == f"Bearer {SECRET}"
            assert ("logical_date_gte", "2026-11-20T00:00:00+00:00") in kwargs["params"]
            assert runs[0].run_id == RUN_V2["dag_run_id"]
        await client.close()

    @pytest.mark.parametrize(
        ("status", "detail"),
        [(401, "Token Expired"), (403, "Invalid JWT token")],
        ids=["expired", "signed-with-another-key"],
    )
    async def test_jwt_exchange_and_one_refresh_when_rejected(self, status, detail):
        """An expired JWT (401), or one the upstream cannot verify (Airflow 3 answers 403 "Invalid JWT
        token" once its signing key rotated): the credentials are exchanged once more."""
        client = client_with_recorded_sleeps(login="viewer", password="pw")
        with upstream_mock() as m:
            m.post(BASE + "/auth/token", status=201, payload={"access_token": "jwt-1"})
            m.post(BASE + "/auth/token", status=201, payload={"access_token": "jwt-2"})
            m.get(url("/api/v2/dags/d"), status=status, payload={"detail": detail})
            m.get(url("/api/v2/dags/d"), payload={"dag_id": "d"})
            assert (await client.get_dag("d")).dag_id == "d"
            tokens = [k["headers"]["Authorization"] for _, k in sent(m)]
            assert tokens == ["Bearer jwt-1", "Bearer jwt-2"]
            assert [k["json"] for _, k in sent(m, "POST")] == [{"username": "viewer", "password": "pw"}] * 2
        await client.close()

    async def test_jwt_still_401_after_refresh_fails_clearly(self):
        client = client_with_recorded_sleeps(login="viewer", password="pw")
        with upstream_mock() as m:
            m.post(BASE + "/auth/token", status=201, payload={"access_token": "jwt"}, repeat=True)
            m.get(url("/api/v2/dags/d"), status=401, payload={"detail": "Token Expired"}, repeat=True)
            with pytest.raises(
                AuthenticationError, match="authentication failed for conn 'up' at http://up.test"
            ):
                await client.get_dag("d")
            assert len(sent(m)) == 2
        await client.close()

    async def test_a_static_token_the_upstream_cannot_verify_says_check_the_token(self):
        client = client_with_recorded_sleeps(password=SECRET)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d"), status=403, payload={"detail": "Invalid JWT token"})
            with pytest.raises(
                AuthenticationError, match="check the connection's token: the upstream cannot verify it"
            ) as info:
                await client.get_dag("d")
            assert len(sent(m)) == 1 and SECRET not in str(info.value)
        await client.close()

    async def test_wrong_password_at_token_exchange(self):
        client = client_with_recorded_sleeps(login="viewer", password=SECRET)
        with upstream_mock() as m:
            m.post(BASE + "/auth/token", status=401, payload={"detail": "Invalid credentials"})
            with pytest.raises(AuthenticationError) as info:
                await client.get_dag("d")
            assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        await client.close()

    async def test_v1_basic_auth(self):
        client = client_with_recorded_sleeps("v1", login="viewer", password="pw")
        with upstream_mock() as m:
            m.get(url("/api/v1/dags/d/dagRuns/r"), payload=RUN_V1)
            await client.get_dag_run("d", "r")
            ((_, kwargs),) = sent(m)
            assert kwargs["auth"].encode() == "Basic " + base64.b64encode(b"viewer:pw").decode()
        await client.close()

    async def test_retries_5xx_then_succeeds(self):
        sleeps = Sleeps()
        client = client_with_recorded_sleeps(sleeps=sleeps)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d"), status=503, body="deploying", content_type="text/plain")
            m.get(url("/api/v2/dags/d"), status=502, body="bad gateway", content_type="text/html")
            m.get(url("/api/v2/dags/d"), payload={"dag_id": "d"})
            assert (await client.get_dag("d")).dag_id == "d"
        assert len(sleeps.calls) == 2 and sleeps.calls[1] > sleeps.calls[0] / 2
        await client.close()

    async def test_retry_budget_is_bounded(self):
        sleeps = Sleeps()
        client = client_with_recorded_sleeps(sleeps=sleeps, attempts=3)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d"), status=500, payload={"detail": "boom"}, repeat=True)
            with pytest.raises(UpstreamUnavailable):
                await client.get_dag("d")
            assert len(sent(m)) == 3
        await client.close()

    async def test_429_waits_retry_after(self):
        sleeps = Sleeps()
        client = client_with_recorded_sleeps(sleeps=sleeps)
        with upstream_mock() as m:
            m.get(
                url("/api/v2/dags/d"),
                status=429,
                payload={"detail": "slow down"},
                headers={"Retry-After": "12"},
            )
            m.get(url("/api/v2/dags/d"), payload={"dag_id": "d"})
            await client.get_dag("d")
        assert sleeps.calls == [12.0]
        await client.close()

    async def test_404_is_not_retried(self):
        sleeps = Sleeps()
        client = client_with_recorded_sleeps(sleeps=sleeps)
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d"), status=404, payload={"detail": "DAG d not found"}, repeat=True)
            with pytest.raises(NotFound, match="DAG d not found"):
                await client.get_dag("d")
            assert len(sent(m)) == 1 and sleeps.calls == []
        await client.close()

    async def test_connection_refused_is_transient(self):
        client = client_with_recorded_sleeps(attempts=2)
        with upstream_mock() as m:
            import aiohttp

            m.get(url("/api/v2/dags/d"), exception=aiohttp.ServerDisconnectedError(), repeat=True)
            with pytest.raises(UpstreamUnavailable, match="did not answer"):
                await client.get_dag("d")
        await client.close()

    async def test_unexpected_shape_names_endpoint(self):
        client = client_with_recorded_sleeps()
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d/dagRuns"), payload={"runs": []})
            with pytest.raises(BadResponse, match="GET /api/v2/dags/d/dagRuns"):
                await client.list_dag_runs("d")
        await client.close()

    async def test_one_session_reused(self):
        client = client_with_recorded_sleeps()
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/d"), payload={"dag_id": "d"}, repeat=True)
            await client.get_dag("d")
            first = client.transport.session()
            await client.get_dag("d")
            assert client.transport.session() is first
        await client.close()


class TestAssetEvents:
    @staticmethod
    def v1_event(i, ts):
        return {
            "id": i,
            "dataset_id": 1,
            "dataset_uri": "file://bears",
            "timestamp": ts.isoformat(),
            "extra": {},
            "source_dag_id": "p",
            "source_task_id": "t",
            "source_run_id": "r",
        }

    async def test_v1_pages_newest_first_and_stops_at_cursor(self):
        client = client_with_recorded_sleeps("v1")
        first = [self.v1_event(1000 - i, T0 - timedelta(minutes=i)) for i in range(100)]
        second = [self.v1_event(900 - i, T0 - timedelta(minutes=100 + i)) for i in range(100)]
        with upstream_mock() as m:
            m.get(url("/api/v1/datasets/events"), payload={"dataset_events": first, "total_entries": 5000})
            m.get(url("/api/v1/datasets/events"), payload={"dataset_events": second, "total_entries": 5000})
            events = await list_asset_events(client, asset_ids=[1], since=T0 - timedelta(minutes=150))
            assert len(sent(m)) == 2  # stopped on the page that crossed the cursor
        assert len(events) == 151 and events[0].timestamp == T0 - timedelta(minutes=150)
        assert events == sorted(events, key=lambda e: e.timestamp)
        await client.close()

    async def test_v2_many_assets_are_filtered_upstream_one_listing_each(self):
        client = client_with_recorded_sleeps()

        def body(i, a):
            return {
                "asset_events": [
                    {
                        "id": i,
                        "asset_id": a,
                        "uri": f"u{a}",
                        "name": f"n{a}",
                        "timestamp": T0.isoformat(),
                        "extra": {},
                    }
                ],
                "total_entries": 1,
            }

        with upstream_mock() as m:
            m.get(url("/api/v2/assets/events"), payload=body(1, 1))
            m.get(url("/api/v2/assets/events"), payload=body(3, 3))
            events = await list_asset_events(client, asset_ids=[1, 3], since=T0)
            params = [dict(kwargs["params"]) for _, kwargs in sent(m)]
        assert [p["asset_id"] for p in params] == ["1", "3"]
        assert all(p["timestamp_gte"] == T0.isoformat() for p in params)
        assert [e.id for e in events] == [1, 3]
        await client.close()


class TestConfiguredVersion:
    async def test_wrong_api_version_says_what_to_set(self):
        client = client_with_recorded_sleeps("v1")
        with aioresponses() as m:
            m.get(BASE + "/api/v1/version", status=404, payload={"detail": "removed in Airflow 3"})
            with pytest.raises(
                ConfigurationError, match="api_version=v1, but the upstream has no /api/v1"
            ) as info:
                await client.get_dag("d")
            assert "set the extra api_version to auto" in str(info.value)
        await client.close()


class TestDoctor:
    async def test_missing_permission_is_named(self):
        from xdep_sensors.core.doctor import diagnose, render, summarize

        client = client_with_recorded_sleeps()
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/~/dagRuns"), status=403, payload={"detail": "Forbidden"})
            checks = await diagnose(client)
        ok, message = summarize(checks)
        assert not ok and message.startswith("read dag runs: access denied reading DAG runs: Forbidden")
        assert "needs can_read on each DAG it waits for (DAG:<id>) and can_read on DAG Runs" in render(checks)
        await client.close()

    async def test_asset_permission_checked_separately(self):
        from xdep_sensors.core.doctor import diagnose

        client = client_with_recorded_sleeps()
        with upstream_mock() as m:
            m.get(url("/api/v2/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
            m.get(url("/api/v2/assets/events"), status=403, payload={"detail": "Forbidden"})
            checks = await diagnose(client)
        assert [c.name for c in checks if not c.ok] == ["read assets"]
        await client.close()


class TestPollDelay:
    """The one backoff rule for poll loops (shared polls, lone looks, watchers, alerts)."""

    def test_the_interval_without_failures_then_doubling_with_jitter_never_sooner(self):
        import random as _random

        from xdep_sensors.client.policy import RetryPolicy

        policy, rng = RetryPolicy(), _random.Random(3)
        assert policy.poll_delay(5, 0) == 5
        for failures in range(1, 12):
            wait = policy.poll_delay(5, failures, UpstreamUnavailable("down"), rng=rng)
            assert min(5 * 2 ** (failures - 1), policy.max_poll_delay / 2) <= wait
            assert 5 <= wait <= min(policy.max_poll_delay, 5 * 2**failures)

    def test_retry_after_and_configuration_errors_wait_longer(self):
        from xdep_sensors.client.policy import RetryPolicy
        from xdep_sensors.errors import PermissionDenied, RateLimited

        policy = RetryPolicy()
        assert policy.poll_delay(5, 1, RateLimited("slow down", retry_after=120)) >= 120
        assert policy.poll_delay(5, 1, PermissionDenied("forbidden")) >= policy.config_error_delay
        assert (
            policy.poll_delay(3600, 1, UpstreamUnavailable("down")) >= 3600
        )  # never sooner than the interval


class TestUserAgent:
    def test_names_the_library_airflow_and_the_client(self, monkeypatch):
        from airflow import __version__ as airflow_version

        import xdep_sensors
        from xdep_sensors.client.session import user_agent

        monkeypatch.delenv("XDEP_SENSORS_CLIENT_NAME", raising=False)
        base = f"xdep-sensors/{xdep_sensors.__version__} (Airflow {airflow_version}"
        assert user_agent(None, airflow_version) == base + ")"  # no name unless one is given
        monkeypatch.setenv("XDEP_SENSORS_CLIENT_NAME", "analytics-prod")
        assert user_agent(None, airflow_version) == base + "; analytics-prod)"
        assert user_agent("team-b", airflow_version) == base + "; team-b)"  # the connection's extra wins
        assert user_agent("a\r\nInjected: 1\x00 (x; y)", airflow_version) == base + "; a Injected: 1 x y)"
        assert user_agent("é" + "n" * 300, airflow_version) == base + "; " + "n" * 100 + ")"

    async def test_the_session_sends_it(self):
        from xdep_sensors.client.session import user_agent

        transport = Transport(ClientConfig(base_url=BASE, client_name="team-b"))
        assert transport.session().headers["User-Agent"] == user_agent("team-b")
        await transport.close()
