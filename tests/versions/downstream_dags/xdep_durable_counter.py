"""A downstream DAG scheduled by the test-only counter watcher (tests/versions/counter_trigger.py)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetWatcher, dag, task

from tests.versions.counter_trigger import CounterTrigger

COUNTER = Asset(
    "xdep://durable/counter",
    watchers=[AssetWatcher(name="durable_counter", trigger=CounterTrigger(key="tests:durable:counter"))],
)


@dag(
    schedule=[COUNTER], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["xdep-test"]
)
def xdep_durable_counter():
    @task
    def noop() -> None:
        pass

    noop()


xdep_durable_counter()
