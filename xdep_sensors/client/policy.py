"""Pure rules: how to read an HTTP answer, and when and how long to wait before trying again."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

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

MAX_BODY_BYTES = 16 * 1024 * 1024


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title") or ""
        if isinstance(detail, list):  # v2 validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return str(detail)[:300]
    return ""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def decipher_response(
    status: int, headers: Mapping[str, str], body: bytes, url: str, *, api: str = ""
) -> Any:
    """Return the decoded JSON of a successful answer, or raise the matching :class:`XdepError`."""
    content_type = headers.get("Content-Type", "").lower()
    text = body.decode("utf-8", errors="replace")
    parsed = _json_body(status, content_type, text, url, api)
    if 200 <= status < 300:
        if "json" not in content_type:
            raise _not_json(status, content_type, text, url)
        return parsed
    raise _error_for(status, headers, _detail(parsed), text, url, api)


def error_for_answer(status: int, body: Any, url: str, *, api: str = "") -> XdepError:
    """The error an unsuccessful answer whose body is already decoded (``body``) means."""
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return _error_for(status, {}, _detail(body), text, url, api)


def _json_body(status: int, content_type: str, text: str, url: str, api: str) -> Any:
    """The JSON of a body that says it is JSON (``None`` otherwise); malformed JSON in a success fails."""
    if "json" not in content_type:
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        if 200 <= status < 300:
            raise BadResponse(
                f"malformed JSON from the upstream {api} API",
                status=status,
                url=url,
                hint="the upstream or a proxy in front of it sent a broken body",
            ) from None
        return None


def _not_json(status: int, content_type: str, text: str, url: str) -> BadResponse:
    looks_html = "html" in content_type or text.lstrip().lower().startswith(("<!doctype", "<html"))
    return BadResponse(
        "the upstream answered an HTML page instead of the Airflow API"
        if looks_html
        else f"the upstream answered content type {content_type or 'none'!r}, not JSON",
        status=status,
        url=url,
        hint="check the connection's host (an SSO/login page or another service is answering)",
    )


def _error_for(
    status: int, headers: Mapping[str, str], detail: str, text: str, url: str, api: str
) -> XdepError:
    """The error an unsuccessful answer means."""
    if 300 <= status < 400:
        location = headers.get("Location", "")
        return ConfigurationError(
            "the upstream redirected the request",
            status=status,
            url=url,
            hint=f"set the connection's host to the final URL ({location.split('?')[0]})"
            if location
            else "set the connection's host to the final URL",
        )
    if status == 401:
        return AuthenticationError(
            f"authentication failed: {detail or 'unauthorized'}",
            status=status,
            url=url,
            hint="check the connection's token, or login and password",
        )
    if status == 403 and detail == "Invalid JWT token":  # Airflow 3: a bearer token it cannot verify
        return AuthenticationError(
            f"authentication failed: {detail}",
            status=status,
            url=url,
            hint="check the connection's token: the upstream cannot verify it (mistyped, cut short, or "
            "issued by another deployment)",
        )
    if status == 403:
        what, needs = permission_for(url, api)
        return PermissionDenied(
            f"access denied reading {what}: {detail or 'forbidden'}",
            status=status,
            url=url,
            hint=f"the connection's user needs {needs} (see the Permissions guide); or check its "
            "credentials (Airflow 2 answers 403 for a wrong password)",
        )
    if status == 404:
        return NotFound(detail or "not found", status=status, url=url)
    if status == 429:
        return RateLimited(
            "the upstream is rate limiting us",
            status=status,
            url=url,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
        )
    if status >= 500 or status == 408:
        return UpstreamUnavailable(
            f"the upstream is unavailable: {detail or text[:120].strip() or 'no detail'}",
            status=status,
            url=url,
        )
    return BadResponse(
        f"the upstream rejected the request: {detail or text[:200]}",
        status=status,
        url=url,
        hint=f"this may be an API difference of the upstream {api} version; please report it",
    )


def permission_for(url: str, api: str = "") -> tuple[str, str]:
    """What a request of ``url`` reads, and the FAB permissions that reading needs (Airflow 3 names, or
    Airflow 2's with ``api="v1"``)."""
    path = urlsplit(url).path
    parts = path.split("/api/v", 1)[-1].split("/")[1:]  # after the API root
    assets = "Datasets" if api == "v1" else "Assets"
    dag = f"DAG:{unquote(parts[1])}" if len(parts) > 1 and parts[0] == "dags" and parts[1] != "~" else ""
    dag_read = f"can_read on {dag}" if dag else "can_read on each DAG it waits for (DAG:<id>)"
    if "taskInstances" in parts:
        return "task instances", f"{dag_read}, DAG Runs and Task Instances"
    if "tasks" in parts:
        return "the DAG's tasks", f"{dag_read} and can_read on Task Instances"
    if "dagRuns" in parts:
        return "DAG runs", f"{dag_read} and can_read on DAG Runs"
    if parts[:1] == ["dags"]:
        return ("DAG " + dag[4:], dag_read) if dag else ("DAGs", "can_read on DAGs or on DAG:<id>")
    if parts[:1] in (["assets"], ["datasets"]) and "events" in parts:
        return "asset events", f"can_read on {assets} (and on each producing DAG: DAG:<id>)"
    if parts[:1] == ["assets"]:
        return "assets", "can_read on Assets and on Asset Aliases"
    if parts[:1] == ["datasets"]:
        return "datasets", "can_read on Datasets"
    return "the upstream API", "read permissions (the stock Viewer role has them all)"


def is_retryable(exc: BaseException) -> bool:
    """Retry connection errors, timeouts, 5xx and 429 — never other 4xx or bad answers."""
    return isinstance(exc, XdepError) and exc.transient


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: the one rule for retrying a request and for polling after failures.

    A request makes at most ``attempts`` tries (:meth:`delay`); poll loops use :meth:`poll_delay`. Both
    honour ``Retry-After``.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    max_poll_delay: float = 900.0
    config_error_delay: float = 300.0  # after a failure that is not transient (a token, a URL)

    def _backoff(
        self, base: float, attempt: int, cap: float, exc: BaseException | None, rng: random.Random | None
    ) -> float:
        ceiling = min(cap, base * (2 ** (attempt - 1)))
        wait = (rng or random).uniform(ceiling / 2, ceiling)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_retry_after))
        return wait

    def delay(
        self, attempt: int, exc: BaseException | None = None, *, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based) after ``exc``."""
        return self._backoff(self.base_delay, attempt, self.max_delay, exc, rng)

    def poll_delay(
        self,
        interval: float,
        failures: int,
        exc: BaseException | None = None,
        *,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds until the next poll after ``failures`` failed polls in a row.

        The interval doubling per failure (with jitter, up to ``max_poll_delay``); at least
        ``config_error_delay`` after an error that is not transient.
        """
        if failures <= 0:
            return interval
        wait = max(interval, self._backoff(interval * 2, failures, self.max_poll_delay, exc, rng))
        if exc is not None and not is_retryable(exc):
            wait = max(wait, self.config_error_delay)
        return min(wait, max(self.max_poll_delay, interval))


POLICY = RetryPolicy()
