"""Local test doubles of the Google side of Cloud Composer, in front of a real Airflow.

    tokens = TokenEndpoint()
    tokens.start()
    key = tokens.service_account_key("reader@my-project.iam.gserviceaccount.com")  # a real SA JSON key
    front = BearerFront(tokens, "http://127.0.0.1:8080",                            # the real Airflow
                        {"reader@my-project.iam.gserviceaccount.com": {"Authorization": "Bearer <jwt>"}})
    web_server_url = front.start()  # give key + web_server_url to the Google connection / hook
    ...
    front.stop(); tokens.stop()

They stand in for Google only. ``TokenEndpoint`` is an OAuth 2 token endpoint that accepts the JWT-bearer
grant google-auth's service-account credentials make (the keys it hands out carry its ``token_uri``);
``BearerFront`` is the Composer web server's front: it admits the access tokens the endpoint issued and
forwards every request, as sent, to the real Airflow REST API with the headers of the caller's Airflow
user. Private keys are never kept (only their public halves); ``calls`` logs hold e-mails, outcomes,
methods, paths and statuses, never tokens, assertions or upstream headers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from multidict import CIMultiDict

from devtools.loopback import Front, Loopback

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "GOOGLE_TOKEN_AUDIENCE",
    "BearerFront",
    "FrontCall",
    "TokenCall",
    "TokenEndpoint",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# google-auth signs every service-account assertion for Google's own token endpoint, whatever the
# key's token_uri (google/oauth2/service_account.py: "aud": _GOOGLE_OAUTH2_TOKEN_ENDPOINT)
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_ASSERTION_LIFETIME = 3600  # seconds: Google's "short-lived token (60 minutes)"
CLOCK_SKEW = 300  # seconds allowed either side for iat / exp
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

BAD_SIGNATURE = "Invalid JWT Signature."
ACCOUNT_NOT_FOUND = "Invalid grant: account not found"
BAD_AUDIENCE = "Invalid JWT: Failed audience check."
BAD_TIMEFRAME = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)

# request headers not forwarded upstream: the caller's credentials and what the hop sets itself
_DROPPED_REQUEST = frozenset(
    h.lower()
    for h in (
        "Authorization", "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
        "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Accept-Encoding", "Cookie",
    )
)  # fmt: skip
# upstream answer headers not returned: hop-by-hop ones and those the front's own server sets
_DROPPED_ANSWER = frozenset(
    h.lower()
    for h in (
        "Content-Length", "Content-Encoding", "Transfer-Encoding", "Connection", "Keep-Alive",
        "Server", "Date", "Set-Cookie", "Trailer", "Upgrade",
    )
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TokenCall:
    """One token request. ``email``: the assertion's ``iss`` as claimed (unverified), if readable.

    ``outcome``: ``granted`` or the OAuth error code answered (``invalid_grant``, ``invalid_scope``,
    ``invalid_request``, ``unsupported_grant_type``, ``internal_failure`` while ``down``).
    """

    email: str | None
    outcome: str


@dataclass(frozen=True)
class FrontCall:
    """One request that reached the front. ``email``: the token's owner, None if it was not admitted."""

    email: str | None
    method: str
    path: str
    status: int


@dataclass
class _Key:
    email: str
    public_key: rsa.RSAPublicKey = field(repr=False)
    revoked: bool = False


@dataclass(frozen=True)
class _Grant:
    email: str
    expires: float  # time.monotonic()
    scopes: tuple[str, ...]


class OAuthError(Exception):
    """An error answer of the token endpoint: ``{"error": code, "error_description": ...}``."""

    def __init__(self, code: str, description: str | None = None, status: int = 400):
        super().__init__(code)
        self.code = code
        self.description = description
        self.status = status

    def response(self) -> web.Response:
        body = {"error": self.code}
        if self.description is not None:
            body["error_description"] = self.description
        return web.json_response(body, status=self.status, headers=NO_STORE)


def _invalid_signature() -> OAuthError:
    return OAuthError("invalid_grant", BAD_SIGNATURE)


# ---------------------------------------------------------------------------------------------- serving


# ---------------------------------------------------------------------------------------------- JWT


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass(frozen=True)
class _Assertion:
    header: dict[str, Any]
    claims: dict[str, Any]
    signed: bytes = field(repr=False)
    signature: bytes = field(repr=False)


def _parse_assertion(text: str) -> _Assertion:
    parts = text.split(".")
    if len(parts) != 3:
        raise _invalid_signature()
    try:
        header, claims = (json.loads(_b64decode(p)) for p in parts[:2])
        signature = _b64decode(parts[2])
        signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    except (ValueError, binascii.Error):
        raise _invalid_signature() from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _invalid_signature()
    return _Assertion(header, claims, signed, signature)


def _claimed_email(text: str | None) -> str | None:
    """The ``iss`` an assertion claims, unverified (for the ``calls`` log only)."""
    try:
        iss = _parse_assertion(text or "").claims.get("iss")
    except OAuthError:
        return None
    return iss if isinstance(iss, str) else None


def _check_signature(assertion: _Assertion, key: _Key) -> None:
    if assertion.header.get("alg") != "RS256" or assertion.claims.get("iss") != key.email:
        raise _invalid_signature()
    try:
        key.public_key.verify(assertion.signature, assertion.signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise _invalid_signature() from None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check_timeframe(claims: dict[str, Any], now: float) -> None:
    iat, exp = _number(claims.get("iat")), _number(claims.get("exp"))
    if iat is None or exp is None:
        raise OAuthError("invalid_grant", BAD_TIMEFRAME)
    if not 0 < exp - iat <= MAX_ASSERTION_LIFETIME or iat > now + CLOCK_SKEW or exp < now - CLOCK_SKEW:
        raise OAuthError("invalid_grant", BAD_TIMEFRAME)


def _scopes(claims: dict[str, Any]) -> tuple[str, ...]:
    scope = claims.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else ()
    if CLOUD_PLATFORM_SCOPE not in scopes:
        asked = " ".join(scopes) or "(none)"
        raise OAuthError(
            "invalid_scope",
            f"Invalid OAuth scope or ID token audience provided. This double grants only "
            f"{CLOUD_PLATFORM_SCOPE} (what Cloud Composer needs); asked for: {asked}",
        )
    return scopes


def _form_text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------------------------- tokens


class TokenEndpoint(Loopback):
    """Google's OAuth 2 token endpoint (``POST /token``, the JWT-bearer grant) on loopback.

    It checks an assertion as Google does: RS256 signature by the public key registered under the
    header's ``kid``, ``iss`` equal to that key's ``client_email``, ``aud`` Google's token endpoint
    (``https://oauth2.googleapis.com/token``, which google-auth always uses) or this endpoint's own
    ``token_uri``, ``exp - iat`` at most 3600 s and both within 5 min of now. Unlike Google, it issues
    tokens for ``https://www.googleapis.com/auth/cloud-platform`` only (Cloud Composer's scope): an
    assertion whose ``scope`` lacks it is answered ``invalid_scope``, where Google would grant the
    other scopes. ``revoke(email)`` refuses the e-mail's keys from then on (``invalid_grant``).
    Issued tokens live ``lifetime`` seconds (``expires_in`` says it rounded, at least 1).
    """

    _thread_name = "google-token-endpoint"

    def __init__(self, lifetime: float = 3600.0):
        super().__init__()
        self.lifetime = lifetime
        self.calls: list[TokenCall] = []
        self._keys: dict[str, _Key] = {}  # private_key_id -> key
        self._tokens: dict[str, _Grant] = {}  # access token -> grant
        self._issued: list[str] = []  # every token issued, expired ones too (for the leak scans)
        self._down = 0

    def __enter__(self) -> TokenEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    # -- control

    def service_account_key(self, email: str) -> dict[str, str]:
        """A new RSA-2048 key for ``email`` as the JSON key Google issues (only its public half is kept)."""
        token_uri = self.token_uri
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        with self._lock:
            self._keys[key_id] = _Key(email, private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": _project_of(email),
            "private_key_id": key_id,
            "private_key": pem.decode("ascii"),
            "client_email": email,
            "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + quote(email),
            "universe_domain": "googleapis.com",
        }

    def revoke(self, email: str, tokens: bool = False) -> None:
        """Refuse ``email``'s keys from now on; with ``tokens``, its issued tokens stop working too."""
        with self._lock:
            for key in self._keys.values():
                if key.email == email:
                    key.revoked = True
            if tokens:
                self._tokens = {t: g for t, g in self._tokens.items() if g.email != email}

    def down(self, n: int) -> None:
        """The next ``n`` token requests answer 503 ``{"error": "internal_failure"}``."""
        with self._lock:
            self._down = n

    # -- inspection

    def grants(self, email: str | None = None) -> int:
        """How many tokens were issued (to ``email``, if given)."""
        with self._lock:
            calls = list(self.calls)
        return sum(1 for c in calls if c.outcome == "granted" and email in (None, c.email))

    def issued(self) -> list[str]:
        """Every access token issued so far: for the test suite's leak scans only."""
        with self._lock:
            return list(self._issued)

    def token_owner(self, token: str | None) -> str | None:
        """The e-mail ``token`` was issued to, if it was and has not expired."""
        if not token:
            return None
        with self._lock:
            grant = self._tokens.get(token)
            if grant is None:
                return None
            if time.monotonic() >= grant.expires:
                del self._tokens[token]
                return None
            return grant.email

    # -- serving

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        email = _claimed_email(_form_text(form, "assertion"))
        try:
            self._take_down()
            body = self._grant(form)
            response, outcome = web.json_response(body, headers=NO_STORE), "granted"
        except OAuthError as error:
            response, outcome = error.response(), error.code
        with self._lock:
            self.calls.append(TokenCall(email, outcome))
        return response

    def _take_down(self) -> None:
        with self._lock:
            if self._down <= 0:
                return
            self._down -= 1
        raise OAuthError("internal_failure", status=503)

    def _grant(self, form: Any) -> dict[str, Any]:
        grant_type = _form_text(form, "grant_type")
        if grant_type != JWT_BEARER_GRANT:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}")
        text = _form_text(form, "assertion")
        if not text:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        assertion = _parse_assertion(text)
        key = self._verified_key(assertion)
        return self._issue(key.email, _scopes(assertion.claims))

    def _verified_key(self, assertion: _Assertion) -> _Key:
        with self._lock:
            key = self._keys.get(str(assertion.header.get("kid")))
        if key is None:
            raise _invalid_signature()
        _check_signature(assertion, key)
        if key.revoked:
            raise OAuthError("invalid_grant", ACCOUNT_NOT_FOUND)
        if assertion.claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.token_uri):
            raise OAuthError("invalid_grant", BAD_AUDIENCE)
        _check_timeframe(assertion.claims, time.time())
        return key

    def _issue(self, email: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = _Grant(email, time.monotonic() + self.lifetime, scopes)
            self._issued.append(token)
        return {"access_token": token, "expires_in": max(1, round(self.lifetime)), "token_type": "Bearer"}


def _project_of(email: str) -> str:
    """``name@project.iam.gserviceaccount.com`` -> ``project`` (else a fixed test project)."""
    domain = email.partition("@")[2]
    suffix = ".iam.gserviceaccount.com"
    return domain[: -len(suffix)] if domain.endswith(suffix) else "xdep-double-project"


# ---------------------------------------------------------------------------------------------- front


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


class _Refused(Exception):
    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


class BearerFront(Front):
    """Cloud Composer's web server front on loopback, before a real Airflow REST API.

    Every request needs ``Authorization: Bearer <token>`` with a token ``tokens`` issued and not
    expired, else 401 ``{"detail": "Unauthorized"}`` with ``WWW-Authenticate: Bearer``. An admitted
    request goes to ``upstream_base_url`` + its path and query, as sent, with its body, with the
    headers of the token owner's Airflow user (``principals[email]``) in place of the caller's
    Authorization. An owner not in ``principals`` (a first-time caller, in Composer's default role) is
    forwarded with ``default_headers`` if given, else answered 403 ``{"detail": "Forbidden"}``.
    The upstream answer comes back as is (status, body, content type); no answer: 502 (504 on timeout).
    """

    _thread_name = "google-bearer-front"

    def __init__(
        self,
        tokens: TokenEndpoint,
        upstream_base_url: str,
        principals: dict[str, dict[str, str]],
        default_headers: dict[str, str] | None = None,
    ):
        super().__init__()
        self.tokens = tokens
        self.upstream_base_url = upstream_base_url.rstrip("/")
        self.principals = principals
        self.default_headers = default_headers
        self.calls: list[FrontCall] = []
        self._unauthorized = 0

    def __enter__(self) -> BearerFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def unauthorized(self) -> int:
        """How many requests the front itself answered 401."""
        with self._lock:
            return self._unauthorized

    def count(self, status: int | None = None, email: str | None = None) -> int:
        with self._lock:
            calls = list(self.calls)
        return sum(1 for c in calls if status in (None, c.status) and email in (None, c.email))

    # -- serving

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        email = self.tokens.token_owner(_bearer(request.headers.get("Authorization")))
        try:
            response = await self._forward(request, body, self._upstream_headers(email))
        except _Refused as refused:
            response = refused.response
        with self._lock:
            self.calls.append(
                FrontCall(email, request.method, request.raw_path.split("?")[0], response.status)
            )
            if email is None:
                self._unauthorized += 1
        return response

    def _upstream_headers(self, email: str | None) -> dict[str, str]:
        if email is None:
            raise _Refused(_detail(401, "Unauthorized", {"WWW-Authenticate": "Bearer"}))
        headers = self.principals.get(email, self.default_headers)
        if headers is None:
            raise _Refused(_detail(403, "Forbidden"))
        return dict(headers)

    async def _forward(self, request: web.Request, body: bytes, principal: dict[str, str]) -> web.Response:
        assert self._session is not None
        url = yarl.URL(self.upstream_base_url + request.raw_path, encoded=True)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED_REQUEST)
        for name, value in principal.items():
            headers[name] = value  # replaces any the caller sent
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as answer:
                raw = await answer.read()
                kept = CIMultiDict(
                    (k, v) for k, v in answer.headers.items() if k.lower() not in _DROPPED_ANSWER
                )
                return web.Response(status=answer.status, body=raw, headers=kept)
        except asyncio.TimeoutError:
            return _detail(504, "Gateway Timeout")
        except aiohttp.ClientError:
            return _detail(502, "Bad Gateway")
