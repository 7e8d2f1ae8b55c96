"""Upstream (Airflow 2.11) DAGs for the integration tests; same shape as the Airflow 3 ones."""

from __future__ import annotations

import os
import time

import pendulum
from airflow.datasets import Dataset
from airflow.decorators import dag, task, task_group


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["xdep-test"])
def xdep_test_producer():
    """extract -> grp.(a, b) -> load; conf: sleep (extract), load_sleep, fail (load fails), gate (extract
    waits until that file exists: the tests release a held run when their waits are in place)."""

    @task
    def extract(dag_run=None):
        time.sleep(float(dag_run.conf.get("sleep", 0)))
        gate, deadline = dag_run.conf.get("gate"), time.monotonic() + 900
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.2)

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


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["xdep-test"])
def xdep_test_assets():
    """Emits dataset events with the conf's extra."""

    @task(outlets=[Dataset("file://include/bears")])
    def publish(dag_run=None, outlet_events=None):
        outlet_events[Dataset("file://include/bears")].extra = dict(dag_run.conf.get("extra") or {})

    publish()


xdep_test_assets()
