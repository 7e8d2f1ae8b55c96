"""Downstream DAGs run with ``dag.test()`` by the integration tests (one per run-selection mode).

Each writes the sensor's XCom result to ``params.out`` from a downstream task, proving the hand-off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from xdep_sensors import RemoteDagRunSensor

VARIANTS = {
    "defer": {"deferrable": True},
    "poke": {"deferrable": False, "mode": "poke"},
    "reschedule": {"deferrable": False, "mode": "reschedule"},
}
SELECTORS = {
    "by_id": {"run_id": "{{ params.run_id }}"},
    "by_date": {},
    "latest_after": {"latest_after": "{{ params.after }}"},
    "tasks": {"run_id": "{{ params.run_id }}", "task_ids": ["extract"]},
    "group": {"run_id": "{{ params.run_id }}", "task_group_id": "grp"},
    "missing_dag": {"run_id": "{{ params.run_id }}", "external_dag_id": "xdep_test_producr"},
    "partition": {"external_dag_id": "{{ params.dag }}", "partition_key": "{{ params.partition }}"},
}


@task
def record(result, params=None):
    Path(params["out"]).write_text(json.dumps(result))


for selector, selector_kwargs in SELECTORS.items():
    for variant, variant_kwargs in VARIANTS.items():
        with DAG(
            f"xdep_ds_{selector}_{variant}",
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            params={
                "conn": "up_v2",
                "run_id": "",
                "after": "",
                "partition": "",
                "dag": "xdep_test_partitioned",
                "out": "/dev/null",
            },
            tags=["xdep-test"],
        ):
            kwargs = {"external_dag_id": "xdep_test_producer", **selector_kwargs, **variant_kwargs}
            wait = RemoteDagRunSensor(
                task_id="wait", remote_conn_id="{{ params.conn }}", poke_interval=1, timeout=240, **kwargs
            )
            record(wait.output)
