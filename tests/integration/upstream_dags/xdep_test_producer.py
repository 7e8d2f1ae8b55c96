"""Upstream DAGs for the integration tests and the version matrix; they know nothing of the downstream.

One file for every upstream, Airflow 2.9 to 3.3: xdep_test_producer is the same DAG on all of them;
xdep_test_assets has an Airflow 3 shape and an Airflow 2 shape (see there).
"""

from __future__ import annotations

import os
import time

try:
    from airflow.sdk import Asset, dag, task, task_group

    AIRFLOW_3, START_DATE = True, {}  # Airflow 3: a DAG that runs only when triggered needs no start date
except ImportError:  # Airflow 2: assets are datasets
    import pendulum
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import dag, task, task_group

    AIRFLOW_3, START_DATE = False, {"start_date": pendulum.datetime(2026, 1, 1, tz="UTC")}

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.0 and 2
    from airflow.exceptions import AirflowSkipException


def _sleep_and_hold(conf: dict) -> None:
    """conf: sleep (seconds), then gate (a file: wait until it exists, at most 15 minutes)."""
    time.sleep(float(conf.get("sleep", 0)))
    gate, deadline = conf.get("gate"), time.monotonic() + 900
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.2)


@dag(schedule=None, catchup=False, tags=["xdep-test"], **START_DATE)
def xdep_test_producer():
    """extract -> grp.(a, b) -> load; conf: sleep (extract), load_sleep, fail (load fails), gate (extract
    waits until that file exists: the tests release a held run when their waits are in place)."""

    @task
    def extract(dag_run=None):
        _sleep_and_hold(dag_run.conf)

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


if AIRFLOW_3:

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

else:  # Airflow 2 has no named assets: one dataset, one task "publish" (its own shape, kept as it was)

    @dag(schedule=None, catchup=False, tags=["xdep-test"], **START_DATE)
    def xdep_test_assets():
        """Emits dataset events with the conf's extra."""

        @task(outlets=[Asset("file://include/bears")])
        def publish(dag_run=None, outlet_events=None):
            outlet_events[Asset("file://include/bears")].extra = dict(dag_run.conf.get("extra") or {})

        publish()


xdep_test_assets()


try:  # Airflow 3.3+: runs whose partition key the trigger gives (3.2 has only partitioned schedules)
    from airflow.sdk import PartitionedAtRuntime
except ImportError:
    PartitionedAtRuntime = None

if PartitionedAtRuntime is not None:

    @dag(schedule=PartitionedAtRuntime(), catchup=False, tags=["xdep-test"])
    def xdep_test_partitioned():
        """Runs for a partition key given at trigger time; conf: sleep, fail, gate (as xdep_test_producer)."""

        @task
        def produce(dag_run=None):
            _sleep_and_hold(dag_run.conf)
            if dag_run.conf.get("fail"):
                raise RuntimeError("asked to fail")

        produce()

    xdep_test_partitioned()
