"""Upstream (Airflow 3) DAGs for the integration tests; they know nothing of the downstream."""

from __future__ import annotations

import time

from airflow.sdk import Asset, dag, task, task_group


@dag(schedule=None, catchup=False, tags=["xdep-test"])
def xdep_test_producer():
    """extract -> grp.(a, b) -> load; conf: sleep (extract), load_sleep, fail (load fails)."""

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
    def load(dag_run=None):
        time.sleep(float(dag_run.conf.get("load_sleep", 0)))
        if dag_run.conf.get("fail"):
            raise RuntimeError("asked to fail")

    extract() >> grp() >> load()


xdep_test_producer()


@dag(schedule=None, catchup=False, tags=["xdep-test"])
def xdep_test_assets():
    """Emits asset events; conf: which ("bears", "named", "both"), extra (dict) for the events."""

    @task(outlets=[Asset("file://include/bears"), Asset(name="bears_named")])
    def publish(dag_run=None, outlet_events=None):
        which = dag_run.conf.get("which", "bears")
        extra = dict(dag_run.conf.get("extra") or {})
        if which in ("bears", "both"):
            outlet_events[Asset("file://include/bears")].extra = extra
        if which in ("named", "both"):
            outlet_events[Asset(name="bears_named")].extra = extra

    publish()


xdep_test_assets()
