"""Credentials never leak: run every sensor path with recognisable secrets, then scan what Airflow keeps.

Credential paths: a static token (API v2), a username and password exchanged for a JWT (API v2), basic
auth (API v1), and a wrong password on each of the last two. Sensor paths, deferrable and poke: a
DAG-run wait that succeeds, one whose upstream run failed, one narrowed to tasks; an asset wait that
succeeds, and one on an asset the upstream lacks; a wait through 503s.

Scanned, for the passwords (as sent: plain and basic-auth forms), the token and any JWT the upstream
issued for the password's user: everything printed (task logs and trigger logs of ``dag.test()``), the
downstream's whole AIRFLOW_HOME (its SQLite metadata DB holds XCom, serialized trigger kwargs,
rendered template fields and task-instance notes; plus log files), exception text and ``repr``s. (The
real downstream deployments of the version matrix are scanned the same way on PostgreSQL, with trigger
kwargs and Variables decrypted: tests/integration/test_versions_downstream.py.)
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from devtools.airflow_local import CANARY_PASSWORD, CANARY_USER
from tests.chaos import ChaosProxy
from tests.integration.test_asset_sensor_live import clear_cursor, produce_later
from tests.integration.test_dag_run_sensor_live import run_downstream
from tests.leakscan import hits, scan_files, secret_forms
from xdep_sensors import RemoteAirflowHook
from xdep_sensors.errors import XdepError

pytestmark = pytest.mark.integration

PASSWORD = "Leak-Canary-Passw0rd-5b1e"
USER = "leakcheck"


@pytest.fixture(scope="module")
def secrets(_upstreams):
    """A v1 user with a recognisable password, and the v2 viewer's token used as a static token."""
    v1 = _upstreams["v1"].server
    v1.api(
        "POST",
        "/api/v1/users",
        {
            "username": USER,
            "password": PASSWORD,
            "first_name": "l",
            "last_name": "c",
            "email": "leak@example.com",
            "roles": [{"name": "Viewer"}],
        },
        expect=(200, 409),
    )
    token = _upstreams["v2"].server.token("viewer", "viewer")
    os.environ["AIRFLOW_CONN_LEAK_V1"] = json.dumps(
        {"conn_type": "remote_airflow", "host": v1.base_url, "login": USER, "password": PASSWORD}
    )
    os.environ["AIRFLOW_CONN_LEAK_V2"] = json.dumps(
        {"conn_type": "remote_airflow", "host": _upstreams["v2"].server.base_url, "password": token}
    )
    os.environ["AIRFLOW_CONN_LEAK_BAD"] = json.dumps(
        {"conn_type": "remote_airflow", "host": v1.base_url, "login": USER, "password": PASSWORD + "-wrong"}
    )
    v2 = _upstreams["v2"].server.base_url  # the canary user: its password is exchanged for a JWT
    os.environ["AIRFLOW_CONN_LEAK_V2_PW"] = json.dumps(
        {"conn_type": "remote_airflow", "host": v2, "login": CANARY_USER, "password": CANARY_PASSWORD}
    )
    os.environ["AIRFLOW_CONN_LEAK_V2_BAD"] = json.dumps(
        {
            "conn_type": "remote_airflow",
            "host": v2,
            "login": CANARY_USER,
            "password": CANARY_PASSWORD + "-wrong",
        }
    )
    return [
        *secret_forms(USER, PASSWORD),
        *secret_forms(USER, PASSWORD + "-wrong"),
        token.encode(),
        *secret_forms(CANARY_USER, CANARY_PASSWORD),
        *secret_forms(CANARY_USER, CANARY_PASSWORD + "-wrong"),
    ]


def _asset_wait_succeeds(upstream, conn: str, variant: str, out_file) -> str:
    dag_id = f"xdep_ds_asset_uri_{variant}"
    clear_cursor(dag_id)
    box = produce_later(upstream, extra={"leak": conn})
    state = run_downstream(dag_id, {"conn": conn, "out": str(out_file)})
    box["timer"].join()
    return state


def test_no_secret_anywhere_after_every_path(_upstreams, downstream_db, out_file, secrets, capfd):
    runs, ok_runs = [], {}
    for api, conn in (("v1", "leak_v1"), ("v2", "leak_v2"), ("v2", "leak_v2_pw")):
        upstream = _upstreams[api]
        ok_run = ok_runs[api] = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
        failed_run = upstream.trigger(conf={"fail": True}, logical_date=datetime.now(timezone.utc))
        for dag_id, run_id in (
            ("xdep_ds_by_id_defer", ok_run),
            ("xdep_ds_by_id_poke", ok_run),
            ("xdep_ds_tasks_defer", ok_run),
            ("xdep_ds_by_id_defer", failed_run),
            ("xdep_ds_by_id_poke", failed_run),
        ):
            runs.append(run_downstream(dag_id, {"conn": conn, "run_id": run_id, "out": str(out_file)}))
        for variant in ("defer", "poke"):
            runs.append(_asset_wait_succeeds(upstream, conn, variant, out_file))
            runs.append(
                run_downstream(f"xdep_ds_asset_missing_{variant}", {"conn": conn, "out": str(out_file)})
            )
    for conn in ("leak_bad", "leak_v2_bad"):
        for variant in ("defer", "poke"):
            runs.append(
                run_downstream(
                    f"xdep_ds_by_id_{variant}", {"conn": conn, "run_id": "x", "out": str(out_file)}
                )
            )
    # a fault path: the upstream answers 503 for a while (retries, warnings), then the wait succeeds
    proxy = ChaosProxy(_upstreams["v1"].server.base_url).start()
    try:
        os.environ["AIRFLOW_CONN_LEAK_CHAOS"] = json.dumps(
            {"conn_type": "remote_airflow", "host": proxy.url, "login": USER, "password": PASSWORD}
        )
        proxy.inject("503", 4)
        runs.append(
            run_downstream(
                "xdep_ds_by_id_defer", {"conn": "leak_chaos", "run_id": ok_runs["v1"], "out": str(out_file)}
            )
        )
    finally:
        proxy.stop()
    path = ["success", "success", "success", "failed", "failed", "success", "failed", "success", "failed"]
    assert runs == path * 3 + ["failed"] * 4 + ["success"]

    printed = "".join(capfd.readouterr()).encode()
    assert hits("printed", printed, secrets, CANARY_USER) == []
    assert scan_files(Path(os.environ["AIRFLOW_HOME"]), secrets, jwt_user=CANARY_USER) == []

    for conn in ("leak_bad", "leak_v2_bad"):
        with pytest.raises(XdepError) as info:
            RemoteAirflowHook(conn).run(lambda c: c.get_dag("xdep_test_producer"))
        text = (str(info.value) + repr(info.value) + repr(RemoteAirflowHook(conn).get_config())).encode()
        assert hits(conn, text, secrets, CANARY_USER) == []


def test_no_aws_secret_anywhere_after_the_mwaa_paths(mwaa, downstream_db, out_file, capfd):
    """Through Amazon MWAA (the AWS double): the secret access key, the session token and every
    signature the double accepted appear nowhere after waits that succeed, fail, find no asset, are
    throttled, and sign with a wrong secret; nor in the errors' text."""
    from tests.integration.conftest import AWS_SECRET, AWS_SESSION_TOKEN

    runs = []
    for api in ("v2", "v1"):
        upstream, conn = mwaa.upstreams[api], mwaa.conn_id(api)
        ok_run = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
        failed_run = upstream.trigger(conf={"fail": True}, logical_date=datetime.now(timezone.utc))
        mwaa.double.throttle(2)
        for dag_id, run_id in (
            ("xdep_ds_by_id_defer", ok_run),
            ("xdep_ds_by_id_poke", failed_run),
            ("xdep_ds_tasks_defer", ok_run),
        ):
            runs.append(run_downstream(dag_id, {"conn": conn, "run_id": run_id, "out": str(out_file)}))
        runs.append(_asset_wait_succeeds(upstream, conn, "defer", out_file))
        runs.append(run_downstream("xdep_ds_asset_missing_poke", {"conn": conn, "out": str(out_file)}))
        for variant in ("defer", "poke"):
            conf = {"conn": f"{conn}_bad_secret", "run_id": "x", "out": str(out_file)}
            runs.append(run_downstream(f"xdep_ds_by_id_{variant}", conf))
    assert runs == ["success", "failed", "success", "success", "failed", "failed", "failed"] * 2
    assert mwaa.double.count("InvalidSignatureException") > 0 and mwaa.double.signatures

    secrets = [s.encode() for s in (AWS_SECRET, AWS_SECRET + "-wrong", AWS_SESSION_TOKEN)]
    secrets += [s.encode() for s in mwaa.double.signatures]
    printed = "".join(capfd.readouterr()).encode()
    assert hits("printed", printed, secrets, None) == []
    assert scan_files(Path(os.environ["AIRFLOW_HOME"]), secrets) == []
    for conn in (f"{mwaa.conn_id('v2')}_bad_secret", f"{mwaa.conn_id('v1')}_no_grant"):
        with pytest.raises(XdepError) as info:
            RemoteAirflowHook(conn).run(lambda c: c.get_dag("xdep_test_producer"))
        text = (str(info.value) + repr(info.value) + repr(RemoteAirflowHook(conn).get_config())).encode()
        assert hits(conn, text, secrets, None) == []
