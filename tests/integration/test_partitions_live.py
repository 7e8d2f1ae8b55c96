"""Partitioned runs on a real Airflow 3.3 upstream: a RemoteDagRunSensor waits for exactly its partition.

The downstream runs through ``dag.test()``; the upstream DAG ``xdep_test_partitioned``
(``PartitionedAtRuntime``) gets its runs' keys from the trigger. Airflow 2 upstreams have no partitions:
a partition wait there fails at the first look, saying so.
"""

from __future__ import annotations

import json

import pytest

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
