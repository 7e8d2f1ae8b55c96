"""The failure contract (DESIGN.md, "Failure behaviour users rely on") against a chaos upstream.

Every row of the docs' failure table, for both sensors (dag_run, asset) in both modes (defer: the
trigger's ``run()``; poke: ``sensor.poke``), against a chaos proxy (tests/chaos.py) in front of a real
Airflow 3.3 upstream:

- transient faults (5xx, 429, reset, hang, refused connections) last FAULT_S seconds and are waited
  out: the sensor succeeds once they clear, with at most ``transient_bound(fault)`` requests during
  the fault (derived below from what one look costs);
- permanent faults (HTML, malformed JSON, wrong content type, redirect, valid JSON of the wrong
  shape, 401/403 with a static token, a TLS certificate the client does not trust, an unknown DAG,
  task or asset with ``check_existence=True``) fail fast: the error names what to check, after ONE
  look (counted) that sent no more requests than a clean look does;
- 401 with login + password: the credentials are exchanged once more (one more ``POST /auth/token``);
  a 401 that stays fails with "authentication failed for conn X at URL";
- an unknown DAG, task or asset with ``check_existence=False`` is still waiting after WAIT_LOOKS
  looks (counted, each one a request upstream), never an error.

Nothing is proven by the wall clock: looks are counted (the probes' steps), requests both where the
proxy receives them and where the client attempts them (refused connections never reach the proxy).
Each passing test records its row in .tmp/fault-matrix.json; ``scripts/fault_table.py`` renders
tests/fault_matrix.md from it (``--write``) and checks the committed table against it (``--check``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from tests.chaos import PERMANENT, SHAPES, TRANSIENT, ChaosProxy, self_signed_cert
from tests.helpers import close_shared_clients_then
from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.client.policy import RetryPolicy
from xdep_sensors.client.session import Transport
from xdep_sensors.core.probes import AssetProbe, DagRunProbe
from xdep_sensors.triggers import RemoteAssetTrigger, RemoteDagRunTrigger
from xdep_sensors.triggers.state import CursorStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = Path(os.environ.get("XDEP_FAULT_RESULTS", ROOT / ".tmp" / "fault-matrix.json"))

FAULT_S = 6.0  # how long a transient fault lasts
POKE_S = 1.0  # the sensors' poke_interval
TIMEOUT_S = 2  # the connection's per-request timeout (extra timeout)
WAIT_LOOKS = 3  # looks an unknown DAG/task/asset with check_existence=False must stay waiting for

# The request bound during a transient fault, from what one look costs. A look stops at its first
# request that fails every attempt (``RetryPolicy.attempts``); between attempts the client waits at
# least half the backoff ceiling (jitter is uniform(ceiling/2, ceiling)), and the next look starts at
# least POKE_S after a failed one (poke: the poke interval; defer: ``poll_delay`` is never shorter).
# So a failed look plus the pause after it lasts at least POKE_S + MIN_RETRY_WAIT, at most
# LOOKS_IN_FAULT looks start during the fault, each with at most ATTEMPTS requests. A connection
# reset makes aiohttp re-send an idempotent request once on a new connection when a kept-alive one
# drops (RESEND): the proxy may see two requests per attempt there.
POLICY = RetryPolicy()
ATTEMPTS = POLICY.attempts
MIN_RETRY_WAIT = sum(min(POLICY.max_delay, POLICY.base_delay * 2 ** (a - 1)) / 2 for a in range(1, ATTEMPTS))
LOOKS_IN_FAULT = 1 + int(FAULT_S // (POKE_S + MIN_RETRY_WAIT))
RESEND = {"reset": 2}


def transient_bound(fault: str) -> int:
    return LOOKS_IN_FAULT * ATTEMPTS * RESEND.get(fault, 1)


ACTIONABLE = {  # what the error must say, for each permanent fault
    "html": "HTML page instead of the Airflow API",
    "truncated": "malformed JSON",
    "content_type": "content type 'text/plain",
    "redirect": "set the connection's host to the final URL",
    "shape_object": "unexpected answer shape from GET /api/v2/",
    "shape_list": "unexpected answer shape from GET /api/v2/",
}
SHAPE_VERSION = "upstream API v2 3.3.2"  # a shape error names the upstream API and version too
UNKNOWN = {  # (sensor, what is unknown): the wrong argument, and the close match the error must name
    ("dag_run", "dag"): ({"external_dag_id": "xdep_test_produce"}, "close matches: xdep_test_producer"),
    ("dag_run", "task"): ({"task_ids": ["loads"]}, "close matches: load"),
    ("asset", "asset"): ({"asset_uri": "file://include/bear"}, "close matches: file://include/bears"),
}
AUTH_FAULTS = ("token_invalid", "token_401", "token_403", "login_401_once", "login_401_always")
TLS_FAULTS = ("tls_untrusted", "tls_verify")
KINDS, MODES = ("dag_run", "asset"), ("defer", "poke")
RESULTS: list[dict] = []


def _fault_names() -> list[str]:
    """Every fault row, in the table's order."""
    unknown = [
        f"unknown_{what}:{check}" for what in ("dag", "task", "asset") for check in ("check", "nocheck")
    ]
    return [*TRANSIENT, *PERMANENT, *SHAPES, *AUTH_FAULTS, *unknown, *TLS_FAULTS]


def _expected_rows() -> list[list[str]]:
    rows = []
    for kind in KINDS:
        for mode in MODES:
            for fault in _fault_names():
                what = fault.split(":")[0].removeprefix("unknown_") if fault.startswith("unknown_") else None
                if what is None or (kind, what) in UNKNOWN:
                    rows.append([kind, mode, fault])
    return rows


@pytest.fixture(scope="module")
def chaos(_upstreams, tmp_path_factory):
    upstream = _upstreams["v2"]
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    assert upstream.wait_run(run_id) == "success"
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    asset_run = upstream.trigger("xdep_test_assets", conf={"extra": {"chaos": True}})
    assert upstream.wait_run(asset_run, "xdep_test_assets") == "success"
    proxy = ChaosProxy(upstream.server.base_url).start()
    cert, key = self_signed_cert(tmp_path_factory.mktemp("chaos-tls"))
    tls_url = proxy.serve_tls(cert, key)
    extra = {"timeout": TIMEOUT_S}
    conns = {
        "chaos": {"host": proxy.url, "login": "viewer", "password": "viewer", "extra": extra},
        # a static bearer token (no login): one the upstream does not know, and a valid one
        "chaos_bad_token": {"host": proxy.url, "password": "not-a-valid-token", "extra": extra},
        "chaos_token": {
            "host": proxy.url,
            "password": upstream.server.token("viewer", "viewer"),
            "extra": extra,
        },
        # TLS with a self-signed certificate: not trusted, and trusted through the extra verify
        "chaos_tls": {"host": tls_url, "login": "viewer", "password": "viewer", "extra": extra},
        "chaos_tls_verify": {
            "host": tls_url,
            "login": "viewer",
            "password": "viewer",
            "extra": {**extra, "verify": str(cert)},
        },
    }
    env = {
        f"AIRFLOW_CONN_{c.upper()}": json.dumps({"conn_type": "remote_airflow", **f})
        for c, f in conns.items()
    }
    with mock.patch.dict("os.environ", env), _counting(proxy) as looks:
        yield {"proxy": proxy, "run_id": run_id, "since": since.isoformat(), "looks": looks, "clean": {}}
    proxy.stop()
    _write_results()


@contextlib.contextmanager
def _counting(proxy: ChaosProxy):
    """Count the probes' looks (their steps, in both modes) and the client's request attempts to the proxy."""
    looks = {"n": 0}
    send_once = Transport._send_once

    async def attempted(self, request, **kwargs):
        if self.config.base_url in (proxy.url, proxy.tls_url):
            proxy.attempted()
        return await send_once(self, request, **kwargs)

    def counted(step):
        async def look(self, source):
            looks["n"] += 1
            return await step(self, source)

        return look

    with (
        mock.patch.object(Transport, "_send_once", attempted),
        mock.patch.object(DagRunProbe, "step", counted(DagRunProbe.step)),
        mock.patch.object(AssetProbe, "step", counted(AssetProbe.step)),
    ):
        yield looks


class Counts:
    """What the proxy, the client and the probes counted since this object was made."""

    def __init__(self, chaos: dict):
        self.proxy: ChaosProxy = chaos["proxy"]
        self.looks_box = chaos["looks"]
        self._start = self._now()

    def _now(self) -> tuple[int, int, int, int]:
        return (self.proxy.total, self.proxy.attempts, self.proxy.paths["/auth/token"], self.looks_box["n"])

    def _since(self, i: int) -> int:
        return self._now()[i] - self._start[i]

    requests = property(lambda self: self._since(0))  # received by the proxy
    attempts = property(lambda self: self._since(1))  # attempted by the client (refused ones included)
    tokens = property(lambda self: self._since(2))  # credential exchanges (POST /auth/token)
    looks = property(lambda self: self._since(3))


def _sensor(kind: str, chaos: dict, conn: str = "chaos", **args):
    common = {
        "task_id": "wait",
        "remote_conn_id": conn,
        "poke_interval": POKE_S,
        "timeout": 120,
        "deferrable": False,
    }
    if kind == "dag_run":
        return RemoteDagRunSensor(
            **{"external_dag_id": "xdep_test_producer", "run_id": chaos["run_id"], **args}, **common
        )
    return RemoteAssetSensor(
        **{"asset_uri": "file://include/bears", "since": chaos["since"], **args}, **common
    )


def _trigger(kind: str, chaos: dict, conn: str = "chaos", **args):
    common = {"remote_conn_id": conn, "poke_interval": POKE_S, "timeout_at": time.time() + 120}
    if kind == "dag_run":
        return RemoteDagRunTrigger(
            **{"external_dag_id": "xdep_test_producer", "run_id": chaos["run_id"], **args}, **common
        )
    uri = args.pop("asset_uri", "file://include/bears")
    return RemoteAssetTrigger(assets=[{"uri": uri, "name": None}], since=chaos["since"], **args, **common)


CONTEXT = {"ti": mock.MagicMock(dag_id="chaos_dag"), "run_id": "r", "logical_date": None, "dag_run": None}


def _poke_until_done(sensor) -> tuple[str, str]:
    deadline = time.monotonic() + 90  # a safety net: the test fails on it, it proves nothing
    with mock.patch.object(CursorStore, "commit"):  # no task runtime here to write Variables
        while time.monotonic() < deadline:
            try:
                done = sensor.poke(CONTEXT)
            except AirflowException as err:
                return "error", str(err)
            if done:
                return "success", ""
            time.sleep(POKE_S)  # the poke interval the scheduler would keep
    return "still waiting", ""


def _wait(kind: str, mode: str, chaos: dict, conn: str = "chaos", **args) -> tuple[str, str]:
    """Wait as the sensor would, until it ends: (status, message)."""
    if mode == "defer":
        event = close_shared_clients_then(
            asyncio.wait_for(_trigger(kind, chaos, conn, **args).run().__anext__(), 90)
        )
        return event.payload["status"], event.payload.get("message", "")
    return _poke_until_done(_sensor(kind, chaos, conn, **args))


def _looks_while_waiting(kind: str, mode: str, chaos: dict, n: int, **args) -> tuple[str, str]:
    """Let the sensor look ``n`` times (counted); its state then: ("waiting", "") or how it ended."""
    if mode == "poke":
        sensor = _sensor(kind, chaos, **args)
        for _ in range(n):
            try:
                if sensor.poke(CONTEXT):
                    return "success", ""
            except AirflowException as err:
                return "error", str(err)
        return "waiting", ""
    looks = chaos["looks"]

    async def run() -> tuple[str, str]:
        start = looks["n"]
        task = asyncio.ensure_future(_trigger(kind, chaos, **args).run().__anext__())
        deadline = time.monotonic() + 60  # a safety net: the test fails on it, it proves nothing
        while looks["n"] - start < n and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if task.done():
            return task.result().payload["status"], task.result().payload.get("message", "")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return "waiting", ""

    return close_shared_clients_then(run())


def _clean_look(kind: str, mode: str, chaos: dict) -> Counts:
    """What a wait that succeeds at its first look costs without any fault (measured once per sensor
    and mode)."""
    key = (kind, mode)
    if key not in chaos["clean"]:
        counts = Counts(chaos)
        status, message = _wait(kind, mode, chaos)
        assert status == "success", message
        assert counts.looks == 1, counts.looks
        chaos["clean"][key] = counts
        counts.frozen = (counts.attempts, counts.tokens)
    return chaos["clean"][key]


def _assert_one_look(counts: Counts, clean: Counts, extra: int = 0) -> None:
    """Failed fast: one look, which attempted no more requests than a clean look (+ ``extra``): no retry."""
    assert counts.looks == 1, f"{counts.looks} looks"
    assert counts.attempts <= clean.frozen[0] + extra, (counts.attempts, clean.frozen[0], extra)


def _record(kind: str, mode: str, fault: str, outcome: str, bound: str, says: str = "", **observed) -> None:
    RESULTS.append(
        {
            "sensor": kind,
            "mode": mode,
            "fault": fault,
            "outcome": outcome,
            "bound": bound,
            "says": says,
            "observed": observed,
        }
    )


def _write_results() -> None:
    """What this run proved (the passing rows), for scripts/fault_table.py."""
    if not RESULTS:
        return
    meta = {
        "fault_s": FAULT_S,
        "poke_s": POKE_S,
        "timeout_s": TIMEOUT_S,
        "attempts": ATTEMPTS,
        "min_retry_wait": MIN_RETRY_WAIT,
        "looks_in_fault": LOOKS_IN_FAULT,
        "wait_looks": WAIT_LOOKS,
        "upstream": "Airflow 3.3.2 (API v2)",
        "expected": _expected_rows(),
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps({"meta": meta, "rows": RESULTS}, indent=1, sort_keys=True) + "\n")


# --- transient and permanent faults on every request -------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT + PERMANENT + tuple(SHAPES))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_fault(chaos, kind, mode, fault):
    proxy: ChaosProxy = chaos["proxy"]
    clean = _clean_look(kind, mode, chaos)
    proxy.other.authorizations.clear()
    counts = Counts(chaos)
    injected = proxy.inject(fault, FAULT_S)
    try:
        status, message = _wait(kind, mode, chaos)
    finally:
        proxy.clear()
    observed = {
        "requests_during_fault": injected.requests,
        "attempts_during_fault": injected.attempts,
        "looks": counts.looks,
    }
    if fault in TRANSIENT:
        assert status == "success", message
        bound = transient_bound(fault)
        # never hammers: counted where the proxy receives requests and where the client attempts them
        # (a refused connection reaches no proxy); and it did retry (at least 2 attempts) rather than give up
        assert injected.requests <= bound, (injected.requests, bound)
        assert 2 <= injected.attempts <= bound, (injected.attempts, bound)
        if fault == "refuse":
            assert injected.requests == 0
        _record(
            kind, mode, fault, "waited out, then success", f"≤ {bound} requests during the fault", **observed
        )
    else:
        assert status == "error" and ACTIONABLE[fault] in message, message
        if fault in SHAPES:
            assert SHAPE_VERSION in message, message
        _assert_one_look(counts, clean)
        says = ACTIONABLE[fault] + (f"; {SHAPE_VERSION}" if fault in SHAPES else "")
        _record(kind, mode, fault, "fails fast", "1 look, no retry", says, **observed)
    assert proxy.other.authorizations == []  # never followed a redirect to another host


# --- credentials -------------------------------------------------------------------------------------

AUTH_SAYS = {
    # Airflow 3 answers 403 (not 401) to a bearer token it cannot verify: read as an authentication failure
    "token_invalid": "authentication failed: Invalid JWT token [HTTP 403",
    "token_401": "check the connection's token, or login and password",
    "token_403": "(see the Permissions guide); or check its credentials",
    "login_401_always": "authentication failed for conn 'chaos' at {url}",
}


@pytest.mark.parametrize("fault", AUTH_FAULTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_credentials(chaos, kind, mode, fault):
    """401/403 with a static token fail fast (an invalid token: the real upstream's answer; 401 and 403 to a
    valid one: the proxy's); 401 with login + password: the credentials are exchanged once more, then fail."""
    proxy: ChaosProxy = chaos["proxy"]
    clean = _clean_look(kind, mode, chaos)
    counts = Counts(chaos)
    conn = {"token_invalid": "chaos_bad_token", "token_401": "chaos_token", "token_403": "chaos_token"}.get(
        fault, "chaos"
    )
    injected = None
    if fault in ("token_401", "token_403"):  # the upstream accepts the token; the proxy answers in its place
        injected = proxy.inject(fault.removeprefix("token_"), 60)
    elif fault.startswith("login_401"):
        # on data requests only (they carry the JWT), after the exchange; once, or every time
        injected = proxy.inject("401", 60, times=1 if fault == "login_401_once" else None)
    try:
        status, message = _wait(kind, mode, chaos, conn)
    finally:
        proxy.clear()
    observed = {
        "requests": counts.requests,
        "tokens": counts.tokens,
        "looks": counts.looks,
        "faulted": injected.requests if injected else None,
    }
    if fault == "login_401_once":
        assert status == "success", message
        assert counts.tokens == clean.frozen[1] + 1, (counts.tokens, clean.frozen[1])  # exactly one more
        assert counts.looks == 1 and injected.requests == 1
        assert counts.attempts <= clean.frozen[0] + 2  # the exchange and the request, once more
        _record(
            kind,
            mode,
            fault,
            "success after exchanging the credentials once more",
            "1 look, 1 more POST /auth/token",
            **observed,
        )
        return
    says = AUTH_SAYS[fault]
    assert status == "error" and says.format(url=proxy.url) in message, message
    if fault == "login_401_always":
        assert counts.tokens == clean.frozen[1] + 1, (counts.tokens, clean.frozen[1])
        _assert_one_look(counts, clean, extra=2)
        _record(
            kind,
            mode,
            fault,
            "fails fast after exchanging the credentials once more",
            "1 look, 1 more POST /auth/token",
            says.format(url="<URL>"),
            **observed,
        )
        return
    assert counts.tokens == 0  # a static token is never exchanged
    if fault == "token_invalid":
        assert "check the connection's token: the upstream cannot verify it" in message, message
        says += "]. check the connection's token"
    _assert_one_look(counts, clean)
    _record(kind, mode, fault, "fails fast", "1 look, no retry", says, **observed)


# --- an unknown DAG, task or asset -------------------------------------------------------------------


@pytest.mark.parametrize("check", ["check", "nocheck"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind, what", list(UNKNOWN))
def test_unknown(chaos, kind, what, mode, check):
    """check_existence=True: fails fast naming the close match; False: still waiting after
    WAIT_LOOKS looks."""
    clean = _clean_look(kind, mode, chaos)
    args, close = UNKNOWN[(kind, what)]
    fault = f"unknown_{what}:{check}"
    counts = Counts(chaos)
    if check == "check":
        status, message = _wait(kind, mode, chaos, **args)
        assert status == "error" and " not exist " in message and close in message, message
        _assert_one_look(counts, clean, extra=1)  # the listing the close matches come from
        _record(
            kind,
            mode,
            fault,
            "fails fast",
            "1 look, no retry",
            close,
            looks=counts.looks,
            requests=counts.requests,
        )
        return
    status, message = _looks_while_waiting(kind, mode, chaos, WAIT_LOOKS, check_existence=False, **args)
    assert status == "waiting", (status, message)
    assert counts.looks >= WAIT_LOOKS, counts.looks
    assert counts.requests >= counts.looks, (counts.requests, counts.looks)  # each look asked the upstream
    _record(
        kind,
        mode,
        fault,
        f"still waiting after {WAIT_LOOKS} looks",
        "requests upstream on every look",
        looks=counts.looks,
        requests=counts.requests,
    )


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", TLS_FAULTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_tls(chaos, kind, mode, fault):
    """A self-signed certificate: fails fast suggesting the extra verify; trusted through it: success."""
    proxy: ChaosProxy = chaos["proxy"]
    clean = _clean_look(kind, mode, chaos)
    counts = Counts(chaos)
    status, message = _wait(
        kind, mode, chaos, "chaos_tls" if fault == "tls_untrusted" else "chaos_tls_verify"
    )
    observed = {"attempts": counts.attempts, "requests": counts.requests, "looks": counts.looks}
    if fault == "tls_verify":
        assert status == "success", message
        assert counts.requests > 0 and counts.looks == 1
        _record(kind, mode, fault, "success", "1 look", **observed)
        return
    says = "set extra verify to a CA bundle path"
    assert status == "error" and "TLS certificate verification failed" in message and says in message, message
    assert counts.requests == 0  # nothing got past the handshake
    _assert_one_look(counts, clean)
    assert proxy.tls_url is not None
    _record(kind, mode, fault, "fails fast", "1 look, no retry", says, **observed)
