"""Amazon MWAA: the Airflow REST API through the AWS operation ``InvokeRestApi``, signed by the caller.

The transport is given a factory of an aiobotocore ``mwaa`` client (the hook builds it from an Airflow
AWS connection with the Amazon provider); nothing here imports Airflow or the provider. Facts it is
built on (botocore's ``mwaa`` model): ``Path`` is relative to the API root and 1-64 characters, which
botocore does not check before sending; Airflow's own answers other than 2xx arrive as HTTP 400
``RestApiClientException`` / ``RestApiServerException`` carrying ``RestApiStatusCode`` and
``RestApiResponse``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote

from xdep_sensors.client.dialects import Request
from xdep_sensors.client.policy import RetryPolicy, error_for_answer
from xdep_sensors.client.session import BaseTransport, ClientConfig
from xdep_sensors.errors import (
    AuthenticationError,
    BadResponse,
    ConfigurationError,
    NotFound,
    PermissionDenied,
    RateLimited,
    UpstreamUnavailable,
    XdepError,
)

MAX_PATH = 64  # botocore's mwaa model: RestApiPath max 64 (not enforced by botocore before sending)
PCHAR = "-._~!$&'()*+,;=:@"  # what a path segment may carry unescaped (RFC 3986): ':' and '+' in run ids
API_ROOTS = ("/api/v2", "/api/v1")
THROTTLED = {"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "Throttling"}
UNAVAILABLE = {"InternalServerException", "ServiceUnavailable", "ServiceUnavailableException"}
BAD_SIGNATURE = {"InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature"}
UNKNOWN_KEY = {"UnrecognizedClientException", "InvalidClientTokenId"}
NO_ANSWER = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "HTTPClientError",
}
EXPIRED = {"ExpiredTokenException", "ExpiredToken", "RequestExpired"}
INVOKE_POLICY = (
    'an IAM policy allowing "airflow:InvokeRestApi" on '
    '"arn:aws:airflow:<region>:<account>:role/{env}/Viewer" (the Airflow role it maps to)'
)

# AWS's refusals that no retry can help: code -> (error, what happened, the fix), {placeholders} filled in
REFUSALS: dict[str, tuple[type[XdepError], str, str]] = {
    "ResourceNotFoundException": (
        ConfigurationError,
        "MWAA environment {env!r} not found ({detail})",
        'check the extra "mwaa_environment" and the region of {aws}',
    ),
    "AccessDeniedException": (
        PermissionDenied,
        "AWS denied airflow:InvokeRestApi on MWAA environment {env!r}: {detail}",
        "give the identity of {aws} " + INVOKE_POLICY,
    ),
    **dict.fromkeys(
        BAD_SIGNATURE,
        (
            AuthenticationError,
            "AWS rejected the request signature ({code})",
            "check the secret access key of {aws} (and this machine's clock)",
        ),
    ),
    **dict.fromkeys(
        UNKNOWN_KEY,
        (
            AuthenticationError,
            "AWS does not recognise the credentials ({code})",
            "check the access key id (and session token) of {aws}",
        ),
    ),
    **dict.fromkeys(
        EXPIRED,
        (
            AuthenticationError,
            "the AWS credentials have expired ({code})",
            "renew the session token of {aws}, or give it a role to assume (refreshed by itself)",
        ),
    ),
}

MwaaClientFactory = Callable[[], Awaitable[Any]]


def wire_path(path: str) -> str:
    """``path`` relative to the API root, each segment escaped no more than a URL path needs."""
    for root in API_ROOTS:
        if path == root or path.startswith(root + "/"):
            path = path[len(root) :]
            break
    return "/".join(quote(unquote(seg), safe=PCHAR) for seg in path.split("/")) or "/"


def _names(path: str) -> str:
    """What in ``path`` makes it long, named: ``DAG 'x', run 'y', task 'z'``."""
    segments = [unquote(seg) for seg in path.split("/")]
    labels = {"dags": "DAG", "dagRuns": "run", "taskInstances": "task"}
    named = [
        f"{labels[key]} {value!r}"
        for key, value in zip(segments, segments[1:])
        if key in labels and value not in ("~", "list")
    ]
    return ", ".join(named) or f"path {path!r}"


class MwaaTransport(BaseTransport):
    """Every request as one ``InvokeRestApi`` call on one MWAA environment."""

    path_limit = MAX_PATH

    def __init__(
        self,
        config: ClientConfig,
        connect: MwaaClientFactory,
        *,
        retry: RetryPolicy | None = None,
        sleep=None,
    ):
        super().__init__(config, retry=retry, sleep=sleep)
        if not config.mwaa_environment:
            raise ConfigurationError(
                f"connection {config.conn_id!r} says auth=aws_mwaa but names no environment",
                hint='set the extra "mwaa_environment" to the MWAA environment\'s name',
            )
        self.environment = config.mwaa_environment
        self._connect = connect
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._version: asyncio.Future | None = None  # the environment's GET /version answer

    def fits(self, request: Request) -> bool:
        return len(wire_path(request.path)) <= MAX_PATH

    def _where(self, path: str) -> str:
        return f"mwaa://{self.environment}{path}"

    async def _aws(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                try:
                    self._client = await self._connect()
                except XdepError:
                    raise
                except Exception as exc:
                    raise _aws_error(exc, self.environment, self.config, self._where("")) from None
            return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def deliver(self, request: Request) -> Any:
        root = next((r for r in API_ROOTS if request.path.startswith(r + "/")), None)
        path = wire_path(request.path)
        if path == "/version":
            body = await self._environment_version()
            if root is not None and root != _root_of(body):
                raise NotFound(f"the environment has no {root}", status=404, url=self._where(request.path))
            return body
        if root is not None and root != _root_of(await self._environment_version()):
            raise NotFound(f"the environment has no {root}", status=404, url=self._where(request.path))
        return await self._invoke(request, path)

    async def _environment_version(self) -> Any:
        """``GET /version`` once per transport: which API root the environment serves (v1 on Airflow 2)."""
        if self._version is None or (self._version.done() and self._version.exception() is not None):
            self._version = asyncio.ensure_future(self._invoke(Request("GET", "/version"), "/version"))
        return await asyncio.shield(self._version)

    async def _invoke(self, request: Request, path: str) -> Any:
        if len(path) > MAX_PATH:
            raise ConfigurationError(
                f"{_names(path)} make the MWAA InvokeRestApi path {len(path)} characters long; "
                f"MWAA accepts at most {MAX_PATH}",
                url=self._where(path),
                hint="use shorter DAG or run ids, or wait by logical_date or latest_after instead of "
                "run_id (those read through list endpoints)",
            )
        kwargs: dict[str, Any] = {"Name": self.environment, "Path": path, "Method": request.method}
        query = _query(request.params)
        if query:
            kwargs["QueryParameters"] = query
        if request.json is not None:
            kwargs["Body"] = request.json
        client = await self._aws()
        self.requests_sent += 1
        url = self._where(path)
        try:
            answer = await asyncio.wait_for(client.invoke_rest_api(**kwargs), self.config.timeout)
        except asyncio.TimeoutError:
            raise UpstreamUnavailable("the MWAA API did not answer (timed out)", url=url) from None
        except Exception as exc:
            raise _aws_error(exc, self.environment, self.config, url) from None
        return _answer(answer, url, self.dialect_name or "")


def _root_of(version_body: Any) -> str:
    version = str(version_body.get("version", "")) if isinstance(version_body, dict) else ""
    return "/api/v1" if version.startswith("2.") else "/api/v2"


def _query(params: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Query parameters as the JSON object ``InvokeRestApi`` takes: a repeated key becomes a list."""
    out: dict[str, Any] = {}
    for key, value in params:
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def _answer(answer: Any, url: str, api: str) -> Any:
    status = answer.get("RestApiStatusCode") if isinstance(answer, dict) else None
    if not isinstance(status, int) or "RestApiResponse" not in answer:
        raise BadResponse("the MWAA API answered without RestApiStatusCode/RestApiResponse", url=url)
    if 200 <= status < 300:
        return answer["RestApiResponse"]
    raise _mwaa_hint(error_for_answer(status, answer["RestApiResponse"], url, api=api))


def _mwaa_hint(err: XdepError) -> XdepError:
    """Airflow's 401/403 behind MWAA: the Airflow role the IAM policy maps to may not read it."""
    if isinstance(err, (AuthenticationError, PermissionDenied)):
        err.hint = (
            "the Airflow role that the IAM policy's airflow:InvokeRestApi resource names "
            "(arn:aws:airflow:<region>:<account>:role/<environment>/<role>) may not read DAGs, DAG runs "
            "and assets: use the Viewer role (or one with those read permissions)"
        )
    return err


def _aws_error(exc: BaseException, env: str, config: ClientConfig, url: str) -> XdepError:
    """botocore's errors (a ``ClientError`` carries ``response``) as the library's, with the fix."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return _client_error(response, env, config, url)
    name = type(exc).__name__
    aws = f"AWS connection {config.aws_conn_id!r}"
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return AuthenticationError(
            f"no usable AWS credentials for {aws} ({name})",
            url=url,
            hint="give the AWS connection keys or a role, or run where the default credential chain "
            "finds them (an execution role, AWS_* variables)",
        )
    if name in ("NoRegionError",):
        return ConfigurationError(
            f"{aws} has no region", url=url, hint='set "region_name" in the AWS connection\'s extra'
        )
    if name in NO_ANSWER:
        return UpstreamUnavailable(f"the MWAA API did not answer ({name})", url=url)
    if name in ("ParamValidationError",):
        return ConfigurationError(f"the MWAA request is invalid: {exc}", url=url)
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return ConfigurationError(
            f"auth=aws_mwaa needs the Amazon provider with aiobotocore ({exc.name or exc})",
            hint="pip install 'xdep-sensors[amazon]'",
        )
    return ConfigurationError(f"the AWS client failed: {name}: {str(exc)[:200]}", url=url)


def _client_error(response: dict, env: str, config: ClientConfig, url: str) -> XdepError:
    code = str(response["Error"].get("Code", ""))
    message = str(response["Error"].get("Message", ""))[:300] or code
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("RestApiClientException", "RestApiServerException"):
        answer = {k: response.get(k) for k in ("RestApiStatusCode", "RestApiResponse")}
        return _answer(answer, url, "")
    if code in THROTTLED:
        return RateLimited(f"AWS is throttling InvokeRestApi ({code})", status=status, url=url)
    if code in UNAVAILABLE or (isinstance(status, int) and status >= 500):
        return UpstreamUnavailable(f"the MWAA API is unavailable ({code})", status=status, url=url)
    if code in REFUSALS:
        kind, what, fix = REFUSALS[code]
        values = {
            "env": env,
            "aws": f"AWS connection {config.aws_conn_id!r}",
            "code": code,
            "detail": message,
        }
        return kind(what.format(**values), status=status, url=url, hint=fix.format(**values))
    return BadResponse(f"the MWAA API refused the call ({code}: {message})", status=status, url=url)
