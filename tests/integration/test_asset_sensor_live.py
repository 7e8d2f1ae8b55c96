"""RemoteAssetSensor end to end against real upstreams; downstream runs through ``dag.test()``."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.test_dag_run_sensor_live import run_downstream

pytestmark = pytest.mark.integration


def clear_cursor(dag_id: str) -> None:
    from airflow.models.variable import Variable

    from xdep_sensors.triggers.state import CursorStore

    store = CursorStore(dag_id, "wait")
    Variable.delete(store.key)
    Variable.delete(store.legacy_key)


def produce_later(upstream, delay: float = 3.0, **conf) -> dict:
    """Trigger the upstream asset DAG after ``delay`` s (while the sensor waits); return its run id box."""
    box: dict = {}

    def go():
        box["run_id"] = upstream.trigger("xdep_test_assets", conf=conf)
        box["state"] = upstream.wait_run(box["run_id"], "xdep_test_assets")

    timer = threading.Timer(delay, go)
    timer.start()
    box["timer"] = timer
    return box


def events_of(out_file) -> list[dict]:
    return json.loads(out_file.read_text())


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_event_after_start_completes_with_extra(upstream, downstream_db, out_file, variant):
    dag_id = f"xdep_ds_asset_uri_{variant}"
    clear_cursor(dag_id)
    box = produce_later(upstream, extra={"path": f"s3://bucket/{variant}.csv"})
    state = run_downstream(dag_id, {"conn": upstream.conn_id, "out": str(out_file)})
    box["timer"].join()
    assert state == "success"
    (event,) = events_of(out_file)
    assert event["extra"] == {"path": f"s3://bucket/{variant}.csv"}
    assert event["uri"] == "file://include/bears" and event["source_run_id"] == box["run_id"]
    assert set(event) >= {
        "id",
        "uri",
        "name",
        "timestamp",
        "extra",
        "source_dag_id",
        "source_task_id",
        "source_run_id",
    }


def test_each_event_consumed_once_even_when_logical_dates_go_backwards(
    upstream, downstream_db, out_file, polling_mode
):
    dag_id = "xdep_ds_asset_uri_defer"
    clear_cursor(dag_id)
    first = produce_later(upstream, extra={"n": 1})
    assert run_downstream(dag_id, {"conn": upstream.conn_id, "out": str(out_file)}) == "success"
    first["timer"].join()
    assert [e["extra"] for e in events_of(out_file)] == [{"n": 1}]

    # The second downstream run is older (a backfill): its data interval would include event 1.
    second = produce_later(upstream, extra={"n": 2})
    older = datetime.now(timezone.utc) - timedelta(days=2)
    assert (
        run_downstream(dag_id, {"conn": upstream.conn_id, "out": str(out_file)}, logical_date=older)
        == "success"
    )
    second["timer"].join()
    assert [e["extra"] for e in events_of(out_file)] == [{"n": 2}]


def test_name_only_asset(upstream_v2, downstream_db, out_file):
    clear_cursor("xdep_ds_asset_name_defer")
    box = produce_later(upstream_v2, which="named", extra={"named": True})
    assert (
        run_downstream("xdep_ds_asset_name_defer", {"conn": upstream_v2.conn_id, "out": str(out_file)})
        == "success"
    )
    box["timer"].join()
    (event,) = events_of(out_file)
    assert event["name"] == "bears_named" and event["extra"] == {"named": True}


def test_many_to_one_requires_all(upstream_v2, downstream_db, out_file, polling_mode):
    dag_id = "xdep_ds_asset_all_defer"
    clear_cursor(dag_id)
    boxes = [
        produce_later(upstream_v2, 2, which="bears", extra={"k": "uri"}),
        produce_later(upstream_v2, 10, which="named", extra={"k": "name"}),
    ]
    assert run_downstream(dag_id, {"conn": upstream_v2.conn_id, "out": str(out_file)}) == "success"
    for box in boxes:
        box["timer"].join()
    assert sorted(e["extra"]["k"] for e in events_of(out_file)) == ["name", "uri"]


def test_missing_asset_fails_fast(upstream, downstream_db, out_file):
    started = datetime.now(timezone.utc)
    assert (
        run_downstream("xdep_ds_asset_missing_defer", {"conn": upstream.conn_id, "out": str(out_file)})
        == "failed"
    )
    assert datetime.now(timezone.utc) - started < timedelta(seconds=60)
    assert not out_file.exists()


def test_bridge_emits_local_events_with_provenance(upstream_v2, downstream_db, out_file):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id = "xdep_ds_asset_bridge_defer"
    clear_cursor(dag_id)
    # two upstream events before the sensor looks: both are consumed by one pull
    now = datetime.now(timezone.utc)
    for n in (1, 2):
        run_id = upstream_v2.trigger("xdep_test_assets", conf={"extra": {"n": n}})
        upstream_v2.wait_run(run_id, "xdep_test_assets")
    assert (
        run_downstream(
            dag_id,
            {"conn": upstream_v2.conn_id, "out": str(out_file)},
            logical_date=now - timedelta(seconds=1),
        )
        == "success"
    )
    upstream_ids = sorted(e["id"] for e in events_of(out_file))
    assert len(upstream_ids) == 2
    with create_session() as session:
        local = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == "local://bears/", AssetEvent.source_dag_id == dag_id)
        ).all()
        extras = [e.extra for e in local]
    mine = sorted(
        (x for x in extras if x.get("xdep_upstream", {}).get("event_id") in upstream_ids),
        key=lambda x: x["n"],
    )
    assert [x["n"] for x in mine] == [1, 2]
    assert mine[0]["xdep_upstream"]["url"] == upstream_v2.server.base_url
