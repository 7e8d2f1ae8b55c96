"""xdep_sensors.durable.TriggerState in the real triggerer of every Airflow 3 minor, across a restart.

The test-only ``CounterTrigger`` (tests/versions/counter_trigger.py) reads a counter, adds one,
writes it and fires it, each time a triggerer starts it. Fired 1 and then 2 after a triggerer
restart proves the state was read and written durably; a store that loses writes fires 1 twice.
Below 3.3 the state is an Airflow Variable; from 3.3 it is the asset state store. 3.0.6 and 3.3.2
are checked in the full downstream deployments of test_versions_downstream.py; here 3.1.8 and 3.2.2
run with an API server, a DAG processor and a triggerer only.
"""

from __future__ import annotations

import json
import time

import pytest

from devtools.airflow_local import LocalAirflow
from tests.integration.conftest import ROOT, airflow_bin
from xdep_sensors.durable import variable_key

pytestmark = pytest.mark.integration

COUNTER_URI = "xdep://durable/counter"
COUNTER_KEY = "tests:durable:counter"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)
    return value


def local_payloads(server: LocalAirflow, uri: str) -> list[dict]:
    """Payloads of the deployment's own asset events of uri (fired by its watcher triggers)."""
    assets = server.api("GET", "/api/v2/assets?limit=100")["assets"]
    asset_id = next((a["id"] for a in assets if a["uri"] == uri), None)
    if asset_id is None:
        return []
    for _ in range(30):
        try:
            events = server.api("GET", f"/api/v2/assets/events?asset_id={asset_id}&limit=100")["asset_events"]
            return [e["extra"]["payload"] for e in sorted(events, key=lambda e: e["id"])]
        except RuntimeError as err:  # 3.3.2 answers 500 while an event's created run has no start_date yet
            if "HTTP 500" not in str(err):
                raise
            time.sleep(1)
    raise AssertionError("asset events stayed unreadable (HTTP 500)")


def check_counter_across_restart(server: LocalAirflow, version: str) -> str:
    """Counter fires 1, the triggerer restarts, it fires 2: return the backend the trigger used."""
    first = wait_for(lambda: local_payloads(server, COUNTER_URI), 180, "the counter's first event")
    assert [p["n"] for p in first] == [1], first
    server.stop_component("triggerer")
    server.start_component("triggerer")
    def two_events():
        payloads = local_payloads(server, COUNTER_URI)
        return payloads if len(payloads) >= 2 else None

    both = wait_for(two_events, 180, "the counter's event after the triggerer restart")
    assert [p["n"] for p in both] == [1, 2], both
    backend = both[-1]["backend"]
    assert backend == ("asset_state_store" if version >= "3.3" else "variable")
    if backend == "variable":  # the value is where durable.py says, readable through the API
        var = server.api("GET", f"/api/v2/variables/{variable_key(COUNTER_KEY)}")
        assert json.loads(var["value"]) == {"n": 2}
    return backend


@pytest.mark.parametrize("version", ["3.1.8", "3.2.2"])
def test_trigger_state_survives_a_triggerer_restart(version, matrix_record, tmp_path_factory):
    server = LocalAirflow(tmp_path_factory.mktemp(f"durable-{version}"), airflow_bin(version), major=3,
                          dags_folder=ROOT / "tests" / "versions" / "durable_dags",
                          components=("api-server", "dag-processor", "triggerer"), name=f"durable-{version}",
                          extra_env={"PYTHONPATH": str(ROOT)})
    with server:
        server.wait_for_dag("xdep_durable_counter", timeout=180)
        backend = check_counter_across_restart(server, version)
    matrix_record(version, "downstream", f"durable_state:{backend}")
