"""DOWNSTREAM deployment (team B): DAGs *scheduled* by upstream events, with no sensor and no token upstream.

``bears_consumer`` is the classic ``schedule=[Asset(...)]`` consumer made cross-deployment by one
watcher. ``bears_remediation`` starts whenever team A's ``bears_producer`` run fails.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from xdep_sensors.triggers import RemoteAssetEventTrigger, RemoteDagRunEventTrigger

START = pendulum.datetime(2026, 1, 1, tz="UTC")

BEARS = Asset(
    "file://include/bears",
    watchers=[
        AssetWatcher(
            name="bears_upstream",
            trigger=RemoteAssetEventTrigger(
                remote_conn_id="upstream_airflow", asset_uri="file://include/bears", poll_interval=30
            ),
        )
    ],
)

PRODUCER_FAILED = Asset(
    "xdep://bears_producer/failed",
    watchers=[
        AssetWatcher(
            name="bears_producer_failed",
            trigger=RemoteDagRunEventTrigger(
                remote_conn_id="upstream_airflow",
                external_dag_id="bears_producer",
                states=["failed"],
                poll_interval=60,
            ),
        )
    ],
)


@dag(schedule=[BEARS], start_date=START, catchup=False, tags=["xdep-example"])
def bears_consumer():
    @task
    def load(triggering_asset_events=None) -> list[str]:
        return [e.extra["payload"]["event"]["extra"].get("path") for e in triggering_asset_events[BEARS]]

    load()


bears_consumer()


@dag(schedule=[PRODUCER_FAILED], start_date=START, catchup=False, tags=["xdep-example"])
def bears_remediation():
    @task
    def open_incident(triggering_asset_events=None) -> None:
        for event in triggering_asset_events[PRODUCER_FAILED]:
            run = event.extra["payload"]["run"]
            print(
                f"upstream {run['dag_id']} run {run['run_id']} failed at {run['end_date']}: "
                "opening an incident"
            )

    open_incident()


bears_remediation()
