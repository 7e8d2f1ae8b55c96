"""devtools/mwaa_double.py: the AWS side of MWAA InvokeRestApi, driven by real botocore/aiobotocore clients.

The forwarding target here is a tiny aiohttp echo server on loopback (this tests the double only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiobotocore.session
import boto3
import botocore.auth
import botocore.config
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from devtools.loopback import Loopback
from devtools.mwaa_double import Call, Environment, Identity, MwaaDouble, aws_connection, service_model

SECRET = "alice-Secret-Key-9f3a"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-77"
VIEWER_JWT = "Bearer jwt-viewer"
BASIC_OP = "Basic b3A6b3AtcGFzcw=="
CLIENT_CONFIG = botocore.config.Config(inject_host_prefix=False, retries={"total_max_attempts": 1})


# ---------------------------------------------------------------------------------------------- servers


async def _echo(request: web.Request) -> web.Response:
    path = request.raw_path.split("?")[0]
    if path.endswith("/missing"):
        return web.json_response({"detail": "Not Found"}, status=404)
    if path.endswith("/boom"):
        return web.Response(status=500, text="Internal Server Error")
    raw = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": path,
            "query": [[k, v] for k, v in request.query.items()],
            "body": json.loads(raw) if raw else None,
            "auth": request.headers.get("Authorization"),
        }
    )


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with Loopback(routes=lambda app: app.router.add_route("*", "/{tail:.*}", _echo)) as server:
        yield server.start()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Double(MwaaDouble):
    url = ""  # the endpoint_url start() answered


@pytest.fixture
def double(echo_url: str) -> Iterator[_Double]:
    environments = {
        "env3": Environment(echo_url, "v2", {"Viewer": {"Authorization": VIEWER_JWT}}),
        "env2": Environment(echo_url + "/", "v1", {"Op": {"Authorization": BASIC_OP}}),
        "gone": Environment(f"http://127.0.0.1:{_closed_port()}", "v2", {"Viewer": {}}),
    }
    identities = {
        "AKIDALICE": Identity(SECRET, grants={"env3": "Viewer", "env2": "Op", "gone": "Viewer"}),
        "ASIATEMP": Identity("temp-Secret", session_token=TOKEN, grants={"env3": "Viewer"}),
        "ASIAOLD": Identity("old-Secret", session_token="old-token", grants={"env3": "Viewer"}, expired=True),
        "AKIDNOBODY": Identity("nobody-Secret"),
        "AKIDADMIN": Identity("admin-Secret", grants={"env3": "Admin"}),
    }
    mwaa = _Double(environments, identities, account="111122223333")
    mwaa.url = mwaa.start()
    yield mwaa
    mwaa.stop()


def _client(double: _Double, key: str = "AKIDALICE", secret: str = SECRET, token: str | None = None) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token, region_name="us-east-1"
    )
    return session.client("mwaa", endpoint_url=double.url, config=CLIENT_CONFIG)


def _error(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response


# ---------------------------------------------------------------------------------------------- forwarding


def test_signed_get_is_forwarded_to_api_v2_with_path_as_sent_and_repeated_keys(double):
    path = "/dags/d1/dagRuns/manual__2024-01-01T00:00:00+00:00"
    query = {"state": ["success", "failed"], "limit": 5, "only_active": True, "q": "a b+c"}
    answer = _client(double).invoke_rest_api(Name="env3", Path=path, Method="GET", QueryParameters=query)

    assert answer["RestApiStatusCode"] == 200
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    echoed = answer["RestApiResponse"]
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/api/v2" + path  # ':' and '+' reach Airflow unencoded
    assert echoed["query"] == [
        ["state", "success"],
        ["state", "failed"],
        ["limit", "5"],
        ["only_active", "true"],
        ["q", "a b+c"],
    ]
    assert echoed["auth"] == VIEWER_JWT
    assert echoed["body"] is None


def test_percent_escapes_in_path_are_not_encoded_twice(double):
    answer = _client(double).invoke_rest_api(Name="env3", Path="/dags/a%2Fb/tasks x", Method="GET")
    assert answer["RestApiResponse"]["path"] == "/api/v2/dags/a%2Fb/tasks%20x"


def test_post_body_is_forwarded_as_json_to_api_v1_with_the_roles_headers(double):
    body = {"conf": {"a": 1}, "note": "hi"}
    answer = _client(double).invoke_rest_api(Name="env2", Path="/dags/d1/dagRuns", Method="POST", Body=body)
    echoed = answer["RestApiResponse"]
    assert (echoed["method"], echoed["path"], echoed["body"], echoed["auth"]) == (
        "POST",
        "/api/v1/dags/d1/dagRuns",
        body,
        BASIC_OP,
    )


def test_aiobotocore_client_is_forwarded(double):
    async def call() -> dict[str, Any]:
        session = aiobotocore.session.get_session()
        async with session.create_client(
            "mwaa",
            region_name="eu-west-1",
            endpoint_url=double.url,
            aws_access_key_id="ASIATEMP",
            aws_secret_access_key="temp-Secret",
            aws_session_token=TOKEN,
            config=CLIENT_CONFIG,
        ) as client:
            ok = await client.invoke_rest_api(
                Name="env3", Path="/dags", Method="GET", QueryParameters={"x": 1}
            )
            try:
                await client.invoke_rest_api(Name="env3", Path="/dags/missing", Method="GET")
            except ClientError as error:
                return {"ok": ok, "error": error.response}
            raise AssertionError("no error")

    got = asyncio.run(call())
    assert got["ok"]["RestApiResponse"]["query"] == [["x", "1"]]
    assert got["error"]["Error"]["Code"] == "RestApiClientException"
    assert got["error"]["RestApiStatusCode"] == 404


# ---------------------------------------------------------------------------------------------- SigV4


def test_wrong_secret_is_invalid_signature(double):
    response = _error(
        _client(double, secret="not-" + SECRET).invoke_rest_api, Name="env3", Path="/x", Method="GET"
    )
    assert response["Error"]["Code"] == "InvalidSignatureException"
    assert response["Error"]["Message"].startswith("The request signature we calculated does not match")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["ResponseMetadata"]["RequestId"]


def test_body_changed_after_signing_is_invalid_signature(double):
    client = _client(double)

    def tamper(request: Any, **kwargs: Any) -> None:
        request.body = request.body.replace(b'"/dags"', b'"/pool"')

    client.meta.events.register("before-send.mwaa.InvokeRestApi", tamper)
    response = _error(client.invoke_rest_api, Name="env3", Path="/dags", Method="GET")
    assert response["Error"]["Code"] == "InvalidSignatureException"
    assert double.calls[-1].path == "/pool"


def test_unsigned_request_is_missing_authentication_token(double):
    request = urllib.request.Request(double.url + "/restapi/env3", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 403
    assert caught.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(caught.value.read()) == {"message": "Missing Authentication Token"}


def test_unknown_access_key_is_unrecognized_client(double):
    response = _error(
        _client(double, key="AKIDSTRANGER").invoke_rest_api, Name="env3", Path="/x", Method="GET"
    )
    assert response["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid.",
    }


def test_session_token_is_required_and_checked(double):
    ok = _client(double, "ASIATEMP", "temp-Secret", TOKEN).invoke_rest_api(
        Name="env3", Path="/x", Method="GET"
    )
    assert ok["RestApiStatusCode"] == 200
    for token in (None, TOKEN + "x"):
        client = _client(double, "ASIATEMP", "temp-Secret", token)
        response = _error(client.invoke_rest_api, Name="env3", Path="/x", Method="GET")
        assert response["Error"]["Code"] == "UnrecognizedClientException"
    # a long-term key sent with a session token is not recognised either
    client = _client(double, token="stray-token")
    assert _error(client.invoke_rest_api, Name="env3", Path="/x", Method="GET")["Error"]["Code"] == (
        "UnrecognizedClientException"
    )


def test_expired_credentials(double):
    client = _client(double, "ASIAOLD", "old-Secret", "old-token")
    response = _error(client.invoke_rest_api, Name="env3", Path="/x", Method="GET")
    assert response["Error"]["Code"] == "ExpiredTokenException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_signature_dated_more_than_15_minutes_ago_is_expired(double, monkeypatch):
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    response = _error(_client(double).invoke_rest_api, Name="env3", Path="/x", Method="GET")
    assert response["Error"]["Code"] == "InvalidSignatureException"
    assert response["Error"]["Message"].startswith("Signature expired: ")


# ---------------------------------------------------------------------------------------------- input


def test_path_length_max_comes_from_the_model_and_is_checked_by_the_double(double):
    assert service_model().shape_for("RestApiPath").metadata["max"] == 64
    client = _client(double)
    ok = client.invoke_rest_api(Name="env3", Path="/" + "a" * 63, Method="GET")
    assert ok["RestApiResponse"]["path"] == "/api/v2/" + "a" * 63

    long_path = "/" + "a" * 64
    response = _error(client.invoke_rest_api, Name="env3", Path=long_path, Method="GET")
    assert response["Error"] == {
        "Code": "ValidationException",
        "Message": f"1 validation error detected: Value '{long_path}' at 'path' failed to satisfy "
        "constraint: Member must have length less than or equal to 64",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_method_enum_and_query_object_are_validated(double):
    client = _client(double)
    response = _error(client.invoke_rest_api, Name="env3", Path="/x", Method="FETCH", QueryParameters=["a"])
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == (
        "2 validation errors detected: Value 'FETCH' at 'method' failed to satisfy constraint: "
        "Member must satisfy enum value set: [GET, PUT, POST, PATCH, DELETE]; "
        """Value '["a"]' at 'queryParameters' failed to satisfy constraint: Member must be a JSON object"""
    )


def test_environment_name_pattern_comes_from_the_model(double):
    pattern = service_model().shape_for("EnvironmentName").metadata["pattern"]
    response = _error(_client(double).invoke_rest_api, Name="9env", Path="/x", Method="GET")
    assert response["Error"]["Message"] == (
        "1 validation error detected: Value '9env' at 'name' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}"
    )


def test_unknown_environment_is_resource_not_found(double):
    response = _error(_client(double).invoke_rest_api, Name="nowhere", Path="/x", Method="GET")
    assert response["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Environment nowhere not found",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404


# ---------------------------------------------------------------------------------------------- IAM


def test_no_grant_is_access_denied_with_the_models_Message_member(double):
    response = _error(
        _client(double, "AKIDNOBODY", "nobody-Secret").invoke_rest_api, Name="env3", Path="/x", Method="GET"
    )
    assert response["Error"] == {
        "Code": "AccessDeniedException",
        "Message": "User: arn:aws:iam::111122223333:user/AKIDNOBODY is not authorized to perform: "
        "airflow:InvokeRestApi on resource: arn:aws:airflow:us-east-1:111122223333:role/env3/*",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_granted_role_missing_from_the_environment_is_access_denied(double):
    response = _error(
        _client(double, "AKIDADMIN", "admin-Secret").invoke_rest_api, Name="env3", Path="/x", Method="GET"
    )
    assert response["Error"]["Code"] == "AccessDeniedException"
    assert response["Error"]["Message"].endswith(":role/env3/Admin")


def test_throttle_one_then_ok(double):
    client = _client(double)
    double.throttle(1)
    response = _error(client.invoke_rest_api, Name="env3", Path="/x", Method="GET")
    assert response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert client.invoke_rest_api(Name="env3", Path="/x", Method="GET")["RestApiStatusCode"] == 200


# ------------------------------------------------------------------------------------- upstream errors


def test_upstream_404_is_rest_api_client_exception_with_its_status_and_body(double):
    response = _error(_client(double).invoke_rest_api, Name="env3", Path="/dags/missing", Method="GET")
    assert response["Error"]["Code"] == "RestApiClientException"
    assert response["RestApiStatusCode"] == 404
    assert response["RestApiResponse"] == {"detail": "Not Found"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_upstream_500_is_rest_api_server_exception(double):
    response = _error(_client(double).invoke_rest_api, Name="env3", Path="/dags/boom", Method="DELETE")
    assert response["Error"]["Code"] == "RestApiServerException"
    assert response["RestApiStatusCode"] == 500
    assert response["RestApiResponse"] == {"detail": "Internal Server Error"}


def test_upstream_unreachable_is_internal_server_exception(double):
    response = _error(_client(double).invoke_rest_api, Name="gone", Path="/x", Method="GET")
    assert response["Error"]["Code"] == "InternalServerException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_other_routes_are_unknown_operations(double):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(double.url + "/environments/env3", timeout=5)
    assert caught.value.code == 404
    assert caught.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert caught.value.headers["Content-Type"].startswith("application/json")
    assert double.calls[-1] == Call(None, "", None, None, "UnknownOperationException")


# ---------------------------------------------------------------------------------------------- records


def test_calls_record_outcomes_in_order_and_never_a_secret(double):
    client = _client(double)
    client.invoke_rest_api(Name="env3", Path="/dags", Method="GET")
    _error(_client(double, secret="wrong").invoke_rest_api, Name="env3", Path="/dags", Method="GET")
    _error(client.invoke_rest_api, Name="env3", Path="/dags/missing", Method="GET")
    temp = _client(double, "ASIATEMP", "temp-Secret", TOKEN)
    temp.invoke_rest_api(Name="env3", Path="/dags", Method="POST", Body={"secret": "not-kept"})

    assert double.calls == [
        Call("AKIDALICE", "env3", "GET", "/dags", "forwarded"),
        Call("AKIDALICE", "env3", "GET", "/dags", "InvalidSignatureException"),
        Call("AKIDALICE", "env3", "GET", "/dags/missing", "RestApiClientException"),
        Call("ASIATEMP", "env3", "POST", "/dags", "forwarded"),
    ]
    assert double.count() == 4
    assert double.count("forwarded") == 2
    assert double.count("forwarded", env="env2") == 0
    kept = repr(double.calls) + repr(double.identities) + repr(double.environments)
    for secret in (SECRET, "temp-Secret", TOKEN, "Signature=", "AWS4-HMAC", VIEWER_JWT, "not-kept"):
        assert secret not in kept


def test_aws_connection_dict():
    assert aws_connection("http://127.0.0.1:1", "AKID", "s") == {
        "conn_type": "aws",
        "login": "AKID",
        "password": "s",
        "extra": {
            "region_name": "us-east-1",
            "endpoint_url": "http://127.0.0.1:1",
            "config_kwargs": {"inject_host_prefix": False},
        },
    }
    with_token = aws_connection("http://127.0.0.1:1", "ASIA", "s", region="eu-west-1", session_token="t")
    assert with_token["extra"]["aws_session_token"] == "t"
    assert with_token["extra"]["region_name"] == "eu-west-1"
