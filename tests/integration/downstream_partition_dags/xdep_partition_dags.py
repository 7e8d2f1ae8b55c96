"""A real downstream (Airflow 3.3) that bridges upstream partitions into its own partitioned scheduling.

``xdep_p_bridge`` waits for the upstream bears events of the partition its conf names and re-emits each
onto ``local://bears_by_hour`` with the upstream key; ``xdep_p_hourly`` (``PartitionedAssetTimetable``,
Airflow's identity mapper) runs once per such key; ``xdep_p_daily`` rolls the hours up into their day
(``RollupMapper``: two hours of a day are enough here, ``MinimumCount(2)``).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import (
    DAG,
    Asset,
    DayWindow,
    MinimumCount,
    PartitionedAssetTimetable,
    RollupMapper,
    StartOfDayMapper,
    task,
)

from xdep_sensors import RemoteAssetSensor

BY_HOUR = Asset("local://bears_by_hour")
START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("xdep_p_bridge", schedule=None, start_date=START, tags=["xdep-test"]):
    RemoteAssetSensor(
        task_id="wait",
        remote_conn_id="up",
        asset_uri="file://include/bears",
        partition_key="{{ dag_run.conf['partition'] }}",
        since="{{ dag_run.conf['since'] }}",
        outlets=[BY_HOUR],
        poke_interval=1,
        timeout=240,
    )


@task
def consume(dag_run=None):
    return dag_run.partition_key


with DAG("xdep_p_hourly", schedule=PartitionedAssetTimetable(assets=BY_HOUR), start_date=START):
    consume()

with DAG(
    "xdep_p_daily",
    schedule=PartitionedAssetTimetable(
        assets=BY_HOUR,
        default_partition_mapper=RollupMapper(
            upstream_mapper=StartOfDayMapper(), window=DayWindow(), wait_policy=MinimumCount(2)
        ),
    ),
    start_date=START,
):
    consume()

# a deferred roll-up wait across deployments: the page and the doctor say which hours have arrived
with DAG("xdep_p_rollup_wait", schedule=None, start_date=START, tags=["xdep-test"]):
    RemoteAssetSensor(
        task_id="wait",
        remote_conn_id="up",
        asset_uri="file://include/bears",
        partition_key="{{ dag_run.conf['day'] }}",
        partition_mapper=RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow()),
        poke_interval=1,
        timeout=600,
    )
