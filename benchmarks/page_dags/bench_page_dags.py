"""1,000 remote dependencies for benchmarks/dependencies_page.py: DAGS DAGs x SENSORS sensors.

Half wait on runs of upstream DAGs, half on upstream assets, over two connections (``up`` and
``up2``, the same upstream). ``XDEP_BENCH_DAGS`` / ``XDEP_BENCH_SENSORS`` size it.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor

DAGS = int(os.environ.get("XDEP_BENCH_DAGS", "100"))
SENSORS = int(os.environ.get("XDEP_BENCH_SENSORS", "10"))

for d in range(DAGS):
    with DAG(
        f"bench_page_{d:04d}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["xdep-bench"],
    ):
        for s in range(SENSORS):
            conn = "up" if (d + s) % 2 == 0 else "up2"
            if s % 2 == 0:
                RemoteDagRunSensor(
                    task_id=f"run_{s}",
                    remote_conn_id=conn,
                    external_dag_id="xdep_test_producer",
                    run_id="{{ dag_run.conf['run_id'] }}",
                    poke_interval=30,
                )
            else:
                RemoteAssetSensor(
                    task_id=f"asset_{s}",
                    remote_conn_id=conn,
                    asset_uri="file://include/bears",
                    poke_interval=30,
                )
