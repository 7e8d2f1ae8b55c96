"""A chaos upstream: a loopback reverse proxy that misbehaves on demand, then passes through.

It runs its own event loop in a thread, so the code under test (a trigger in the test's loop, or a
sensor's synchronous ``poke``) meets it exactly as it would meet a real, flaky upstream.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from devtools.airflow_local import free_port

TRANSIENT = ("500", "502", "503", "429", "reset", "hang", "refuse")
PERMANENT = ("html", "truncated", "content_type", "redirect")
# answered only to requests that carry an Authorization header (data requests, never the version probe
# nor the credentials exchange POST /auth/token): the upstream rejecting a token, or its permissions
AUTH = ("401", "403")
# valid JSON of the wrong shape, answered to data requests (under /api/, not the version probe)
SHAPES = {"shape_object": {"unexpected": 1}, "shape_list": [{"unexpected": 1}]}
LOGIN_PAGE = "<!DOCTYPE html><html><body><form action='/login'>Sign in with SSO</form></body></html>"


@dataclass
class Fault:
    kind: str
    until: float
    requests: int = 0  # requests the proxy answered with the fault
    times: int | None = None  # the fault ends after answering this many requests (None: at ``until``)
    attempts: int = 0  # requests the client attempted while the fault was on (``ChaosProxy.attempted``),
    # refused connections included: those never reach the proxy


@dataclass
class Redirected:
    """The other host a redirect points at: it records the Authorization headers it was sent."""

    port: int = field(default_factory=free_port)
    authorizations: list[str | None] = field(default_factory=list)


class ChaosProxy:
    """Reverse proxy to ``target``; ``inject(kind, seconds)`` makes it misbehave for a while."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fault: Fault | None = None
        self.total = 0
        self.paths: Counter[str] = Counter()  # requests per path (a pass-through request counter)
        self.user_agents: Counter[str | None] = Counter()  # requests per User-Agent header
        self.other = Redirected()
        self.attempts = 0  # requests a client reports it attempted (``attempted``), reaching us or not
        self.tls_port: int | None = None
        self.tls_url: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="chaos-proxy")
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # lifecycle ------------------------------------------------------------------------------

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()
        other = web.Application()
        other.router.add_route("*", "/{tail:.*}", self._other_host)
        self._other_runner = web.AppRunner(other, access_log=None)
        await self._other_runner.setup()
        await web.TCPSite(self._other_runner, "127.0.0.1", self.other.port).start()

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    def serve_tls(self, certfile: Path, keyfile: Path) -> str:
        """Also listen with TLS (this certificate) on another port, in front of the same upstream; its URL."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        self.tls_port = free_port()

        async def _serve():
            await web.TCPSite(self._runner, "127.0.0.1", self.tls_port, ssl_context=context).start()

        self._call(_serve())
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"
        return self.tls_url

    def stop(self) -> None:
        async def _stop():
            await self._runner.cleanup()
            await self._other_runner.cleanup()
            await self._session.close()

        self._call(_stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # faults -----------------------------------------------------------------------------------

    def inject(self, kind: str, seconds: float, times: int | None = None) -> Fault:
        """Misbehave for ``seconds`` (or for ``times`` requests); ``refuse`` closes the listening socket
        for that long. ``AUTH`` and ``SHAPES`` faults answer only the requests they concern."""
        assert kind in TRANSIENT + PERMANENT + AUTH + tuple(SHAPES), kind
        assert times is None or kind != "refuse", "refused connections are not answered: no count"
        fault = self.fault = Fault(kind, time.monotonic() + seconds, times=times)
        if kind == "refuse":
            self._call(self._site.stop())

            async def reopen():
                await asyncio.sleep(seconds)
                await self._listen()

            asyncio.run_coroutine_threadsafe(reopen(), self._loop)
        return fault

    def clear(self) -> None:
        self.fault = None

    def _active(self) -> Fault | None:
        fault = self.fault
        if fault is None or time.monotonic() >= fault.until or fault.times == 0:
            return None
        return fault

    def attempted(self) -> None:
        """A client reports a request it is about to send here (whether a connection is accepted or not).

        Refused connections never reach the proxy: this is how "never hammer" is counted for them.
        """
        self.attempts += 1
        fault = self._active()
        if fault is not None:
            fault.attempts += 1

    @staticmethod
    def _concerns(kind: str, request: web.Request) -> bool:
        if kind in AUTH:
            return "Authorization" in request.headers
        if kind in SHAPES:
            return request.path.startswith("/api/") and not request.path.endswith("/version")
        return True

    async def _other_host(self, request: web.Request) -> web.Response:
        self.other.authorizations.append(request.headers.get("Authorization"))
        return web.json_response({"version": "3.3.2"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.total += 1
        self.paths[request.path] += 1
        self.user_agents[request.headers.get("User-Agent")] += 1
        fault = self._active()
        if fault is None or not self._concerns(fault.kind, request):
            return await self._pass(request)
        fault.requests += 1
        if fault.times is not None:
            fault.times -= 1
        kind = fault.kind
        if kind == "401":
            return web.json_response({"detail": "Invalid or expired token"}, status=401)
        if kind == "403":
            return web.json_response({"detail": "Forbidden"}, status=403)
        if kind in SHAPES:
            return web.json_response(SHAPES[kind])
        if kind in ("500", "502", "503"):
            return web.Response(
                status=int(kind), text=f"<html>{kind} upstream deploying</html>", content_type="text/html"
            )
        if kind == "429":
            return web.json_response({"detail": "rate limited"}, status=429, headers={"Retry-After": "2"})
        if kind == "reset":
            request.transport.abort()
            await asyncio.sleep(0.1)
            return web.Response(status=500)
        if kind == "hang":
            await asyncio.sleep(max(fault.until - time.monotonic(), 0) + 5)
            return await self._pass(request)
        if kind == "html":
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        if kind == "truncated":
            return web.Response(text='{"dag_run_id": "x", "state": ', content_type="application/json")
        if kind == "content_type":
            return web.Response(text="OK", content_type="text/plain")
        if kind == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.other.port}{request.path_qs}")
        return await self._pass(request)  # refuse: nothing reaches here while closed

    async def _pass(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() in ("content-type", "retry-after", "location", "content-encoding")
            }
            return web.Response(status=upstream.status, body=payload, headers=out)


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (its own CA: usable as the client's CA file); (cert, key)
    paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xdep chaos upstream")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "chaos-cert.pem", directory / "chaos-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
