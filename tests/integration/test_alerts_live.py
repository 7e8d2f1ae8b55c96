"""Alert triggers in a real downstream Airflow 3.3 (with `airflow triggerer`) on real 3.3 and 2.11 upstreams.

Every fire becomes one local asset event (the trigger's payload in ``extra["payload"]``); the tests
count those, never downstream runs (Airflow may fold two events into one run: apache/airflow#54659).
The deadline watchers (cron every minute, an upstream DAG that succeeds once early on) run for the
whole module; the last test checks the deadlines they fired, including across the restart test.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from devtools import postgres
from devtools.airflow_local import LocalAirflow
from tests.integration.conftest import AIRFLOW3_BIN, HERE, local_asset_events, wait_for, watchers_started

pytestmark = pytest.mark.integration

APIS = ("v2", "v1")
# the same upstreams reached through MWAA InvokeRestApi (the AWS double) and Composer's front (Google's)
CLOUD_APIS = ("mwaa_v2", "mwaa_v1", "composer_v2")
CLOUD_ALERTS = ("task-failed", "upstream-failed", "run-slow", "task-slow")
UPSTREAM_DAGS = ("xdep_alert_flaky", "xdep_alert_slow", "xdep_alert_late")
ALERTS = ("task-failed", "upstream-failed", "run-slow", "task-slow", "late")
MET: dict[str, dict] = {}  # api -> the xdep_alert_late run that met one deadline


def _alert_asset_ids(server: LocalAirflow) -> dict[str, int]:
    return {
        a["uri"]: a["id"]
        for a in server.api("GET", "/api/v2/assets?uri_pattern=xdep://alert/&limit=100")["assets"]
    }


def _payloads(server: LocalAirflow, api: str, alert: str) -> list[dict]:
    """Every fire of one alert so far: the payloads of the local asset's events, oldest first."""
    events = local_asset_events(
        server, server.alert_assets[f"xdep://alert/{api}/{alert}"], order_by="timestamp"
    )
    return [{**e["extra"]["payload"], "_at": e["timestamp"]} for e in events]


def _for_run(server, api, alert, run_id) -> list[dict]:
    def run_of(p):
        return (p.get("task_instance") or p.get("run") or {}).get("run_id")

    return [p for p in _payloads(server, api, alert) if run_of(p) == run_id]


def _upstream_of(_upstreams, api: str):
    return _upstreams[api.rpartition("_")[2]]


def _ui_base(upstream, api: str) -> str:
    """Where the alerts' links point: the upstream, or for Composer its web server (the Google front)."""
    if api.startswith("composer_"):
        return json.loads(os.environ[f"AIRFLOW_CONN_{api.upper()}"])["host"]
    return upstream.server.base_url


def _record_as(api: str) -> str:
    """The versions table's row: the upstream's version, behind MWAA or Composer or neither."""
    version = "3.3.2" if api.endswith("v2") else "2.11.2"
    via = {"mwaa": " via MWAA", "composer": " via Composer"}.get(api.partition("_")[0], "")
    return version + via


def _upstream_run(upstream, dag_id, run_id) -> dict:
    prefix = "/api/v2" if upstream.api == "v2" else "/api/v1"
    return upstream.server.api("GET", f"{prefix}/dags/{dag_id}/dagRuns/{run_id}")


def _trigger_run(upstream, dag_id, **conf) -> str:
    return upstream.trigger(dag_id, conf=conf, logical_date=datetime.now(timezone.utc))


def _later_run(upstream, dag_id) -> str:
    """Start a later run of the flaky or the slow DAG: its alerts are markers. Each watcher fires in the
    order it finds things, poll after poll, so a repeat of an earlier fire would come before the later
    run's: once the later run's alert is here, the earlier counts are final (no waiting "long enough")."""
    return _trigger_run(upstream, dag_id, **({"sleep": 20} if dag_id == "xdep_alert_slow" else {}))


def _wait_fired(downstream, api, alerts, run_id) -> None:
    for alert in alerts:
        wait_for(lambda alert=alert: _for_run(downstream, api, alert, run_id), 120, f"{alert} of {run_id}")


@pytest.fixture(scope="module")
def downstream(_upstreams, mwaa, composer, tmp_path_factory):
    for up in _upstreams.values():
        for dag_id in UPSTREAM_DAGS:
            up.server.wait_for_dag(dag_id, timeout=180)
    conns = {
        f"AIRFLOW_CONN_{name}": json.dumps(
            {
                "conn_type": "remote_airflow",
                "host": _upstreams[api].server.base_url,
                "login": "viewer",
                "password": "viewer",
            }
        )
        for name, api in (("UP", "v2"), ("UP1", "v1"))
    }
    server = LocalAirflow(
        tmp_path_factory.mktemp("downstream-alerts"),
        AIRFLOW3_BIN,
        major=3,
        dags_folder=HERE / "downstream_alert_dags",
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        name="downstream-alerts",
        database_url=postgres.fresh_database("xdep_downstream_alerts"),  # production shape: PostgreSQL
        extra_env={**conns, **mwaa.env_vars(), **composer.env_vars()},
    )
    try:
        server.start(timeout=300)
        for api in APIS:
            for alert in ALERTS:
                server.wait_for_dag(f"xdep_alert_{api}_{alert.replace('-', '_')}", timeout=180)
        for api in CLOUD_APIS:
            for alert in CLOUD_ALERTS:
                server.wait_for_dag(f"xdep_alert_{api}_{alert.replace('-', '_')}", timeout=180)
        expected = len(APIS) * len(ALERTS) + len(CLOUD_APIS) * len(CLOUD_ALERTS)
        server.alert_assets = wait_for(
            lambda: (ids := _alert_asset_ids(server)) and len(ids) == expected and ids,
            120,
            "downstream alert assets registered",
        )
        # only what happens upstream after a watcher stored its start state fires: the met deadline too
        wait_for(
            lambda: watchers_started(server, server.alert_assets.values()),
            180,
            "every alert watcher's start state stored",
        )
        for api in APIS:  # one deadline met early: that deadline must not fire, later ones name this run
            run_id = _trigger_run(_upstreams[api], "xdep_alert_late")
            assert _upstreams[api].wait_run(run_id, "xdep_alert_late") == "success"
            MET[api] = _upstream_run(_upstreams[api], "xdep_alert_late", run_id)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("api", APIS + CLOUD_APIS)
def test_failing_task_fires_once(_upstreams, downstream, api, matrix_record):
    upstream = _upstream_of(_upstreams, api)
    run_id = _trigger_run(upstream, "xdep_alert_flaky")
    assert upstream.wait_run(run_id, "xdep_alert_flaky") == "failed"
    wait_for(
        lambda: (
            _for_run(downstream, api, "task-failed", run_id)
            and _for_run(downstream, api, "upstream-failed", run_id)
        ),
        60,
        "both task alerts",
    )
    # nothing may fire twice: both alerts of a later run come after any repeat of ours would have
    later = _later_run(upstream, "xdep_alert_flaky")
    _wait_fired(downstream, api, ("task-failed", "upstream-failed"), later)
    (failed,) = [p["task_instance"] for p in _for_run(downstream, api, "task-failed", run_id)]
    (blocked,) = [p["task_instance"] for p in _for_run(downstream, api, "upstream-failed", run_id)]
    # once per final state: the first try (up_for_retry) did not fire, the second (failed) did
    assert (failed["task_id"], failed["state"], failed["try_number"]) == ("grp.boom", "failed", 2)
    assert failed["url"].startswith(_ui_base(upstream, api)) and "grp.boom" in failed["url"]
    assert (blocked["task_id"], blocked["state"]) == ("after", "upstream_failed")
    assert {
        "dag_id",
        "run_id",
        "task_id",
        "map_index",
        "try_number",
        "state",
        "start_date",
        "end_date",
        "url",
    } <= set(failed)
    matrix_record(_record_as(api), "upstream", "task_failure_alert")


@pytest.mark.parametrize("api", APIS + CLOUD_APIS)
def test_slow_run_fires_once_while_still_running(_upstreams, downstream, api, matrix_record):
    upstream = _upstream_of(_upstreams, api)
    run_id = _trigger_run(upstream, "xdep_alert_slow", sleep=20)
    (run_alert,) = wait_for(lambda: _for_run(downstream, api, "run-slow", run_id), 60, "run duration alert")
    (task_alert,) = wait_for(
        lambda: _for_run(downstream, api, "task-slow", run_id), 60, "task duration alert"
    )
    assert upstream.wait_run(run_id, "xdep_alert_slow") == "success"
    # nothing more fires for it once it ended: a later run's alerts come from polls after its end
    later = _later_run(upstream, "xdep_alert_slow")
    _wait_fired(downstream, api, ("run-slow", "task-slow"), later)
    assert upstream.wait_run(later, "xdep_alert_slow") == "success"  # the next test starts on an idle one
    assert len(_for_run(downstream, api, "run-slow", run_id)) == 1
    assert len(_for_run(downstream, api, "task-slow", run_id)) == 1
    ended = datetime.fromisoformat(
        _upstream_run(upstream, "xdep_alert_slow", run_id)["end_date"].replace("Z", "+00:00")
    )
    for alert in (run_alert, task_alert):
        assert alert["run"]["state"] == "running" and alert["running_for"] >= 8
        assert datetime.fromisoformat(alert["_at"].replace("Z", "+00:00")) < ended  # fired while it ran
    assert task_alert["task_instance"]["task_id"] == "nap"
    matrix_record(_record_as(api), "upstream", "task_duration_alert")


def test_triggerer_restart_neither_loses_nor_repeats(_upstreams, downstream):
    before = {api: _trigger_run(_upstreams[api], "xdep_alert_slow", sleep=40) for api in APIS}
    for api in APIS:
        wait_for(
            lambda api=api: _for_run(downstream, api, "run-slow", before[api]),
            60,
            "duration alert before restart",
        )
    downstream.stop_component("triggerer")
    stopped = datetime.now(timezone.utc)
    tick = stopped.replace(second=0, microsecond=0) + timedelta(
        minutes=1
    )  # a deadline passes while it is down
    failing = {api: _trigger_run(_upstreams[api], "xdep_alert_flaky") for api in APIS}
    slow = {api: _trigger_run(_upstreams[api], "xdep_alert_slow", sleep=100) for api in APIS}
    for api in APIS:
        assert _upstreams[api].wait_run(failing[api], "xdep_alert_flaky") == "failed"
    wait_for(lambda: datetime.now(timezone.utc) > tick + timedelta(seconds=8), 90, "a deadline while down")
    downstream.start_component("triggerer")

    for api in APIS:  # what happened while it was down fires now
        wait_for(
            lambda api=api: _for_run(downstream, api, "task-failed", failing[api]),
            90,
            "failure from downtime",
        )
        wait_for(
            lambda api=api: _for_run(downstream, api, "run-slow", slow[api]), 90, "long run from downtime"
        )
        wait_for(
            lambda api=api: any(
                p["deadline"] == tick.isoformat() for p in _payloads(downstream, api, "late")
            ),
            90,
            "deadline from downtime",
        )
    # later fires of the same watchers (the next deadline's: a later look at the clock) come after any
    # repeat since the restart would have: once they are here, the counts below are final
    later = {
        api: {dag: _later_run(_upstreams[api], dag) for dag in ("xdep_alert_flaky", "xdep_alert_slow")}
        for api in APIS
    }
    for api in APIS:
        _wait_fired(downstream, api, ("task-failed",), later[api]["xdep_alert_flaky"])
        _wait_fired(downstream, api, ("run-slow",), later[api]["xdep_alert_slow"])
        wait_for(
            lambda api=api: any(
                datetime.fromisoformat(p["deadline"]) > tick for p in _payloads(downstream, api, "late")
            ),
            150,
            "the next deadline",
        )
    for api in APIS:  # ... once, and what fired before the restart does not fire again
        assert len(_for_run(downstream, api, "task-failed", failing[api])) == 1
        (alert,) = _for_run(downstream, api, "run-slow", slow[api])
        assert alert["run"]["state"] == "running"
        assert len(_for_run(downstream, api, "run-slow", before[api])) == 1
        assert [p["deadline"] for p in _payloads(downstream, api, "late")].count(tick.isoformat()) == 1


@pytest.mark.parametrize("api", APIS)
def test_missed_deadlines_fire_once_per_deadline(_upstreams, downstream, api):
    """Runs last: the every-minute deadline watcher has been on since the module started."""
    met_end = datetime.fromisoformat(MET[api]["end_date"].replace("Z", "+00:00"))
    met_tick = met_end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    wait_for(
        lambda: (
            len(
                [
                    p
                    for p in _payloads(downstream, api, "late")
                    if datetime.fromisoformat(p["deadline"]) > met_tick
                ]
            )
            >= 1
        ),
        90,
        "a deadline after the met one",
    )
    fired = _payloads(downstream, api, "late")
    ticks = [datetime.fromisoformat(p["deadline"]) for p in fired]
    assert len(ticks) == len(set(ticks)), ticks  # each deadline at most once
    assert met_tick not in ticks  # the run that landed before it met it
    every = [
        ticks[0] + timedelta(minutes=i) for i in range(int((ticks[-1] - ticks[0]).total_seconds() // 60) + 1)
    ]
    assert sorted(ticks) == [t for t in every if t != met_tick]  # no deadline lost, restart included
    for p, t in zip(fired, ticks):
        assert (p["last_run"] or {}).get("run_id") == (MET[api]["dag_run_id"] if t > met_tick else None)
