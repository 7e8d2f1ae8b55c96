"""RemoteDagRunSensor end to end: downstream runs through ``dag.test()``, upstreams are real servers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.dag_processing.dagbag import DagBag

pytestmark = pytest.mark.integration

_bag: DagBag | None = None


def downstream_dag(dag_id: str):
    global _bag
    if _bag is None:
        from tests.helpers import ROOT

        _bag = DagBag(str(ROOT / "tests" / "integration" / "downstream_dags"))
        assert not _bag.import_errors, _bag.import_errors
    return _bag.get_dag(dag_id)


def run_downstream(dag_id, conf, logical_date=None):
    dag = downstream_dag(dag_id)
    dr = dag.test(run_conf=conf, logical_date=logical_date or datetime.now(timezone.utc))
    return dr.state


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_waits_for_run_id_then_succeeds(upstream, downstream_db, out_file, variant):
    run_id = upstream.trigger(conf={"sleep": 4}, logical_date=datetime.now(timezone.utc))
    state = run_downstream(
        f"xdep_ds_by_id_{variant}", {"conn": upstream.conn_id, "run_id": run_id, "out": str(out_file)}
    )
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert result["run_id"] == run_id and result["state"] == "success"
    assert set(result) >= {
        "dag_id",
        "run_id",
        "logical_date",
        "run_after",
        "state",
        "start_date",
        "end_date",
        "conf",
        "url",
    }
    assert result["conf"] == {"sleep": 4} and result["url"].startswith(upstream.server.base_url)


def test_waits_for_same_logical_date(upstream, downstream_db, out_file, polling_mode):
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    run_id = upstream.trigger(conf={"sleep": 3}, logical_date=when)
    state = run_downstream(
        "xdep_ds_by_date_defer", {"conn": upstream.conn_id, "out": str(out_file)}, logical_date=when
    )
    assert state == "success"
    assert json.loads(out_file.read_text())["run_id"] == run_id


def test_latest_after(upstream, downstream_db, out_file, polling_mode):
    after = datetime.now(timezone.utc) - timedelta(seconds=1)
    run_id = upstream.trigger(conf={"sleep": 3}, logical_date=datetime.now(timezone.utc))
    state = run_downstream(
        "xdep_ds_latest_after_defer",
        {"conn": upstream.conn_id, "after": after.isoformat(), "out": str(out_file)},
    )
    assert state == "success"
    assert json.loads(out_file.read_text())["run_id"] == run_id


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_upstream_failure_fails_fast(upstream, downstream_db, out_file, variant):
    run_id = upstream.trigger(conf={"fail": True}, logical_date=datetime.now(timezone.utc))
    started = datetime.now(timezone.utc)
    state = run_downstream(
        f"xdep_ds_by_id_{variant}", {"conn": upstream.conn_id, "run_id": run_id, "out": str(out_file)}
    )
    assert state == "failed"
    assert datetime.now(timezone.utc) - started < timedelta(seconds=90)  # not the 240 s sensor timeout
    assert not out_file.exists()
    assert upstream.wait_run(run_id, timeout=5) == "failed"


def test_task_ids_succeed_before_the_run_ends(upstream, downstream_db, out_file, polling_mode):
    run_id = upstream.trigger(conf={"load_sleep": 60}, logical_date=datetime.now(timezone.utc))
    state = run_downstream(
        "xdep_ds_tasks_defer", {"conn": upstream.conn_id, "run_id": run_id, "out": str(out_file)}
    )
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert result["tasks"] == {"extract": "success"}
    assert result["state"] == "running"  # the whole upstream run was still going


def test_task_group(upstream, downstream_db, out_file):
    run_id = upstream.trigger(conf={"load_sleep": 60}, logical_date=datetime.now(timezone.utc))
    state = run_downstream(
        "xdep_ds_group_poke", {"conn": upstream.conn_id, "run_id": run_id, "out": str(out_file)}
    )
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert result["tasks"] == {"grp.a": "success", "grp.b": "success"} and result["state"] == "running"


def test_missing_dag_fails_fast(upstream, downstream_db, out_file):
    started = datetime.now(timezone.utc)
    state = run_downstream(
        "xdep_ds_missing_dag_defer", {"conn": upstream.conn_id, "run_id": "x", "out": str(out_file)}
    )
    assert state == "failed"
    assert datetime.now(timezone.utc) - started < timedelta(seconds=60)  # not the 240 s sensor timeout


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_wrong_credentials_fail_fast_without_leaking(
    upstream, downstream_db, out_file, variant, monkeypatch, capfd
):
    secret = "Wr0ng-Secret-For-Leak-Check"
    conn = {
        "conn_type": "remote_airflow",
        "host": upstream.server.base_url,
        "login": "viewer",
        "password": secret,
    }
    monkeypatch.setenv("AIRFLOW_CONN_UP_BAD", json.dumps(conn))
    started = datetime.now(timezone.utc)
    state = run_downstream(
        f"xdep_ds_by_id_{variant}", {"conn": "up_bad", "run_id": "x", "out": str(out_file)}
    )
    assert state == "failed"
    assert datetime.now(timezone.utc) - started < timedelta(seconds=60)
    output = "".join(capfd.readouterr())
    assert secret not in output
    assert ("authentication failed for conn 'up_bad'" if upstream.api == "v2" else "access denied") in output


def test_reschedule_mode(upstream_v2, downstream_db, out_file):
    run_id = upstream_v2.trigger(conf={"sleep": 3}, logical_date=datetime.now(timezone.utc))
    state = run_downstream(
        "xdep_ds_by_id_reschedule", {"conn": upstream_v2.conn_id, "run_id": run_id, "out": str(out_file)}
    )
    assert state == "success"
    assert json.loads(out_file.read_text())["run_id"] == run_id
