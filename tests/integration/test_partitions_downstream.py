"""Upstream partitions into a real downstream's partitioned scheduling (Airflow 3.3.2 both sides).

The downstream (PostgreSQL, scheduler, triggerer) bridges the upstream's bears events of one partition
onto a local asset with the upstream keys; its ``PartitionedAssetTimetable`` DAGs then run once per
upstream hour, and roll the hours up into their day, as Airflow schedules partitions inside one
deployment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone

import pytest

from devtools import postgres
from devtools.airflow_local import LocalAirflow
from tests.integration.conftest import AIRFLOW3_BIN, HERE, wait_for
from tests.integration.test_partitions_live import _event

pytestmark = pytest.mark.integration

DAY = "2026-12-04"


@pytest.fixture(scope="module")
def downstream(_upstreams, tmp_path_factory):
    conn = {
        "conn_type": "remote_airflow",
        "host": _upstreams["v2"].server.base_url,
        "login": "viewer",
        "password": "viewer",
    }
    server = LocalAirflow(
        tmp_path_factory.mktemp("downstream-partitions"),
        AIRFLOW3_BIN,
        major=3,
        dags_folder=HERE / "downstream_partition_dags",
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        name="downstream-partitions",
        database_url=postgres.fresh_database("xdep_downstream_partitions"),
        extra_env={"AIRFLOW_CONN_UP": json.dumps(conn), "PYTHONPATH": str(HERE.parents[1])},
    )
    try:
        server.start(timeout=300)
        for dag_id in ("xdep_p_bridge", "xdep_p_hourly", "xdep_p_daily", "xdep_p_rollup_wait"):
            server.wait_for_dag(dag_id, timeout=180)
        yield server
    finally:
        server.stop()


def _runs(server: LocalAirflow, dag_id: str) -> list[dict]:
    return server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]


def _bridge(server: LocalAirflow, upstream, hour: str, since: str) -> None:
    run_id = server.trigger(
        "xdep_p_bridge", conf={"partition": hour, "since": since}, logical_date=datetime.now(timezone.utc)
    )
    _event(upstream, hour, 100)
    assert server.wait_run("xdep_p_bridge", run_id) == "success", server.tail_logs(30)


def test_bridged_upstream_partitions_schedule_partitioned_dags_downstream(downstream, upstream_v2):
    since = datetime.now(timezone.utc).isoformat()
    first, second = f"{DAY}T05:00:00", f"{DAY}T06:00:00"
    _bridge(downstream, upstream_v2, first, since)

    # the local event carries the upstream key: the identity-mapped DAG runs for that very partition
    local = downstream.api("GET", "/api/v2/assets?uri_pattern=local://bears_by_hour")["assets"]
    events = downstream.api("GET", f"/api/v2/assets/events?asset_id={local[0]['id']}")["asset_events"]
    assert [(e["partition_key"], e["extra"]["xdep_upstream"]["partition_key"]) for e in events] == [
        (first, first)
    ]
    hourly = wait_for(lambda: _runs(downstream, "xdep_p_hourly"), 120, "the hourly run of the partition")
    assert [r["partition_key"] for r in hourly] == [first]
    # one hour of the day is not enough for the roll-up (MinimumCount(2))
    assert _runs(downstream, "xdep_p_daily") == []

    _bridge(downstream, upstream_v2, second, since)
    daily = wait_for(lambda: _runs(downstream, "xdep_p_daily"), 120, "the daily roll-up run")
    assert [r["partition_key"] for r in daily] == [DAY]
    # made once the second hour had arrived, not on the first
    events = downstream.api("GET", f"/api/v2/assets/events?asset_id={local[0]['id']}")["asset_events"]
    arrived = max(e["timestamp"] for e in events if e["partition_key"] == second)
    assert daily[0]["run_after"] >= arrived, (daily[0], arrived)
    hourly = wait_for(
        lambda: len(runs := _runs(downstream, "xdep_p_hourly")) == 2 and runs, 120, "the second hourly run"
    )
    assert sorted(r["partition_key"] for r in hourly) == [first, second]


def test_the_page_and_the_doctor_say_which_keys_of_a_rollup_have_arrived(downstream, upstream_v2):
    day = "2026-11-28"
    run_id = downstream.trigger(
        "xdep_p_rollup_wait", conf={"day": day}, logical_date=datetime.now(timezone.utc)
    )
    path = f"/api/v2/dags/xdep_p_rollup_wait/dagRuns/{run_id}/taskInstances/wait"
    wait_for(lambda: downstream.api("GET", path)["state"] == "deferred", 180, "the roll-up wait deferred")
    for n in (0, 1):
        _event(upstream_v2, f"{day}T0{n}:00:00", n)
    missing = "missing 2026-11-28T02:00:00, 2026-11-28T03:00:00"
    line = f"2 of 24 partitions of {day} arrived upstream; {missing}"

    # the page: the wait in flight, with its window's progress as the upstream shows it
    request = urllib.request.Request(
        downstream.base_url + "/xdep-sensors/api/dependencies",
        headers={"Authorization": f"Bearer {downstream.token('viewer', 'viewer')}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    item = next(i for i in body["dependencies"] if i.get("dag_id") == "xdep_p_rollup_wait")
    (flight,) = [w for w in item["in_flight"] if w["run_id"] == run_id]
    (progress,) = flight["partitions"]
    assert (progress["asset"], progress["expected"], progress["arrived"]) == ("file://include/bears", 24, 2)
    assert progress["line"].startswith(line), progress

    # the doctor, as an operator runs it where the DAG files are
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xdep_sensors",
            "doctor",
            "--conn-id",
            "up",
            "--sensor",
            "xdep_p_rollup_wait.wait",
            "--partition-key",
            day,
        ],
        env=downstream.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert f"[ok] roll-up file://include/bears: {line}" in done.stdout, done.stdout

    # the rest of the day: the wait ends
    for n in range(2, 24):
        _event(upstream_v2, f"{day}T{n:02d}:00:00", n)
    assert downstream.wait_run("xdep_p_rollup_wait", run_id) == "success"
