"""Upstream DAGs for the busy-upstream (feed) tests: they declare the assets (Airflow 2: datasets);
history is seeded. One file for every upstream, Airflow 2.9 to 3.3.
"""

from __future__ import annotations

try:
    from airflow.sdk import Asset, dag, task

    START_DATE: dict = {}  # Airflow 3: a DAG that runs only when triggered needs none
except ImportError:  # Airflow 2: assets are datasets
    import pendulum
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import dag, task

    START_DATE = {"start_date": pendulum.datetime(2026, 1, 1, tz="UTC")}

BUSY = Asset("s3://xdep-feed/orders.parquet")
QUIET = Asset("s3://xdep-feed/customers.parquet")
QUIET2 = Asset("s3://xdep-feed/suppliers.parquet")


@dag(schedule=None, catchup=False, is_paused_upon_creation=True, tags=["xdep-test"], **START_DATE)
def xdep_feed_busy():
    """Never run by the scheduler (paused): its thousands of runs are seeded into the DB."""

    @task(outlets=[BUSY, QUIET, QUIET2])
    def publish():
        pass

    publish()


xdep_feed_busy()
