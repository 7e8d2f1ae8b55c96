"""Upstream (Airflow 3) DAGs for the integration tests; they know nothing of the downstream."""

from __future__ import annotations

import os
import time

from airflow.sdk import Asset, dag, task, task_group
from airflow.sdk.exceptions import AirflowSkipException


@dag(schedule=None, catchup=False, tags=["xdep-test"])
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


@dag(schedule=None, catchup=False, tags=["xdep-test"])
def xdep_test_assets():
    """Emits asset events; conf: which ("bears", "named", "both"), extra (dict) for the events.

    One task per asset: a skipped task emits no event, so only the chosen assets get one.
    """

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
