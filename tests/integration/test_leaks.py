"""Credentials never leak: run every sensor path with recognisable secrets, then scan what Airflow keeps.

Scanned: everything printed (task logs and trigger logs of ``dag.test()``), the downstream's whole
AIRFLOW_HOME (its metadata DB holds XCom, serialized trigger kwargs, rendered template fields and
task-instance notes; plus log files), exception text and ``repr``s.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.chaos import ChaosProxy
from tests.leakscan import scan_files, secret_forms
from tests.integration.test_dag_run_sensor_live import run_downstream
from xdep_sensors import RemoteAirflowHook
from xdep_sensors.errors import XdepError

pytestmark = pytest.mark.integration

PASSWORD = "Leak-Canary-Passw0rd-5b1e"
USER = "leakcheck"


@pytest.fixture(scope="module")
def secrets(_upstreams):
    """A v1 user with a recognisable password, and the v2 viewer's token used as a static token."""
    v1 = _upstreams["v1"].server
    v1.api("POST", "/api/v1/users", {"username": USER, "password": PASSWORD, "first_name": "l", "last_name": "c",
                                      "email": "leak@example.com", "roles": [{"name": "Viewer"}]}, expect=(200, 409))
    token = _upstreams["v2"].server.token("viewer", "viewer")
    os.environ["AIRFLOW_CONN_LEAK_V1"] = json.dumps({"conn_type": "remote_airflow", "host": v1.base_url,
                                                     "login": USER, "password": PASSWORD})
    os.environ["AIRFLOW_CONN_LEAK_V2"] = json.dumps({"conn_type": "remote_airflow",
                                                     "host": _upstreams["v2"].server.base_url, "password": token})
    os.environ["AIRFLOW_CONN_LEAK_BAD"] = json.dumps({"conn_type": "remote_airflow", "host": v1.base_url,
                                                      "login": USER, "password": PASSWORD + "-wrong"})
    return [*secret_forms(USER, PASSWORD), *secret_forms(USER, PASSWORD + "-wrong"), token.encode()]


def test_no_secret_anywhere_after_every_path(_upstreams, downstream_db, out_file, secrets, capfd):
    runs, ok_runs = [], {}
    for api, conn in (("v1", "leak_v1"), ("v2", "leak_v2")):
        upstream = _upstreams[api]
        ok_run = ok_runs[api] = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
        failed_run = upstream.trigger(conf={"fail": True}, logical_date=datetime.now(timezone.utc))
        for dag_id, run_id in (("xdep_ds_by_id_defer", ok_run), ("xdep_ds_by_id_poke", ok_run),
                               ("xdep_ds_tasks_defer", ok_run), ("xdep_ds_by_id_defer", failed_run)):
            runs.append(run_downstream(dag_id, {"conn": conn, "run_id": run_id, "out": str(out_file)}))
        runs.append(run_downstream("xdep_ds_asset_missing_defer", {"conn": conn, "out": str(out_file)}))
    runs.append(run_downstream("xdep_ds_by_id_defer", {"conn": "leak_bad", "run_id": "x", "out": str(out_file)}))
    runs.append(run_downstream("xdep_ds_by_id_poke", {"conn": "leak_bad", "run_id": "x", "out": str(out_file)}))
    # a fault path: the upstream answers 503 for a while (retries, warnings), then the wait succeeds
    proxy = ChaosProxy(_upstreams["v1"].server.base_url).start()
    try:
        os.environ["AIRFLOW_CONN_LEAK_CHAOS"] = json.dumps({"conn_type": "remote_airflow", "host": proxy.url,
                                                            "login": USER, "password": PASSWORD})
        proxy.inject("503", 4)
        runs.append(run_downstream("xdep_ds_by_id_defer", {"conn": "leak_chaos", "run_id": ok_runs["v1"],
                                                           "out": str(out_file)}))
    finally:
        proxy.stop()
    assert runs == ["success", "success", "success", "failed", "failed"] * 2 + ["failed", "failed", "success"]

    printed = "".join(capfd.readouterr()).encode()
    assert [s[:8] for s in secrets if s in printed] == []
    assert scan_files(Path(os.environ["AIRFLOW_HOME"]), secrets) == []

    with pytest.raises(XdepError) as info:
        RemoteAirflowHook("leak_bad").run(lambda c: c.get_dag("xdep_test_producer"))
    text = (str(info.value) + repr(info.value) + repr(RemoteAirflowHook("leak_v1").get_config())).encode()
    assert [s[:8] for s in secrets if s in text] == []
