"""A real downstream deployment's alert watchers, on an Airflow 3 upstream (conn ``up``) and an
Airflow 2 one (``up1``), on both as Amazon MWAA environments (``mwaa_v2``, ``mwaa_v1``), and on the
first as a Cloud Composer environment (``composer_v2``).

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


# through Amazon MWAA (the test suite's AWS double in front of the same upstreams): the connections
# mwaa_v2 and mwaa_v1, and through Cloud Composer's front (the Google doubles): composer_v2; the task
# and duration alerts (the deadline ones only on the direct connections)
CLOUD_ALERTS = ("task-failed", "upstream-failed", "run-slow", "task-slow")
WATCHED = [(api, conn, alerts(api, conn)) for api, conn in (("v2", "up"), ("v1", "up1"))] + [
    (api, api, {k: v for k, v in alerts(api, api).items() if k in CLOUD_ALERTS})
    for api in ("mwaa_v2", "mwaa_v1", "composer_v2")
]

for api, conn, triggers in WATCHED:
    for name, trigger in triggers.items():
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
