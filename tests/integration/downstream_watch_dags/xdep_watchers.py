"""A real downstream deployment's DAGs, scheduled by upstream events through AssetWatcher triggers."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.triggers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger

START = pendulum.datetime(2026, 1, 1, tz="UTC")
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
NAMED = Asset(
    "xdep://bears_named",
    watchers=[
        AssetWatcher(
            name="bears_named_upstream",
            trigger=RemoteAssetEventTrigger(remote_conn_id="up", asset_name="bears_named", poll_interval=2),
        )
    ],
)
PRODUCER_DONE = Asset(
    "xdep://producer-success",
    watchers=[
        AssetWatcher(
            name="producer_success",
            trigger=RemoteDagRunEventTrigger(
                remote_conn_id="up", external_dag_id="xdep_test_producer", states=["success"], poll_interval=2
            ),
        )
    ],
)


@dag(schedule=[BEARS], start_date=START, catchup=False, tags=["xdep-test"])
def xdep_watch_bears():
    @task
    def show(triggering_asset_events=None) -> list:
        return [e.extra["payload"]["event"]["extra"] for e in triggering_asset_events[BEARS]]

    show()


xdep_watch_bears()


@dag(schedule=[NAMED], start_date=START, catchup=False, tags=["xdep-test"])
def xdep_watch_named():
    @task
    def show(triggering_asset_events=None) -> list:
        return [e.extra["payload"]["event"]["id"] for e in triggering_asset_events[NAMED]]

    show()


xdep_watch_named()


@dag(schedule=[PRODUCER_DONE], start_date=START, catchup=False, tags=["xdep-test"])
def xdep_watch_producer():
    @task
    def show(triggering_asset_events=None) -> list:
        return [e.extra["payload"]["run"]["run_id"] for e in triggering_asset_events[PRODUCER_DONE]]

    show()


xdep_watch_producer()


@dag(schedule=None, start_date=START, catchup=False, max_active_runs=1, tags=["xdep-test"])
def xdep_restart_asset_sensor():
    """A deferred RemoteAssetSensor that must survive a triggerer restart (since: the run's conf)."""
    RemoteAssetSensor(
        task_id="wait",
        remote_conn_id="up",
        asset_uri="file://include/bears",
        since="{{ dag_run.conf['since'] }}",
        poke_interval=2,
        timeout=300,
    )


xdep_restart_asset_sensor()


@dag(schedule=None, start_date=START, catchup=False, tags=["xdep-test"])
def xdep_restart_run_sensor():
    """A deferred RemoteDagRunSensor that must survive an upstream api-server restart."""
    RemoteDagRunSensor(
        task_id="wait",
        remote_conn_id="up",
        external_dag_id="xdep_test_producer",
        run_id="{{ dag_run.conf['run_id'] }}",
        poke_interval=2,
        timeout=300,
    )


xdep_restart_run_sensor()
