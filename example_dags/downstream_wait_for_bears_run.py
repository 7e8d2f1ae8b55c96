"""DOWNSTREAM deployment (team B): waits for team A's ``bears_producer`` run of the same day.

Needs one connection, ``upstream_airflow`` (type ``remote_airflow``), with a read-only token.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from xdep_sensors import RemoteDagRunSensor


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["xdep-example"],
)
def bears_report():
    wait = RemoteDagRunSensor(
        task_id="wait_for_bears",
        remote_conn_id="upstream_airflow",
        external_dag_id="bears_producer",  # same logical date as this run, by default
        poke_interval=5,
        timeout=60 * 60,
    )

    @task
    def report(upstream_run: dict) -> str:
        line = f"upstream {upstream_run['dag_id']} run {upstream_run['run_id']} is {upstream_run['state']}"
        print(line, "-", upstream_run["url"])
        return line

    report(wait.output)


bears_report()
