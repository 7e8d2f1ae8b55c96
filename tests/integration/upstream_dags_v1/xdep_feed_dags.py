"""Upstream (Airflow 2) DAGs for the busy-upstream (feed) tests: they declare the datasets."""

from __future__ import annotations

import pendulum
from airflow.datasets import Dataset
from airflow.decorators import dag, task

BUSY = Dataset("s3://xdep-feed/orders.parquet")
QUIET = Dataset("s3://xdep-feed/customers.parquet")
QUIET2 = Dataset("s3://xdep-feed/suppliers.parquet")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    tags=["xdep-test"],
)
def xdep_feed_busy():
    """Never run by the scheduler (paused): its thousands of runs are seeded into the DB."""

    @task(outlets=[BUSY, QUIET, QUIET2])
    def publish():
        pass

    publish()


xdep_feed_busy()
