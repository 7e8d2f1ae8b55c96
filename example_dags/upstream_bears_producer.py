"""UPSTREAM deployment (team A). Unchanged by xdep_sensors: it holds no downstream token.

It publishes ``file://include/bears`` with the path of what it wrote in the event's ``extra``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

BEARS = Asset("file://include/bears")


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["xdep-example"],
)
def bears_producer():
    @task
    def extract() -> list[str]:
        return ["grizzly", "polar", "panda"]

    @task
    def transform(bears: list[str]) -> list[str]:
        return sorted(b.title() for b in bears)

    @task(outlets=[BEARS])
    def publish(bears: list[str], outlet_events=None, ds=None) -> None:
        outlet_events[BEARS].extra = {"path": f"s3://team-a/bears/{ds}.csv", "rows": len(bears)}

    publish(transform(extract()))


bears_producer()
