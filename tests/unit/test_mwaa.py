"""The MWAA transport: paths, bodies and botocore's errors, over a recording stand-in for the aiobotocore
client (the real client, signing and the real upstreams are in tests/integration/test_mwaa_live.py)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.client.dialects import DIALECTS
from xdep_sensors.client.mwaa import MAX_PATH, MwaaTransport, wire_path
from xdep_sensors.client.policy import RetryPolicy
from xdep_sensors.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from xdep_sensors.hooks.remote_airflow import config_from_connection

RUN = {"dag_id": "d", "dag_run_id": "r", "state": "success", "run_after": "2026-01-01T00:00:00+00:00"}


def client_error(code: str, status: int = 400, message: str = "", **members: Any) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError({**response, **members}, "InvokeRestApi")


class Aws:
    """Records each invoke_rest_api call; answers from a script (a callable per call, or a default)."""

    def __init__(self, version: str = "3.3.2", answers: list | None = None):
        self.version = version
        self.answers = list(answers or [])
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    async def invoke_rest_api(self, **kwargs: Any) -> dict:
        self.calls.append(kwargs)
        if kwargs["Path"] == "/version":
            return {"RestApiStatusCode": 200, "RestApiResponse": {"version": self.version}}
        answer = self.answers.pop(0) if self.answers else {"RestApiStatusCode": 200, "RestApiResponse": {}}
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


def ok(body: Any) -> dict:
    return {"RestApiStatusCode": 200, "RestApiResponse": body}


async def _no_sleep(seconds: float) -> None:
    return None


def make(aws: Aws, attempts: int = 4) -> RemoteAirflowClient:
    config = ClientConfig(
        base_url="mwaa://env1", auth="aws_mwaa", mwaa_environment="env1", aws_conn_id="aws_x", conn_id="up"
    )

    async def connect() -> Aws:
        return aws

    transport = MwaaTransport(config, connect, retry=RetryPolicy(attempts=attempts), sleep=_no_sleep)
    return RemoteAirflowClient(config, transport=transport)


def test_wire_path_is_relative_to_the_api_root_and_escapes_only_what_a_path_must():
    assert wire_path("/api/v2/dags/d/dagRuns/manual__2026-01-01T00%3A00%3A00%2B00%3A00") == (
        "/dags/d/dagRuns/manual__2026-01-01T00:00:00+00:00"
    )
    assert wire_path("/api/v1/dags/a%2Fb") == "/dags/a%2Fb"
    assert wire_path("/api/v2/version") == "/version"


async def test_the_api_root_comes_from_one_version_call():
    aws = Aws(version="2.11.2")
    async with make(aws) as client:
        assert (await client.dialect()).name == "v1"
        assert (await client.dialect()).name == "v1"  # known: asked once
    assert [c["Path"] for c in aws.calls] == ["/version"]
    assert aws.closed


async def test_a_forced_api_version_that_the_environment_lacks_is_a_clear_error():
    aws = Aws(version="2.11.2")
    client = make(aws)
    client._dialect = DIALECTS["v2"]
    with pytest.raises(ConfigurationError, match="api_version=v2"):
        await client.dialect()


async def test_repeated_query_keys_become_a_list_and_bodies_pass_as_they_are():
    aws = Aws(answers=[ok({"dag_runs": [], "total_entries": 0}), ok({"dag_runs": [], "total_entries": 0})])
    async with make(aws) as client:
        await client.last_finished_run("d", ["success", "failed"], before=datetime.now(timezone.utc))
        await client.newest_runs(["a", "b"])
    get, post = aws.calls[1], aws.calls[2]
    assert get["Path"] == "/dags/d/dagRuns" and get["Method"] == "GET"
    assert get["QueryParameters"]["state"] == ["success", "failed"] and "Body" not in get
    assert post["Path"] == "/dags/~/dagRuns/list" and post["Body"]["dag_ids"] == ["a", "b"]
    assert all(c["Name"] == "env1" for c in aws.calls)


async def test_a_run_whose_path_is_too_long_is_read_by_id_pattern_and_matched_exactly():
    long_id = "manual__2026-01-01T00:00:00.123456+00:00_AbCdEfGh"
    other = {**RUN, "dag_run_id": long_id + "x"}
    aws = Aws(answers=[ok({"dag_runs": [other, {**RUN, "dag_run_id": long_id}], "total_entries": 2})])
    async with make(aws) as client:
        run = await client.get_dag_run("daily_sales", long_id)
    assert run is not None and run.run_id == long_id
    call = aws.calls[1]
    assert (
        call["Path"] == "/dags/daily_sales/dagRuns" and call["QueryParameters"]["run_id_pattern"] == long_id
    )
    assert all(len(c["Path"]) <= MAX_PATH for c in aws.calls)


async def test_a_task_listing_whose_path_is_too_long_goes_through_the_batch_body():
    long_id = "manual__2026-01-01T00:00:00.123456+00:00_AbCdEfGh"
    ti = {"dag_id": "d", "dag_run_id": long_id, "task_id": "g.t", "state": "success"}
    aws = Aws(answers=[ok({"task_instances": [ti, {**ti, "task_id": "other"}], "total_entries": 2})])
    async with make(aws) as client:
        tis = await client.list_task_instances("daily_sales", long_id, task_group_id="g")
    assert [t.task_id for t in tis] == ["g.t"]
    call = aws.calls[1]
    assert call["Path"] == "/dags/~/dagRuns/~/taskInstances/list"
    assert call["Body"]["dag_ids"] == ["daily_sales"] and call["Body"]["dag_run_ids"] == [long_id]


@pytest.mark.parametrize(("version", "date_key"), [("3.0.6", "logical_date"), ("2.11.2", "execution_date")])
async def test_without_a_run_id_filter_a_task_instance_dates_the_run(version, date_key):
    long_id = "manual__2026-01-01T00:00:00.123456+00:00_AbCdEfGh"
    ti = {"dag_id": "d", "dag_run_id": long_id, "task_id": "t", date_key: "2026-01-01T00:00:00.123456+00:00"}
    runs = [{**RUN, "dag_run_id": long_id + "x"}, {**RUN, "dag_run_id": long_id}]
    aws = Aws(version=version, answers=[ok({"task_instances": [ti]}), ok({"dag_runs": runs})])
    async with make(aws) as client:
        run = await client.get_dag_run("daily_sales", long_id)
    assert run is not None and run.run_id == long_id
    tis, listing = aws.calls[1], aws.calls[2]
    assert tis["Body"] == {
        "dag_ids": ["daily_sales"],
        "dag_run_ids": [long_id],
        "page_offset": 0,
        "page_limit": 1,
    }
    key = "execution_date" if version.startswith("2.") else "logical_date"
    assert listing["Path"] == "/dags/~/dagRuns/list"
    assert listing["Body"][f"{key}_gte"] == listing["Body"][f"{key}_lte"] == ti[date_key]


async def test_a_run_without_task_instances_does_not_exist_yet():
    aws = Aws(version="2.11.2", answers=[ok({"task_instances": []})])
    async with make(aws) as client:
        assert await client.get_dag_run("daily_sales", "manual__2026-01-01T00:00:00.123456+00:00") is None
    assert len(aws.calls) == 2


async def test_a_path_that_cannot_be_shortened_fails_before_sending_naming_the_dag():
    dag_id = "team_finance_" + "x" * 60
    aws = Aws()
    async with make(aws) as client:
        with pytest.raises(ConfigurationError) as caught:
            await client.get_dag(dag_id)
    text = str(caught.value)
    assert f"DAG {dag_id!r}" in text and "at most 64" in text and "shorter DAG" in text
    assert [c["Path"] for c in aws.calls] == ["/version"]  # nothing sent that MWAA would refuse


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (client_error("AccessDeniedException", 403, "not authorized"), PermissionDenied, "InvokeRestApi"),
        (
            client_error("ResourceNotFoundException", 404, "Environment"),
            ConfigurationError,
            "mwaa_environment",
        ),
        (client_error("InvalidSignatureException", 403), AuthenticationError, "secret access key"),
        (client_error("UnrecognizedClientException", 403), AuthenticationError, "access key id"),
        (client_error("ExpiredTokenException", 403), AuthenticationError, "session token"),
        (NoCredentialsError(), AuthenticationError, "credential chain"),
    ],
)
async def test_aws_refusals_fail_at_once_with_the_fix(error, kind, words):
    aws = Aws(answers=[error])
    async with make(aws) as client:
        with pytest.raises(kind) as caught:
            await client.get_dag("d")
    assert words in str(caught.value)
    assert len(aws.calls) == 2  # the version, then one try: no retry of a mistake


async def test_airflow_answers_are_mapped_back():
    not_found = client_error(
        "RestApiClientException", RestApiStatusCode=404, RestApiResponse={"detail": "nope"}
    )
    forbidden = client_error(
        "RestApiClientException", RestApiStatusCode=403, RestApiResponse={"detail": "Forbidden"}
    )
    aws = Aws(answers=[not_found, forbidden])
    async with make(aws) as client:
        with pytest.raises(NotFound):
            await client.get_dag("d")
        with pytest.raises(PermissionDenied, match="Viewer role"):
            await client.get_dag("d")


@pytest.mark.parametrize(
    "trouble",
    [
        client_error("ThrottlingException", 429, "Rate exceeded"),
        client_error("RestApiServerException", RestApiStatusCode=503, RestApiResponse={"detail": "busy"}),
        client_error("InternalServerException", 500),
        EndpointConnectionError(endpoint_url="https://env.airflow.us-east-1.amazonaws.com"),
    ],
)
async def test_transient_trouble_is_retried_by_the_one_rule_and_counted(trouble):
    aws = Aws(answers=[trouble, trouble, ok({"dag_id": "d", "is_paused": False})])
    async with make(aws) as client:
        dag = await client.get_dag("d")
        assert dag.dag_id == "d"
        assert client.transport.requests_sent == 4  # the version and three tries: every call counted


async def test_transient_trouble_past_the_attempts_is_raised_as_transient():
    aws = Aws(answers=[client_error("ThrottlingException", 429)] * 2)
    async with make(aws, attempts=2) as client:
        with pytest.raises(RateLimited) as caught:
            await client.get_dag("d")
    assert caught.value.transient and len(aws.calls) == 3


def connection(**extra: Any) -> tuple[Any, dict]:
    conn = SimpleNamespace(conn_id="up", host=None, schema=None, port=None, login=None, password=None)
    return conn, extra


def test_the_connection_extra_says_mwaa_and_needs_no_host():
    config = config_from_connection(*connection(auth="aws_mwaa", mwaa_environment="env1"))
    assert (config.auth, config.mwaa_environment, config.aws_conn_id) == ("aws_mwaa", "env1", "aws_default")
    assert config.where == "MWAA environment env1" and config.ui_base == ""
    conn, extra = connection(auth="aws_mwaa", mwaa_environment="env1", aws_conn_id="aws_team")
    conn.host = "https://abc.c2.airflow.eu-west-1.on.aws"
    config = config_from_connection(conn, extra)
    assert config.aws_conn_id == "aws_team" and config.ui_base == "https://abc.c2.airflow.eu-west-1.on.aws"


@pytest.mark.parametrize(
    ("extra", "words"),
    [({"auth": "aws_mwaa"}, "mwaa_environment"), ({"auth": "kerberos"}, "aws_mwaa")],
)
def test_a_wrong_auth_extra_fails_naming_what_to_set(extra, words):
    with pytest.raises(ConfigurationError, match=words):
        config_from_connection(*connection(**extra))


async def test_without_the_amazon_extra_the_first_look_says_what_to_install(monkeypatch):
    from xdep_sensors.hooks.aws_mwaa import mwaa_transport

    monkeypatch.setitem(sys.modules, "airflow.providers.amazon.aws.hooks.mwaa", None)
    config = config_from_connection(*connection(auth="aws_mwaa", mwaa_environment="env1"))
    async with RemoteAirflowClient(config, transport=mwaa_transport(config)) as client:
        with pytest.raises(ConfigurationError, match=r"pip install 'xdep-sensors\[amazon\]'"):
            await client.version()
