"""Upstream DAGs for the Airflow 3 version matrix: the shape of tests/integration/upstream_dags,
written to parse on every Airflow 3 minor (3.0 has no ``airflow.sdk.exceptions.AirflowSkipException``).
"""

from __future__ import annotations

import time

from airflow.sdk import Asset, dag, task, task_group

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowSkipException


@dag(schedule=None, catchup=False, tags=["xdep-test"])
def xdep_test_producer():
    """extract -> grp.(a, b) -> load; conf: sleep (extract)."""

    @task
    def extract(dag_run=None):
        time.sleep(float(dag_run.conf.get("sleep", 0)))

    @task_group
    def grp():
        @task
        def a():
            return "a"

        @task
        def b():
            return "b"

        a()
        b()

    @task
    def load():
        pass

    extract() >> grp() >> load()


xdep_test_producer()


@dag(schedule=None, catchup=False, tags=["xdep-test"])
def xdep_test_assets():
    """Emits an event for the chosen asset ("bears", "named", "both"); extra from conf."""

    def publisher(asset: Asset, chosen: tuple[str, ...]):
        @task(task_id=f"publish_{chosen[0]}", outlets=[asset])
        def publish(dag_run=None, outlet_events=None):
            if dag_run.conf.get("which", "bears") not in chosen:
                raise AirflowSkipException("not asked for")
            outlet_events[asset].extra = dict(dag_run.conf.get("extra") or {})

        return publish()

    publisher(Asset("file://include/bears"), ("bears", "both"))
    publisher(Asset(name="bears_named"), ("named", "both"))


xdep_test_assets()
