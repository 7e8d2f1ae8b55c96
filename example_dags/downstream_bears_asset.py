"""DOWNSTREAM deployment (team B): consume team A's ``file://include/bears`` asset events by pulling.

``load_bears`` reads the path the upstream producer put in each event's ``extra``.
``bears_bridge`` re-emits each upstream event as a local ``local://bears`` event, and two local
DAGs are scheduled on it: one pull fans out to every local consumer.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

from xdep_sensors import RemoteAssetSensor

LOCAL_BEARS = Asset("local://bears")
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(schedule="@hourly", start_date=START, catchup=False, max_active_runs=1, tags=["xdep-example"])
def load_bears():
    wait = RemoteAssetSensor(
        task_id="wait_for_bears",
        remote_conn_id="upstream_airflow",
        asset_uri="file://include/bears",
        poke_interval=30,
        timeout=60 * 60,
    )

    @task
    def load(events: list[dict]) -> list[str]:
        return [event["extra"]["path"] for event in events]

    load(wait.output)


load_bears()


@dag(schedule="@hourly", start_date=START, catchup=False, max_active_runs=1, tags=["xdep-example"])
def bears_bridge():
    RemoteAssetSensor(
        task_id="bridge_bears",
        remote_conn_id="upstream_airflow",
        asset_uri="file://include/bears",
        outlets=[LOCAL_BEARS],
        poke_interval=30,
        timeout=60 * 60,
    )


bears_bridge()


@dag(schedule=[LOCAL_BEARS], start_date=START, catchup=False, tags=["xdep-example"])
def bears_dashboard():
    @task
    def refresh(triggering_asset_events=None) -> None:
        for event in triggering_asset_events[LOCAL_BEARS]:
            print(
                "refresh from",
                event.extra["path"],
                "upstream event",
                event.extra["xdep_upstream"]["event_id"],
            )

    refresh()


bears_dashboard()


@dag(schedule=[LOCAL_BEARS], start_date=START, catchup=False, tags=["xdep-example"])
def bears_archive():
    @task
    def archive(triggering_asset_events=None) -> None:
        for event in triggering_asset_events[LOCAL_BEARS]:
            print("archive", event.extra["path"])

    archive()


bears_archive()
