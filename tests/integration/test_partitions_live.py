"""Partitioned runs on a real Airflow 3.3 upstream: a RemoteDagRunSensor waits for exactly its partition.

The downstream runs through ``dag.test()``; the upstream DAG ``xdep_test_partitioned``
(``PartitionedAtRuntime``) gets its runs' keys from the trigger. Airflow 2 upstreams have no partitions:
a partition wait there fails at the first look, saying so.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.test_asset_sensor_live import clear_cursor, events_of
from tests.integration.test_dag_run_sensor_live import run_downstream

pytestmark = pytest.mark.integration

DAG = "xdep_test_partitioned"


def _trigger(upstream, key: str, **conf) -> str:
    return upstream.server.trigger(DAG, conf=conf, logical_date=None, partition_key=key)


@pytest.fixture
def partitioned(upstream_v2):
    upstream_v2.server.wait_for_dag(DAG, timeout=180)
    return upstream_v2


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_waits_for_the_newest_run_of_exactly_its_partition(partitioned, downstream_db, out_file, variant):
    up = partitioned
    key = f"eu-{variant}"  # each variant its own partition: runs of the other do not count
    # an older run of the key that failed does not decide the wait: the newest run of the key does
    failed = _trigger(up, key, fail=True)
    assert up.wait_run(failed, DAG) == "failed"
    # held until the downstream waits; newer runs of keys that contain it, or differ in case, end first
    held = _trigger(up, key, sleep=6)
    others = [_trigger(up, f"{key}-west"), _trigger(up, key.upper()), _trigger(up, f"x{key}")]
    state = run_downstream(
        f"xdep_ds_partition_{variant}", {"conn": up.conn_id, "partition": key, "out": str(out_file)}
    )
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert (result["run_id"], result["partition_key"], result["state"]) == (held, key, "success")
    for run_id in others:  # they were there to be picked, and were not
        assert up.wait_run(run_id, DAG) == "success"


def test_a_failed_newest_run_of_the_partition_fails_the_wait(partitioned, downstream_db, out_file):
    up = partitioned
    key = "2026-12-06T05:00:00"
    run_id = _trigger(up, key, fail=True, sleep=3)
    state = run_downstream(
        "xdep_ds_partition_defer", {"conn": up.conn_id, "partition": key, "out": str(out_file)}
    )
    assert state == "failed"
    assert up.wait_run(run_id, DAG) == "failed"
    assert not out_file.exists()


def test_an_airflow_2_upstream_fails_at_the_first_look_saying_why(_upstreams, downstream_db, out_file, capfd):
    up = _upstreams["v1"]
    state = run_downstream(
        "xdep_ds_partition_defer", {"conn": up.conn_id, "partition": "eu", "out": str(out_file)}
    )
    assert state == "failed"
    out = "".join(capfd.readouterr())
    # at the first look (a ConfigurationError is not retried): no run listing was needed to know it
    assert "runs Airflow 2.11.2, which has no partitioned runs (Airflow 3.2+)" in out, out[-3000:]


# --- asset events of a partition ------------------------------------------------------------------------

BEARS = "file://include/bears"


def _event(upstream, key: str | None, n: int) -> None:
    """One upstream event of the bears asset for partition ``key`` (REST: Airflow 3.3 takes the key)."""
    assets = upstream.server.api("GET", "/api/v2/assets?limit=100")["assets"]
    asset_id = next(a["id"] for a in assets if a["uri"] == BEARS)
    body = {"asset_id": asset_id, "extra": {"n": n}, "partition_key": key}
    upstream.server.api("POST", "/api/v2/assets/events", body)


def _later(upstream, *events: tuple[str | None, int], delay: float = 3.0) -> threading.Thread:
    """Create the events, in order, ``delay`` s from now (while the downstream waits)."""

    def go():
        time.sleep(delay)
        for key, n in events:
            _event(upstream, key, n)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _wait(upstream, key: str, out_file, logical_date=None) -> list[dict]:
    dag_id = "xdep_ds_asset_partition_defer"
    params = {"conn": upstream.conn_id, "partition": key, "out": str(out_file)}
    assert run_downstream(dag_id, params, logical_date=logical_date) == "success"
    return [(e["extra"]["n"], e["partition_key"]) for e in events_of(out_file)]


def test_asset_events_of_exactly_a_partition_each_consumed_once_per_key(upstream_v2, downstream_db, out_file):
    up = upstream_v2
    clear_cursor("xdep_ds_asset_partition_defer")
    # keys that contain "eu", or differ in case, and no key at all do not count; "us" comes first
    made = _later(up, ("us", 1), ("eu-west", 2), ("EU", 3), ("xeu", 4), (None, 5), ("eu", 6))
    assert _wait(up, "eu", out_file) == [(6, "eu")]
    made.join()
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    # a backfill run for another key finds that key's older event: "eu"'s cursor does not block it
    assert _wait(up, "us", out_file, logical_date=two_days_ago) == [(1, "us")]
    # a second run for "eu", however old, does not get the consumed event again, but the key's next one
    made = _later(up, ("eu", 7))
    assert _wait(up, "eu", out_file, logical_date=two_days_ago) == [(7, "eu")]
    made.join()


def test_asset_partition_wait_on_airflow_2_fails_at_the_first_look(
    _upstreams, downstream_db, out_file, capfd
):
    up = _upstreams["v1"]
    params = {"conn": up.conn_id, "partition": "eu", "out": str(out_file)}
    assert run_downstream("xdep_ds_asset_partition_defer", params) == "failed"
    out = "".join(capfd.readouterr())
    assert "runs Airflow 2.11.2, whose asset events have no partition keys (Airflow 3.2+)" in out, out[-3000:]


def test_a_rollup_waits_until_its_whole_window_has_arrived(upstream_v2, downstream_db, out_file):
    up = upstream_v2
    clear_cursor("xdep_ds_asset_rollup_defer")
    day = "2026-11-30"
    hours = [f"{day}T{h:02d}:00:00" for h in range(24)]
    # another day's hour, and an hour of the day twice: the day is complete only with all 24 hours
    made = _later(
        up,
        ("2026-12-01T00:00:00", 99),
        *((h, n) for n, h in enumerate(hours[:12])),
        (hours[3], 33),
        *((h, n) for n, h in enumerate(hours[12:], start=12)),
    )
    params = {"conn": up.conn_id, "partition": day, "out": str(out_file)}
    # its first look starts at the day's own date (the mapper's), before this run: no since needed
    assert run_downstream("xdep_ds_asset_rollup_defer", params) == "success"
    made.join()
    got = sorted((e["partition_key"], e["extra"]["n"]) for e in events_of(out_file))
    assert sorted({k for k, _ in got}) == hours  # had the wait ended early, hours would be missing
    assert (hours[3], 33) in got and all(k.startswith(day) for k, _ in got)
