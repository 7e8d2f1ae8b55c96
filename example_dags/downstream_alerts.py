"""DOWNSTREAM deployment (team B): Astro-alert-style triggers, pulled. One remediation DAG for all alerts.

Each alert is a local asset updated by a watcher on team A's ``bears_producer``: a failed task (after
its retries), a run still going after two hours, a task running over 20 minutes, and no successful
run by 06:30 Amsterdam time. ``bears_fallback`` starts on any of them.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from xdep_sensors.triggers import (
    RemoteDagRunDeadlineTrigger,
    RemoteDagRunDurationTrigger,
    RemoteTaskInstanceEventTrigger,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")
UP = "upstream_airflow"


def alert(name: str, trigger) -> Asset:
    return Asset(
        f"xdep://bears_producer/{name}",
        watchers=[AssetWatcher(name=f"bears_producer_{name}", trigger=trigger)],
    )


TASK_FAILED = alert(
    "task_failed",
    RemoteTaskInstanceEventTrigger(remote_conn_id=UP, external_dag_id="bears_producer", states=["failed"]),
)
RUN_SLOW = alert(
    "run_slow",
    RemoteDagRunDurationTrigger(
        remote_conn_id=UP, external_dag_id="bears_producer", max_duration=timedelta(hours=2)
    ),
)
TASK_SLOW = alert(
    "task_slow",
    RemoteDagRunDurationTrigger(
        remote_conn_id=UP, external_dag_id="bears_producer", max_duration=1200, task_ids=["produce"]
    ),
)
LATE = alert(
    "late",
    RemoteDagRunDeadlineTrigger(
        remote_conn_id=UP,
        external_dag_id="bears_producer",
        deadline="30 6 * * *",
        timezone="Europe/Amsterdam",
    ),
)


@dag(
    schedule=(TASK_FAILED | RUN_SLOW | TASK_SLOW | LATE),
    start_date=START,
    catchup=False,
    tags=["xdep-example"],
)
def bears_fallback():
    @task
    def describe(triggering_asset_events=None) -> list[str]:
        """Say what went wrong upstream, with a link; a real fallback would load yesterday's bears here."""
        out = []
        for asset, events in triggering_asset_events.items():
            for event in events:
                p = event.extra["payload"]
                what = p.get("task_instance") or p.get("run") or p.get("last_run") or {}
                out.append(
                    f"{asset.uri}: {p.get('deadline') or what.get('run_id')} {what.get('url', '')}".strip()
                )
        print("\n".join(out))
        return out

    describe()


bears_fallback()
