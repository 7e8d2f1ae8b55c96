"""The downstream DAGs of benchmarks/worker_free.py: one sensor each, on the upstream run named in the conf.

``bench_classic``: a deferrable ``RemoteDagRunSensor`` (a worker starts it and defers; a worker
resumes it). ``bench_free``: the same with ``start_from_trigger`` + ``end_from_trigger``.
``bench_http``: ``HttpSensor(deferrable=True)`` on the upstream's run endpoint (404 until the run exists).
"""

from __future__ import annotations

import pendulum
from airflow.providers.http.sensors.http import HttpSensor
from airflow.sdk import DAG

from xdep_sensors import RemoteDagRunSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
RUN = "{{ dag_run.conf['run_id'] }}"
WAIT = {"poke_interval": 5, "timeout": 900}
DAGS = {
    "schedule": None,
    "start_date": START,
    "catchup": False,
    "max_active_runs": 1000,
    "max_active_tasks": 1000,
    "tags": ["xdep-bench"],
}

with DAG("bench_classic", **DAGS):
    RemoteDagRunSensor(
        task_id="wait", remote_conn_id="up", external_dag_id="xdep_test_producer", run_id=RUN, **WAIT
    )

with DAG("bench_free", **DAGS):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up",
        external_dag_id="xdep_test_producer",
        run_id=RUN,
        start_from_trigger=True,
        end_from_trigger=True,
        **WAIT,
    )

with DAG("bench_http", **DAGS):
    HttpSensor(
        task_id="wait",
        http_conn_id="up_http",
        method="GET",
        deferrable=True,
        endpoint="api/v2/dags/xdep_test_producer/dagRuns/" + RUN,
        **WAIT,
    )
