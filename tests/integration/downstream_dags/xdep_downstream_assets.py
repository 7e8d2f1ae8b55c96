"""Downstream DAGs with RemoteAssetSensor, run with ``dag.test()`` by the integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, DayWindow, RollupMapper, StartOfDayMapper, task

from xdep_sensors import RemoteAssetSensor

VARIANTS = {"defer": {"deferrable": True}, "poke": {"deferrable": False, "mode": "poke"}}
SELECTORS = {
    "uri": {"asset_uri": "file://include/bears"},
    "name": {"asset_name": "bears_named"},
    "all": {"assets": [Asset("file://include/bears"), "bears_named"], "require": "all"},
    "any": {"assets": ["file://include/bears", "bears_named"], "require": "any"},
    "missing": {"asset_uri": "file://include/beers"},
    "bridge": {"asset_uri": "file://include/bears", "outlets": [Asset("local://bears")]},
    "partition": {"asset_uri": "file://include/bears", "partition_key": "{{ params.partition }}"},
    # a day of hourly upstream partitions, rolled up as Airflow's scheduler rolls them up
    "rollup": {
        "asset_uri": "file://include/bears",
        "partition_key": "{{ params.partition }}",
        "partition_mapper": RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow()),
    },
}


@task
def record(events, params=None):
    Path(params["out"]).write_text(json.dumps(events))


for selector, selector_kwargs in SELECTORS.items():
    for variant, variant_kwargs in VARIANTS.items():
        with DAG(
            f"xdep_ds_asset_{selector}_{variant}",
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            params={"conn": "up_v2", "partition": "", "out": "/dev/null"},
            tags=["xdep-test"],
        ):
            wait = RemoteAssetSensor(
                task_id="wait",
                remote_conn_id="{{ params.conn }}",
                poke_interval=1,
                timeout=240,
                **selector_kwargs,
                **variant_kwargs,
            )
            record(wait.output)

# Two local consumers of the bridged asset: one upstream pull fans out to both.
for name in ("xdep_local_consumer_a", "xdep_local_consumer_b"):
    with DAG(
        name,
        schedule=[Asset("local://bears")],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        tags=["xdep-test"],
    ):
        record.override(task_id="noop")([])
