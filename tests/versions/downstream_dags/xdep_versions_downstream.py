"""A real downstream deployment's DAGs for the version matrix (lowest and highest Airflow 3).

Both sensors deferrable (in the triggerer), worker-free (``start_from_trigger`` + ``end_from_trigger``)
and in poke mode (in a worker), a task-group wait, and a watcher; all poll the connection ``up`` (set
by the test as ``AIRFLOW_CONN_UP``; ``up_bad`` has a wrong password).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.triggers import RemoteAssetEventTrigger

START = pendulum.datetime(2026, 1, 1, tz="UTC")
FREE = {"deferrable": True, "start_from_trigger": True, "end_from_trigger": True}
VARIANTS = {"defer": {"deferrable": True}, "poke": {"deferrable": False, "mode": "poke"}, "free": FREE}
BEARS = Asset(
    "file://include/bears",
    watchers=[
        AssetWatcher(
            name="bears_upstream",
            trigger=RemoteAssetEventTrigger(
                remote_conn_id="up", asset_uri="file://include/bears", poll_interval=2
            ),
        )
    ],
)

for variant, kwargs in VARIANTS.items():
    with DAG(f"xdep_v_run_{variant}", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
        RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id="up",
            external_dag_id="xdep_test_producer",
            run_id="{{ dag_run.conf['run_id'] }}",
            poke_interval=2,
            timeout=300,
            **kwargs,
        )
    with DAG(f"xdep_v_asset_{variant}", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
        RemoteAssetSensor(
            task_id="wait",
            remote_conn_id="up",
            asset_uri="file://include/bears",
            since="{{ dag_run.conf['since'] }}",
            poke_interval=2,
            timeout=300,
            **kwargs,
        )

# worker-free: an upstream run that fails skips this sensor (skipped_states), one that fails the other
with DAG("xdep_v_run_free_skip", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        failed_states=[],
        skipped_states=["failed"],
        poke_interval=2,
        timeout=300,
        **FREE,
    )

# worker-free with wrong credentials (connection ``up_bad``): the trigger fails the task, saying what to fix
with DAG("xdep_v_run_free_badauth", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up_bad",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        poke_interval=2,
        timeout=300,
        **FREE,
    )

# on the Remote dependencies page only (never triggered): a wait on the Airflow 2.11 upstream (``up_v1``)
with DAG("xdep_v_run_v1", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up_v1",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        poke_interval=2,
        timeout=300,
    )

# on the page only: an upstream that does not answer (``up_dead``: a port nobody listens on)
with DAG("xdep_v_run_dead", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up_dead",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        poke_interval=2,
        timeout=300,
    )

with DAG("xdep_v_group_defer", schedule=None, start_date=START, catchup=False, tags=["xdep-test"]):
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        task_group_id="grp",
        poke_interval=2,
        timeout=300,
    )

with DAG("xdep_v_watch", schedule=[BEARS], start_date=START, catchup=False, tags=["xdep-test"]):

    @task
    def show(triggering_asset_events=None) -> list:
        return [e.extra["payload"]["event"]["extra"] for e in triggering_asset_events[BEARS]]

    show()
