"""A real downstream deployment's alert watchers, on an Airflow 3 upstream (conn ``up``) and an
Airflow 2 one (``up1``).

Each alert updates its own local asset; the live tests count the asset's events (one per fire).
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from xdep_sensors.triggers import (
    RemoteDagRunDeadlineTrigger,
    RemoteDagRunDurationTrigger,
    RemoteTaskInstanceEventTrigger,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def alerts(api: str, conn: str) -> dict[str, object]:
    return {
        "task-failed": RemoteTaskInstanceEventTrigger(
            remote_conn_id=conn, external_dag_id="xdep_alert_flaky", task_group_id="grp", poll_interval=2
        ),
        "upstream-failed": RemoteTaskInstanceEventTrigger(
            remote_conn_id=conn,
            external_dag_id="xdep_alert_flaky",
            states=["upstream_failed"],
            poll_interval=2,
        ),
        "run-slow": RemoteDagRunDurationTrigger(
            remote_conn_id=conn, external_dag_id="xdep_alert_slow", max_duration=8, poll_interval=2
        ),
        "task-slow": RemoteDagRunDurationTrigger(
            remote_conn_id=conn,
            external_dag_id="xdep_alert_slow",
            max_duration=8,
            task_ids=["nap"],
            poll_interval=2,
        ),
        "late": RemoteDagRunDeadlineTrigger(
            remote_conn_id=conn, external_dag_id="xdep_alert_late", deadline="* * * * *", poll_interval=2
        ),
    }


for api, conn in (("v2", "up"), ("v1", "up1")):
    for name, trigger in alerts(api, conn).items():
        asset = Asset(
            f"xdep://alert/{api}/{name}", watchers=[AssetWatcher(name=f"{api}_{name}", trigger=trigger)]
        )
        with DAG(
            f"xdep_alert_{api}_{name.replace('-', '_')}",
            schedule=[asset],
            start_date=START,
            catchup=False,
            tags=["xdep-test"],
        ):
            EmptyOperator(task_id="remediate")
