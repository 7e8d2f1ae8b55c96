"""Upstream DAGs for the alert-trigger tests: a failing task with a retry, a slow run, a late DAG.

One file for every upstream, Airflow 2.9 to 3.3: only the imports and a start date differ.
"""

from __future__ import annotations

import time
from datetime import timedelta

try:
    from airflow.sdk import dag, task, task_group

    START_DATE: dict = {}  # Airflow 3: a DAG that runs only when triggered needs none
except ImportError:  # Airflow 2
    import pendulum
    from airflow.decorators import dag, task, task_group

    START_DATE = {"start_date": pendulum.datetime(2026, 1, 1, tz="UTC")}


@dag(schedule=None, catchup=False, tags=["xdep-test"], **START_DATE)
def xdep_alert_flaky():
    """prepare -> grp.boom (fails both of its tries) -> after (upstream_failed)."""

    @task
    def prepare():
        return "ok"

    @task_group
    def grp():
        @task(retries=1, retry_delay=timedelta(seconds=1))
        def boom():
            raise RuntimeError("asked to fail")

        return boom()

    @task
    def after():
        return "never"

    prepare() >> grp() >> after()


xdep_alert_flaky()


@dag(schedule=None, catchup=False, tags=["xdep-test"], **START_DATE)
def xdep_alert_slow():
    """nap sleeps conf['sleep'] seconds (default 20)."""

    @task
    def nap(dag_run=None):
        time.sleep(float(dag_run.conf.get("sleep", 20)))

    nap()


xdep_alert_slow()


@dag(schedule=None, catchup=False, tags=["xdep-test"], **START_DATE)
def xdep_alert_late():
    """Succeeds at once when triggered: the deadline watcher's 'met' case; never triggered = always late."""

    @task
    def land():
        return "landed"

    land()


xdep_alert_late()
