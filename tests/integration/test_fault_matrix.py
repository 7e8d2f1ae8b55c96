"""The failure contract (DESIGN.md, "Failure behaviour users rely on") against a chaos upstream.

Each fault sits between the sensor and a real Airflow 3.3 upstream for FAULT_S seconds. Transient
faults must be waited out (the sensor completes once the fault clears); permanent ones must fail
fast with a message saying what to fix. Requests made during a fault must stay bounded: at most one
look per poke interval, each with the client's retry budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

from airflow.providers.common.compat.sdk import AirflowException
from tests.chaos import PERMANENT, TRANSIENT, ChaosProxy
from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.client.policy import RetryPolicy
from xdep_sensors.durable import CursorStore
from xdep_sensors.triggers import RemoteAssetTrigger, RemoteDagRunTrigger

pytestmark = pytest.mark.integration

FAULT_S = 6.0
POKE_S = 1.0
ACTIONABLE = {
    "html": "HTML page instead of the Airflow API",
    "truncated": "malformed JSON",
    "content_type": "content type 'text/plain",
    "redirect": "set the connection's host to the final URL",
}
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def chaos(_upstreams):
    upstream = _upstreams["v2"]
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    assert upstream.wait_run(run_id) == "success"
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    asset_run = upstream.trigger("xdep_test_assets", conf={"extra": {"chaos": True}})
    assert upstream.wait_run(asset_run, "xdep_test_assets") == "success"
    proxy = ChaosProxy(upstream.server.base_url).start()
    conn = {"conn_type": "remote_airflow", "host": proxy.url, "login": "viewer", "password": "viewer",
            "extra": {"timeout": 2}}
    with mock.patch.dict("os.environ", {"AIRFLOW_CONN_CHAOS": json.dumps(conn)}):
        yield {"proxy": proxy, "run_id": run_id, "since": since.isoformat()}
    proxy.stop()
    _write_table()


def _sensor(kind: str, chaos: dict, deferrable: bool):
    common = {"task_id": "wait", "remote_conn_id": "chaos", "poke_interval": POKE_S, "timeout": 120,
              "deferrable": deferrable}
    if kind == "dag_run":
        return RemoteDagRunSensor(external_dag_id="xdep_test_producer", run_id=chaos["run_id"], **common)
    return RemoteAssetSensor(asset_uri="file://include/bears", since=chaos["since"], **common)


def _trigger(kind: str, chaos: dict):
    common = {"remote_conn_id": "chaos", "poke_interval": POKE_S, "timeout_at": time.time() + 120}
    if kind == "dag_run":
        return RemoteDagRunTrigger(external_dag_id="xdep_test_producer", run_id=chaos["run_id"], **common)
    return RemoteAssetTrigger(assets=[{"uri": "file://include/bears", "name": None}], since=chaos["since"], **common)


def _poke_until_done(sensor) -> tuple[str, str]:
    context = {"ti": mock.MagicMock(dag_id="chaos_dag"), "run_id": "r", "logical_date": None, "dag_run": None}
    deadline = time.monotonic() + 90
    with mock.patch.object(CursorStore, "commit"):  # no task runtime here to write Variables
        while time.monotonic() < deadline:
            try:
                done = sensor.poke(context)
            except AirflowException as err:
                return "error", str(err)
            if done:
                return "success", ""
            time.sleep(POKE_S)
    return "still waiting", ""


def _bound(elapsed: float) -> int:
    # one look per poke interval (plus the first), each with the client's retry budget, plus the
    # version probe and token exchange a new client makes
    looks = int(min(elapsed, FAULT_S) / POKE_S) + 2
    return looks * (RetryPolicy().attempts + 3)


@pytest.mark.parametrize("fault", TRANSIENT + PERMANENT)
@pytest.mark.parametrize("mode", ["defer", "poke"])
@pytest.mark.parametrize("kind", ["dag_run", "asset"])
def test_fault(chaos, kind, mode, fault):
    proxy: ChaosProxy = chaos["proxy"]
    proxy.other.authorizations.clear()
    injected = proxy.inject(fault, FAULT_S)
    started = time.monotonic()
    try:
        if mode == "defer":
            event = asyncio.run(asyncio.wait_for(_trigger(kind, chaos).run().__anext__(), 90))
            status, message = event.payload["status"], event.payload.get("message", "")
        else:
            status, message = _poke_until_done(_sensor(kind, chaos, deferrable=False))
    finally:
        proxy.clear()
    elapsed = time.monotonic() - started
    RESULTS.append({"sensor": kind, "mode": mode, "fault": fault, "outcome": status,
                    "seconds": round(elapsed, 1), "requests during fault": injected.requests})
    if fault in TRANSIENT:
        assert status == "success", message
        assert injected.requests <= _bound(elapsed), (injected.requests, _bound(elapsed))
    else:
        assert status == "error" and ACTIONABLE[fault] in message, message
        assert elapsed < FAULT_S, elapsed  # fails fast, long before the fault would clear
    assert proxy.other.authorizations == []  # never followed a redirect to another host


def _write_table() -> None:
    if not RESULTS:
        return
    from tests.conftest import ROOT

    lines = ["# Fault matrix (generated by tests/integration/test_fault_matrix.py)", "",
             f"Each fault lasts {FAULT_S:.0f} s between the sensor and a real Airflow 3.3 upstream; "
             f"poke_interval {POKE_S:.0f} s, per-request timeout 2 s.", "",
             "| sensor | mode | fault | outcome | seconds | requests during fault |", "|---|---|---|---|---|---|"]
    for r in RESULTS:
        lines.append(f"| {r['sensor']} | {r['mode']} | {r['fault']} | {r['outcome']} | {r['seconds']} | "
                     f"{r['requests during fault']} |")
    out = ROOT / "tests" / "fault_matrix.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
