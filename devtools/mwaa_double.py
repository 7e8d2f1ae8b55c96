"""A local test double of the AWS side of Amazon MWAA's ``InvokeRestApi``, in front of a real Airflow.

    double = MwaaDouble({"prod": Environment("http://127.0.0.1:8080", "v2", {"Viewer": {...}})},
                        {"AKIDEXAMPLE": Identity("secret", grants={"prod": "Viewer"})})
    endpoint_url = double.start()   # give it to boto3 / aiobotocore (inject_host_prefix=False)
    ...
    double.stop()

It stands in for AWS only: it checks the SigV4 signature with botocore's own signer, validates the
input against botocore's own service model for ``mwaa`` (route, members, constraints, signing name and
the error shapes are read from the model), applies a small IAM model (``Identity.grants``), then
forwards the call to the environment's real Airflow REST API with the headers of the granted role and
wraps the answer as MWAA does. Secret keys and session tokens are never logged or kept: ``calls``
holds the access key id only; ``signatures`` keeps the first valid signatures for the leak scans.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlencode

import aiohttp
import yarl
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.loaders import create_loader
from botocore.model import OperationModel, ServiceModel

from devtools.loopback import Front

__all__ = ["Call", "Environment", "Identity", "MwaaDouble", "aws_connection", "service_model"]

SERVICE = "mwaa"
OPERATION = "InvokeRestApi"
QUERY_MEMBER = "QueryParameters"  # a Document in the model; MWAA takes it as a JSON object
BODY_MEMBER = "Body"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW = dt.timedelta(minutes=15)
API_PREFIXES = {"v2": "/api/v2", "v1": "/api/v1"}
# characters left as they are in Path: everything legal in a URL path, and '%' (escapes pass through)
PATH_SAFE = "/:@!$&'()*+,;=-._~%"

# AWS's common errors (not in the service model): code -> HTTP status
COMMON_ERRORS = {
    "UnknownOperationException": 404,
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 400,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "ExpiredTokenException": 403,
    "SerializationException": 400,
    "ThrottlingException": 429,
}
INVALID_TOKEN = "The security token included in the request is invalid."
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)


# ---------------------------------------------------------------------------------------------- model


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """botocore's own model of the ``mwaa`` service (the installed botocore's copy)."""
    return ServiceModel(create_loader().load_service_model(SERVICE, "service-2"), SERVICE)


@lru_cache(maxsize=1)
def _operation() -> OperationModel:
    return service_model().operation_model(OPERATION)


@lru_cache(maxsize=1)
def _route() -> re.Pattern[str]:
    """The operation's ``requestUri`` as a pattern whose groups are the URI labels."""
    parts = re.split(r"(\{[^}]+\})", _operation().http["requestUri"].split("?")[0])
    pattern = ""
    for part in parts:
        label = re.fullmatch(r"\{(\w+)(\+?)\}", part)
        if label is None:
            pattern += re.escape(part)
        else:
            pattern += f"(?P<{label[1]}>{'.+' if label[2] else '[^/]+'})"
    return re.compile(pattern)


def _uri_members() -> list[str]:
    members = _operation().input_shape.members
    return [name for name, shape in members.items() if shape.serialization.get("location") == "uri"]


def _error_status(code: str) -> int:
    shape = service_model().shape_for_error_code(code)
    if shape is not None:
        return int(shape.metadata["error"]["httpStatusCode"])
    return COMMON_ERRORS[code]


def _message_key(code: str) -> str:
    """``message`` or ``Message``: as the model's error shape spells it (``message`` if unmodelled)."""
    shape = service_model().shape_for_error_code(code)
    if shape is not None and "Message" in shape.members:
        return "Message"
    return "message"


# ---------------------------------------------------------------------------------------------- API


@dataclass
class Environment:
    """One MWAA environment: the real Airflow it fronts and the upstream headers of each Airflow role."""

    base_url: str
    api: str  # "v2" (Airflow 3: /api/v2) or "v1" (Airflow 2: /api/v1)
    roles: dict[str, dict[str, str]] = field(repr=False)

    def __post_init__(self) -> None:
        if self.api not in API_PREFIXES:
            raise ValueError(f"api must be one of {sorted(API_PREFIXES)}, not {self.api!r}")


@dataclass
class Identity:
    """One AWS principal: its secret, its session token if temporary, and env name -> Airflow role."""

    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    grants: dict[str, str] = field(default_factory=dict)
    expired: bool = False


@dataclass(frozen=True)
class Call:
    """One request that reached the double. ``outcome``: ``forwarded`` or the AWS error code answered."""

    access_key: str | None
    env: str
    method: str | None
    path: str | None
    outcome: str


def aws_connection(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    session_token: str | None = None,
) -> dict[str, Any]:
    """The Airflow connection (``aws`` type) whose hooks reach the double at ``endpoint_url``."""
    extra: dict[str, Any] = {
        "region_name": region,
        "endpoint_url": endpoint_url,
        # botocore prefixes the host with the operation's hostPrefix ("env.") even for endpoint_url
        "config_kwargs": {"inject_host_prefix": False},
    }
    if session_token:
        extra["aws_session_token"] = session_token
    return {"conn_type": "aws", "login": access_key, "password": secret_key, "extra": extra}


# ---------------------------------------------------------------------------------------------- errors


class AwsError(Exception):
    """An AWS error answer: ``x-amzn-ErrorType`` and a JSON body as the model's error shape names it."""

    def __init__(self, code: str, message: str | None = None, members: dict[str, Any] | None = None):
        super().__init__(code)
        self.code = code
        self.body = dict(members or {})
        if message is not None:
            self.body[_message_key(code)] = message

    def response(self) -> web.Response:
        headers = {"x-amzn-ErrorType": self.code}
        return _json_response(_error_status(self.code), self.body, headers)


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    headers = {**(headers or {}), "x-amzn-RequestId": str(uuid.uuid4())}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


# ---------------------------------------------------------------------------------------------- SigV4


@dataclass(frozen=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str = field(repr=False)


def _access_key_of(header: str | None) -> str | None:
    """The access key id named by an Authorization header, if any (for ``Call`` records)."""
    found = re.search(r"Credential=([^/,\s]+)/", header or "")
    return found[1] if found else None


def _parse_authorization(header: str | None) -> _Authorization:
    if not header:
        raise AwsError("MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise AwsError("IncompleteSignatureException", f"Unsupported AWS 'algorithm': '{algorithm}'")
    params = dict(p.strip().partition("=")[::2] for p in rest.split(","))
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not params.get(k)]
    if missing:
        text = " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
        raise AwsError("IncompleteSignatureException", text)
    scope = params["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AwsError("IncompleteSignatureException", "Credential should be scoped with a valid terminator.")
    signed = params["SignedHeaders"].split(";")
    access_key, date, region, service = scope[:4]
    return _Authorization(access_key, date, region, service, signed, params["Signature"])


def _check_scope(auth: _Authorization, amz_date: str | None) -> None:
    signing_name = service_model().signing_name
    if auth.service != signing_name:
        text = f"Credential should be scoped to correct service: '{signing_name}'. "
        raise AwsError("InvalidSignatureException", text)
    if "host" not in auth.signed_headers:
        raise AwsError(
            "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization."
        )
    if not amz_date:
        text = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        raise AwsError("IncompleteSignatureException", text)
    if amz_date[:8] != auth.date:
        text = (
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
        raise AwsError("InvalidSignatureException", text)


def _check_clock(amz_date: str) -> None:
    try:
        signed_at = dt.datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        text = f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
        raise AwsError("IncompleteSignatureException", text) from None
    now = dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime(AMZ_DATE_FORMAT)
    if signed_at < now - MAX_SKEW:
        edge = (now - MAX_SKEW).strftime(AMZ_DATE_FORMAT)
        text = f"Signature expired: {amz_date} is now earlier than {edge} ({stamp} - 15 min.)"
        raise AwsError("InvalidSignatureException", text)
    if signed_at > now + MAX_SKEW:
        edge = (now + MAX_SKEW).strftime(AMZ_DATE_FORMAT)
        text = f"Signature not yet current: {amz_date} is still later than {edge} ({stamp} + 15 min.)"
        raise AwsError("InvalidSignatureException", text)


def _expected_signature(request: web.Request, body: bytes, auth: _Authorization, identity: Identity) -> str:
    """The signature botocore's signer computes for the request as the client sent it."""
    url = f"{request.scheme}://{request.headers.get('Host', '')}{request.raw_path}"
    signed = AWSRequest(method=request.method, url=url, data=body)
    for name in auth.signed_headers:
        for value in request.headers.getall(name, []):
            signed.headers[name] = value
    signed.context["timestamp"] = request.headers["X-Amz-Date"]
    credentials = Credentials(auth.access_key, identity.secret_key, identity.session_token)
    signer = SigV4Auth(credentials, auth.service, auth.region)
    return str(signer.signature(signer.string_to_sign(signed, signer.canonical_request(signed)), signed))


def _check_token(request: web.Request, identity: Identity) -> None:
    sent = request.headers.get("X-Amz-Security-Token")
    if identity.session_token is None:
        if sent is not None:
            raise AwsError("UnrecognizedClientException", INVALID_TOKEN)
        return
    if sent is None or not hmac.compare_digest(sent.encode(), identity.session_token.encode()):
        raise AwsError("UnrecognizedClientException", INVALID_TOKEN)


# ---------------------------------------------------------------------------------------------- input


def _field(member: str) -> str:
    return member[:1].lower() + member[1:]


def _string_problems(shape: Any, value: str) -> list[str]:
    meta = shape.metadata
    problems = []
    if shape.enum and value not in shape.enum:
        problems.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    if "pattern" in meta and re.fullmatch(meta["pattern"], value) is None:
        problems.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    if "min" in meta and len(value) < meta["min"]:
        problems.append(f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        problems.append(f"Member must have length less than or equal to {meta['max']}")
    return problems


def _member_problems(name: str, shape: Any, value: Any, required: bool) -> list[str]:
    if value is None:
        if not required:
            return []
        return [f"Value null at '{_field(name)}' failed to satisfy constraint: Member must not be null"]
    if shape.type_name == "string":
        problems = _string_problems(shape, value) if isinstance(value, str) else ["Member must be a string"]
    elif name == QUERY_MEMBER and not isinstance(value, dict):
        problems = ["Member must be a JSON object"]
    else:
        problems = []
    shown = value if isinstance(value, str) else json.dumps(value)
    return [f"Value '{shown}' at '{_field(name)}' failed to satisfy constraint: {p}" for p in problems]


def _validate(params: dict[str, Any]) -> None:
    shape = _operation().input_shape
    problems: list[str] = []
    for name, member in shape.members.items():
        problems += _member_problems(name, member, params.get(name), name in shape.required_members)
    if problems:
        plural = "s" if len(problems) > 1 else ""
        raise AwsError(
            "ValidationException",
            f"{len(problems)} validation error{plural} detected: " + "; ".join(problems),
        )


def _json_members(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        members = json.loads(body)
    except ValueError:
        raise AwsError("SerializationException", "Unable to parse the request body as JSON") from None
    if not isinstance(members, dict):
        raise AwsError("SerializationException", "Start of structure or map found where not expected.")
    return members


def _lenient_members(body: bytes) -> dict[str, Any]:
    """The body's members if it is a JSON object, else none (what a ``Call`` records before checks)."""
    try:
        return _json_members(body)
    except AwsError:
        return {}


def _uri_values(match: re.Match[str]) -> dict[str, str]:
    return {name: unquote(match[name]) for name in _uri_members() if match.groupdict().get(name) is not None}


# ---------------------------------------------------------------------------------------------- upstream


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_pairs(query: dict[str, Any] | None) -> list[tuple[str, str]]:
    """QueryParameters as ``requests`` sends a dict: a list repeats its key, ``None`` is left out."""
    pairs = []
    for key, value in (query or {}).items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((str(key), _query_value(item)))
    return pairs


def upstream_url(env: Environment, path: str, query: dict[str, Any] | None = None) -> yarl.URL:
    """The Airflow URL a call is forwarded to: Path as sent (only characters illegal in a path quoted)."""
    path = path if path.startswith("/") else "/" + path
    text = env.base_url.rstrip("/") + API_PREFIXES[env.api] + quote(path, safe=PATH_SAFE)
    pairs = _query_pairs(query)
    if pairs:
        text += "?" + urlencode(pairs)
    return yarl.URL(text, encoded=True)


def _answer_json(text: str) -> Any:
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {"detail": text}


def _wrap(status: int, text: str) -> web.Response:
    members = {"RestApiStatusCode": status, "RestApiResponse": _answer_json(text)}
    if status < 400:
        return _json_response(200, members)
    raise AwsError("RestApiClientException" if status < 500 else "RestApiServerException", members=members)


# ---------------------------------------------------------------------------------------------- server


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class _Draft:
    """What is known of a request so far (becomes its ``Call``)."""

    access_key: str | None = None
    env: str | None = ""
    method: str | None = None
    path: str | None = None


MAX_SIGNATURES_KEPT = 5000


class MwaaDouble(Front):
    """The AWS side of MWAA ``InvokeRestApi`` on loopback, forwarding to real Airflow servers.

    ``start()`` returns the endpoint_url.
    """

    _thread_name = "mwaa-double"

    def __init__(
        self,
        environments: dict[str, Environment],
        identities: dict[str, Identity],
        account: str = "123456789012",
    ):
        super().__init__()
        self.environments = environments
        self.identities = identities
        self.account = account
        self.calls: list[Call] = []
        # the valid signatures seen, for the test suite's leak scans only (they must appear nowhere)
        self.signatures: list[str] = []
        self._throttled = 0

    # -- control

    def __enter__(self) -> MwaaDouble:
        return self

    def throttle(self, n: int) -> None:
        """The next ``n`` otherwise valid calls answer ThrottlingException."""
        with self._lock:
            self._throttled = n

    def count(self, outcome: str | None = None, env: str | None = None) -> int:
        with self._lock:
            calls = list(self.calls)
        return sum(1 for c in calls if outcome in (None, c.outcome) and env in (None, c.env))

    # -- serving

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        draft = _Draft(access_key=_access_key_of(request.headers.get("Authorization")))
        try:
            response, outcome = await self._serve(request, body, draft), "forwarded"
        except AwsError as error:
            response, outcome = error.response(), error.code
        call = Call(draft.access_key, draft.env or "", draft.method, draft.path, outcome)
        with self._lock:
            self.calls.append(call)
        return response

    async def _serve(self, request: web.Request, body: bytes, draft: _Draft) -> web.Response:
        match = _route().fullmatch(request.raw_path.split("?")[0])
        if match is None or request.method != _operation().http["method"]:
            raise AwsError("UnknownOperationException", f"Unknown operation: {request.method} {request.path}")
        uri = _uri_values(match)
        seen = {**_lenient_members(body), **uri}
        draft.env, draft.method, draft.path = (_text(seen.get(k)) for k in ("Name", "Method", "Path"))
        identity, region = self._authenticate(request, body)
        params = {**_json_members(body), **uri}
        _validate(params)
        env = self._environment(params["Name"])
        headers = self._role_headers(identity, env, params["Name"], region, draft.access_key)
        self._take_throttle()
        return await self._forward(env, headers, params)

    def _authenticate(self, request: web.Request, body: bytes) -> tuple[Identity, str]:
        auth = _parse_authorization(request.headers.get("Authorization"))
        identity = self.identities.get(auth.access_key)
        if identity is None:
            raise AwsError("UnrecognizedClientException", INVALID_TOKEN)
        amz_date = request.headers.get("X-Amz-Date")
        _check_scope(auth, amz_date)
        _check_clock(str(amz_date))
        expected = _expected_signature(request, body, auth, identity)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise AwsError("InvalidSignatureException", BAD_SIGNATURE)
        with self._lock:
            if len(self.signatures) < MAX_SIGNATURES_KEPT:
                self.signatures.append(auth.signature)
        _check_token(request, identity)
        if identity.expired:
            raise AwsError("ExpiredTokenException", "The security token included in the request is expired")
        return identity, auth.region

    def _environment(self, name: str) -> Environment:
        env = self.environments.get(name)
        if env is None:
            raise AwsError("ResourceNotFoundException", f"Environment {name} not found")
        return env

    def _role_headers(
        self, identity: Identity, env: Environment, name: str, region: str, access_key: str | None
    ) -> dict[str, str]:
        role = identity.grants.get(name)
        if role is None or role not in env.roles:
            resource = f"arn:aws:airflow:{region}:{self.account}:role/{name}/{role or '*'}"
            text = (
                f"User: arn:aws:iam::{self.account}:user/{access_key} is not authorized to perform: "
                f"{service_model().signing_name}:{OPERATION} on resource: {resource}"
            )
            raise AwsError("AccessDeniedException", text)
        return dict(env.roles[role])

    def _take_throttle(self) -> None:
        with self._lock:
            if self._throttled <= 0:
                return
            self._throttled -= 1
        raise AwsError("ThrottlingException", "Rate exceeded")

    async def _forward(
        self, env: Environment, headers: dict[str, str], params: dict[str, Any]
    ) -> web.Response:
        assert self._session is not None
        url = upstream_url(env, params["Path"], params.get(QUERY_MEMBER))
        extra: dict[str, Any] = {}
        if params["Method"] != "GET" and params.get(BODY_MEMBER) is not None:
            extra["json"] = params[BODY_MEMBER]
        try:
            async with self._session.request(params["Method"], url, headers=headers, **extra) as answer:
                status, raw = answer.status, await answer.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise AwsError(
                "InternalServerException", f"Airflow did not answer: {type(exc).__name__}"
            ) from None
        return _wrap(status, raw.decode("utf-8", errors="replace"))
