"""AssetWatcher triggers in a real downstream Airflow 3.3 (with `airflow triggerer`) on a real upstream."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from devtools import postgres
from devtools.airflow_local import LocalAirflow
from tests.integration.conftest import (
    AIRFLOW3_BIN,
    HERE,
    local_asset_events,
    local_asset_id,
    wait_for,
    watchers_started,
)

pytestmark = pytest.mark.integration

WATCHED = ("file://include/bears", "xdep://bears_named", "xdep://producer-success")  # the watchers' assets


@pytest.fixture(scope="module")
def downstream(_upstreams, tmp_path_factory):
    upstream = _upstreams["v2"].server
    conn = {"conn_type": "remote_airflow", "host": upstream.base_url, "login": "viewer", "password": "viewer"}
    server = LocalAirflow(
        tmp_path_factory.mktemp("downstream"),
        AIRFLOW3_BIN,
        major=3,
        dags_folder=HERE / "downstream_watch_dags",
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        name="downstream",
        database_url=postgres.fresh_database("xdep_downstream_watch"),  # production shape: PostgreSQL
        extra_env={"AIRFLOW_CONN_UP": json.dumps(conn)},
    )
    try:
        server.start(timeout=300)
        for dag_id in (
            "xdep_watch_bears",
            "xdep_watch_named",
            "xdep_watch_producer",
            "xdep_restart_asset_sensor",
            "xdep_restart_run_sensor",
        ):
            server.wait_for_dag(dag_id, timeout=180)
        watched = wait_for(
            lambda: all(ids := [local_asset_id(server, uri) for uri in WATCHED]) and ids,
            120,
            "downstream assets registered",
        )
        # a watcher delivers what happens upstream after it stored its start cursor: the tests' events too
        wait_for(lambda: watchers_started(server, watched), 180, "every watcher's start cursor stored")
        yield server
    finally:
        server.stop()


def _local_events(server: LocalAirflow, uri: str) -> list[dict]:
    return local_asset_events(server, local_asset_id(server, uri))


def _runs(server: LocalAirflow, dag_id: str) -> list[dict]:
    return server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]


def _xcom(server: LocalAirflow, dag_id: str, run_id: str) -> object:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/show/xcomEntries/return_value"
    return server.api("GET", path)["value"]


def _produce(upstream, **conf) -> str:
    run_id = upstream.trigger("xdep_test_assets", conf=conf)
    assert upstream.wait_run(run_id, "xdep_test_assets") == "success"
    return run_id


def test_upstream_asset_event_starts_downstream_dag_with_extra(upstream_v2, downstream):
    before = {r["dag_run_id"] for r in _runs(downstream, "xdep_watch_bears")}
    _produce(upstream_v2, extra={"path": "s3://team-a/bears.csv"})
    new_run = wait_for(
        lambda: [
            r
            for r in _runs(downstream, "xdep_watch_bears")
            if r["dag_run_id"] not in before and r["state"] == "success"
        ],
        120,
        "downstream run",
    )
    assert _xcom(downstream, "xdep_watch_bears", new_run[0]["dag_run_id"]) == [
        {"path": "s3://team-a/bears.csv"}
    ]


def test_upstream_run_success_starts_another(upstream_v2, downstream):
    before = {r["dag_run_id"] for r in _runs(downstream, "xdep_watch_producer")}
    run_id = upstream_v2.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    assert upstream_v2.wait_run(run_id) == "success"

    def started_by_ours():
        # other tests' upstream runs finish meanwhile and rightly start runs too: find the one with ours
        new = [
            r
            for r in _runs(downstream, "xdep_watch_producer")
            if r["dag_run_id"] not in before and r["state"] == "success"
        ]
        return [r for r in new if run_id in _xcom(downstream, "xdep_watch_producer", r["dag_run_id"])]

    assert wait_for(started_by_ours, 120, "a downstream run started by our upstream run")


def test_events_during_triggerer_downtime_are_consumed_exactly_once(upstream_v2, downstream):
    downstream.stop_component("triggerer")
    produced = [_produce(upstream_v2, extra={"downtime": i}) for i in (1, 2)]
    downstream.start_component("triggerer")

    def mine():
        return [
            e
            for e in _local_events(downstream, "file://include/bears")
            if e["extra"]["payload"]["event"]["source_run_id"] in produced
        ]

    wait_for(lambda: len(mine()) >= 2, 120, "both downtime events downstream")
    # nothing may be fired twice: a later upstream event is delivered after any repeat of the earlier ones
    # would have been (the watcher fires in upstream order), so once it is here the count is final
    marker = _produce(upstream_v2, extra={"downtime": "marker"})
    wait_for(
        lambda: [
            e
            for e in _local_events(downstream, "file://include/bears")
            if e["extra"]["payload"]["event"]["source_run_id"] == marker
        ],
        120,
        "the later event",
    )
    events = mine()
    assert sorted(e["extra"]["payload"]["event"]["extra"]["downtime"] for e in events) == [1, 2]
    assert len({e["extra"]["payload"]["event"]["id"] for e in events}) == 2


def test_watchers_share_one_poll(upstream_v2, downstream):
    """Two asset watchers on one connection: the upstream sees one events request per interval.

    The intervals are counted by the run watcher on the same connection (same 2 s interval, alone on
    its listing: one runs request per interval), not by the test's clock: a slow machine slows both."""
    log = upstream_v2.server.log_dir / "api-server.log"

    def count() -> tuple[int, int]:
        """(asset events requests, run watcher requests) the upstream has served so far."""
        lines = log.read_text(errors="replace").splitlines()
        return (
            sum(1 for ln in lines if "path=/api/v2/assets/events " in ln and "method=GET" in ln),
            sum(1 for ln in lines if "path=/api/v2/dags/~/dagRuns/list " in ln and "method=POST" in ln),
        )

    events, runs = count()
    now = wait_for(lambda: (c := count())[1] - runs >= 10 and c, 180, "ten polls of the run watcher")
    per_interval = (now[0] - events) / (now[1] - runs)
    # two asset watchers (bears, bears_named) polling alone would be ~2 per interval
    assert 0.5 <= per_interval <= 1.3, (per_interval, now[0] - events, now[1] - runs)


def _task_state(server: LocalAirflow, dag_id: str, run_id: str) -> str | None:
    return server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait").get("state")


def test_deferred_sensor_survives_a_triggerer_restart_and_consumes_once(upstream_v2, downstream):
    since = datetime.now(timezone.utc).isoformat()
    run_id = downstream.trigger(
        "xdep_restart_asset_sensor", conf={"since": since}, logical_date=datetime.now(timezone.utc)
    )
    wait_for(
        lambda: _task_state(downstream, "xdep_restart_asset_sensor", run_id) == "deferred", 120, "deferred"
    )
    downstream.stop_component("triggerer")
    produced = _produce(upstream_v2, extra={"restart": "triggerer"})
    downstream.start_component("triggerer")
    assert downstream.wait_run("xdep_restart_asset_sensor", run_id, timeout=180) == "success"
    path = (
        f"/api/v2/dags/xdep_restart_asset_sensor/dagRuns/{run_id}/taskInstances/wait/xcomEntries/return_value"
    )
    events = downstream.api("GET", path)["value"]
    assert [e["source_run_id"] for e in events] == [produced]


def _trigger_log(server: LocalAirflow, dag_id: str, run_id: str) -> str:
    """The sensor task's trigger log files, as the triggerer wrote them."""
    folder = server.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=wait"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log.trigger.*")))


def test_deferred_sensor_survives_an_upstream_api_server_restart(upstream_v2, downstream):
    """The upstream's API server goes away while a sensor waits; the sensor meets it (a warning, not a
    failure), and once it is back and the run exists and ends, succeeds. The run is created after the
    restart: an upstream task cannot run while its own API server is down."""
    up_run = f"later_{uuid.uuid4().hex[:8]}"
    run_id = downstream.trigger(
        "xdep_restart_run_sensor", conf={"run_id": up_run}, logical_date=datetime.now(timezone.utc)
    )
    wait_for(
        lambda: _task_state(downstream, "xdep_restart_run_sensor", run_id) == "deferred", 120, "deferred"
    )
    upstream_v2.server.stop_component("api-server")
    try:
        wait_for(
            lambda: (
                "upstream trouble, looking again"
                in _trigger_log(downstream, "xdep_restart_run_sensor", run_id)
            ),
            120,
            "the sensor meeting the stopped upstream",
        )
        assert _task_state(downstream, "xdep_restart_run_sensor", run_id) == "deferred"
    finally:
        upstream_v2.server.start_component("api-server")
    upstream_v2.trigger(conf={}, logical_date=datetime.now(timezone.utc), run_id=up_run)
    assert upstream_v2.wait_run(up_run) == "success"
    assert downstream.wait_run("xdep_restart_run_sensor", run_id, timeout=180) == "success"
