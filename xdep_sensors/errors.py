"""One small exception family; every error carries the HTTP status, a credential-free URL and a hint."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str | None) -> str | None:
    """Return ``url`` without user-info or query string, so it can be shown anywhere."""
    if not url:
        return url
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class XdepError(Exception):
    """Base of every error raised by xdep_sensors."""

    transient = False

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None, hint: str = ""):
        self.message = message
        self.status = status
        self.url = safe_url(url)
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        where = " ".join(p for p in (f"HTTP {self.status}" if self.status else "", self.url or "") if p)
        if where:
            text = f"{text} [{where}]"
        if self.hint:
            text = f"{text}. {self.hint}"
        return text

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.status, self.url, self.hint))


def _rebuild(cls: type[XdepError], message: str, status: int | None, url: str | None, hint: str):
    return cls(message, status=status, url=url, hint=hint)


class TransientError(XdepError):
    """Upstream trouble that may pass (5xx, connection errors, timeouts): retry, keep waiting."""

    transient = True


class UpstreamUnavailable(TransientError):
    """The upstream did not answer usefully right now."""


class RateLimited(TransientError):
    """The upstream answered 429; ``retry_after`` says how long it asked us to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ConfigurationError(XdepError):
    """The connection or the arguments are wrong; no retry can help."""


class AuthenticationError(XdepError):
    """The upstream rejected the credentials."""


class PermissionDenied(XdepError):
    """The credentials are valid but not allowed to read what the sensor needs."""


class NotFound(XdepError):
    """The upstream has no such DAG, run, task or asset."""


class NotVisible(PermissionDenied):
    """What a wait needs is hidden from the connection's user (absent, or not readable by it: under
    per-DAG roles Airflow answers both alike)."""


class BadResponse(XdepError):
    """The upstream answered something that is not the Airflow API (HTML, bad JSON, odd shape)."""


class TLSError(XdepError):
    """The TLS handshake failed."""
