"""Upstream DAGs for the busy-upstream (feed) tests: they declare the assets; history is seeded."""

from __future__ import annotations

from airflow.sdk import Asset, dag, task

BUSY = Asset("s3://xdep-feed/orders.parquet")
QUIET = Asset("s3://xdep-feed/customers.parquet")
QUIET2 = Asset("s3://xdep-feed/suppliers.parquet")


@dag(schedule=None, catchup=False, is_paused_upon_creation=True, tags=["xdep-test"])
def xdep_feed_busy():
    """Never run by the scheduler (paused): its thousands of runs are seeded into the DB."""

    @task(outlets=[BUSY, QUIET, QUIET2])
    def publish():
        pass

    publish()


xdep_feed_busy()
