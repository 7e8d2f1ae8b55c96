"""Least privilege: what the connection's user may not read is said at the first look, with the fix.

Mocked HTTP; the same behaviours against real FAB per-DAG roles: tests/integration/test_permissions_live.py.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone

import pytest

from tests.helpers import UPSTREAM, upstream_mock, url
from xdep_sensors.client import ClientConfig, RemoteAirflowClient
from xdep_sensors.client.policy import permission_for
from xdep_sensors.core.doctor import diagnose, render
from xdep_sensors.core.probes import AssetProbe, AssetWait, DagRunProbe, DagRunWait
from xdep_sensors.errors import NotVisible, PermissionDenied

FORBIDDEN = {"detail": "Forbidden"}
T = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


def client(login: str | None = "etl_reader") -> RemoteAirflowClient:
    return RemoteAirflowClient(
        ClientConfig(base_url=UPSTREAM, login=login, password="pw", api_version="v2", conn_id="up")
    )


@contextlib.contextmanager
def up(version: str = "3.3.2"):
    """The mocked upstream, exchanging the login for a token."""
    with upstream_mock(version=version) as m:
        m.post(UPSTREAM + "/auth/token", status=201, payload={"access_token": "jwt"}, repeat=True)
        yield m


def dags(*ids: str) -> dict:
    return {"dags": [{"dag_id": d, "is_paused": False} for d in ids], "total_entries": len(ids)}


def asset_json(producers: list[str], last: datetime | None = None) -> dict:
    return {
        "id": 7,
        "uri": "s3://lake/orders",
        "name": "orders",
        "extra": {},
        "producing_tasks": [{"dag_id": d, "task_id": "emit"} for d in producers],
        "last_asset_event": {"id": 99, "timestamp": last.isoformat()} if last else None,
    }


def event_json(event_id: int, when: datetime, source: str | None) -> dict:
    return {
        "id": event_id,
        "asset_id": 7,
        "uri": "s3://lake/orders",
        "name": "orders",
        "extra": {},
        "source_dag_id": source,
        "timestamp": when.isoformat(),
    }


@pytest.mark.parametrize(
    "path, api, says",
    [
        ("/api/v2/dags/orders", "v2", "can_read on DAG:orders"),
        ("/api/v2/dags/orders/dagRuns", "v2", "can_read on DAG:orders and can_read on DAG Runs"),
        ("/api/v2/dags/~/dagRuns/list", "v2", "(DAG:<id>) and can_read on DAG Runs"),
        ("/api/v2/dags/orders/dagRuns/r/taskInstances", "v2", "DAG:orders, DAG Runs and Task Instances"),
        ("/api/v2/dags/orders/tasks", "v2", "can_read on DAG:orders and can_read on Task Instances"),
        ("/api/v2/assets", "v2", "can_read on Assets and on Asset Aliases"),
        ("/api/v2/assets/events", "v2", "can_read on Assets (and on each producing DAG"),
        ("/api/v1/datasets/events", "v1", "can_read on Datasets (and on each producing DAG"),
        ("/api/v1/datasets", "v1", "can_read on Datasets"),
    ],
)
def test_a_403_names_the_permission_its_request_needs(path, api, says):
    assert says in permission_for(UPSTREAM + path + "?limit=1", api)[1]


class TestHiddenDag:
    async def test_a_dag_answering_403_while_the_user_may_list_dags_is_not_found_or_not_readable(self):
        c = client()
        with up() as m:
            m.get(url("/api/v2/dags/orders"), status=403, payload=FORBIDDEN)
            m.get(url("/api/v2/dags"), payload=dags("order", "billing"))
            with pytest.raises(NotVisible) as caught:
                await DagRunProbe(DagRunWait(external_dag_id="orders", run_id="r1"))(c)
        text = str(caught.value)
        assert "DAG 'orders' not found at http://up.test:8080, or not readable by user 'etl_reader'" in text
        assert "close matches: order" in text and "grant user 'etl_reader' read on DAG:orders" in text
        assert "does not exist" not in text
        await c.close()

    async def test_without_check_existence_it_waits_and_says_why(self):
        c = client(login=None)
        with up() as m:
            m.get(url("/api/v2/dags/orders"), status=403, payload=FORBIDDEN, repeat=True)
            m.get(url("/api/v2/dags"), payload=dags("billing"), repeat=True)
            probe = DagRunProbe(DagRunWait(external_dag_id="orders", run_id="r1", check_existence=False))
            decision = await probe(c)
        assert decision.status == "waiting"
        assert "not readable by the connection's token" in decision.message
        assert "waiting for it to appear" in decision.message
        await c.close()

    async def test_a_user_who_may_not_list_dags_either_gets_the_403_as_it_is(self):
        """Airflow 2 answers 403 to a wrong password: then the listing is refused too, and the error says
        which permission the DAG's read needs, and to check the credentials."""
        c = client()
        with up() as m:
            m.get(url("/api/v2/dags/orders"), status=403, payload=FORBIDDEN)
            m.get(url("/api/v2/dags"), status=403, payload=FORBIDDEN)
            with pytest.raises(PermissionDenied) as caught:
                await DagRunProbe(DagRunWait(external_dag_id="orders", run_id="r1"))(c)
        assert not isinstance(caught.value, NotVisible)
        assert "needs can_read on DAG:orders" in str(caught.value) and "credentials" in str(caught.value)
        await c.close()


class TestHiddenProducer:
    async def test_on_3_3_a_producer_the_user_may_not_read_is_said_once_and_the_wait_goes_on(self, caplog):
        c = client()
        probe = AssetProbe(AssetWait(assets=[{"uri": "s3://lake/orders", "name": None}], since=T.isoformat()))
        with up() as m, caplog.at_level(logging.WARNING):
            m.get(url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"])], "total_entries": 1})
            m.get(url("/api/v2/dags"), payload=dags("billing"), repeat=True)
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0}, repeat=True)
            first = await probe(c)
            second = await probe(c)
        assert first.status == second.status == "waiting"
        assert "s3://lake/orders: cannot see producer orders_etl" in first.message
        said = [r.getMessage() for r in caplog.records if "cannot see producer" in r.getMessage()]
        assert len(said) == 1 and "grant user 'etl_reader' can_read on DAG:orders_etl" in said[0]
        dag_listings = [k for k in m.requests if k[1].path == "/api/v2/dags"]
        assert len(dag_listings) == 1  # once, at the first look
        await c.close()

    async def test_a_hidden_source_dag_id_fails_at_the_first_look(self):
        c = client()
        wait = AssetWait(assets=[{"uri": "s3://lake/orders", "name": None}], source_dag_id="orders_etl")
        with up() as m:
            m.get(url("/api/v2/assets"), payload={"assets": [asset_json([])], "total_entries": 1})
            m.get(url("/api/v2/dags"), payload=dags("billing"))
            with pytest.raises(
                NotVisible, match="source_dag_id 'orders_etl'.*not readable by user 'etl_reader'"
            ):
                await AssetProbe(wait)(c)
        await c.close()

    async def test_before_3_3_events_are_not_scoped_so_no_dag_is_listed(self):
        c = client()
        probe = AssetProbe(AssetWait(assets=[{"uri": "s3://lake/orders", "name": None}], since=T.isoformat()))
        with up(version="3.2.2") as m:
            m.get(url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"])], "total_entries": 1})
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0}, repeat=True)
            decision = await probe(c)
        assert "cannot see producer" not in decision.message
        assert not [k for k in m.requests if k[1].path == "/api/v2/dags"]
        await c.close()


class TestDoctor:
    async def test_events_the_listing_hides_fail_the_check_instead_of_no_events_yet(self):
        c = client()
        with up() as m:
            m.get(url("/api/v2/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0}, repeat=True)
            m.get(
                url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"], T)], "total_entries": 1}
            )
            m.get(url("/api/v2/dags"), payload=dags("billing"))
            checks = await diagnose(c, asset_uri="s3://lake/orders")
        asset = checks[-1]
        assert not asset.ok
        assert (
            "events exist that the listing hides from user 'etl_reader': the newest at 2026-12-01"
            in asset.detail
        )
        assert "grant user 'etl_reader' can_read on DAG:orders_etl" in render(checks)
        await c.close()

    async def test_a_visible_newest_event_and_readable_producers_pass(self):
        c = client()
        with up() as m:
            m.get(url("/api/v2/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
            events = {"asset_events": [event_json(99, T, "orders_etl")], "total_entries": 1}
            m.get(url("/api/v2/assets/events"), payload=events, repeat=True)
            m.get(
                url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"], T)], "total_entries": 1}
            )
            m.get(url("/api/v2/dags"), payload=dags("orders_etl"))
            checks = await diagnose(c, asset_uri="s3://lake/orders")
        assert checks[-1].ok, render(checks)
        await c.close()

    async def test_a_dag_answering_403_is_not_said_not_to_exist(self):
        c = client()
        with up() as m:
            m.get(url("/api/v2/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0})
            m.get(url("/api/v2/dags/orders"), status=403, payload=FORBIDDEN)
            m.get(url("/api/v2/dags"), payload=dags("billing"))
            checks = await diagnose(c, dag_id="orders")
        assert not checks[-1].ok and "not readable by user 'etl_reader'" in checks[-1].detail
        assert "does not exist" not in render(checks)
        await c.close()


class TestPage:
    async def test_a_hidden_dag_and_a_hidden_producer_have_their_own_status(self):
        from xdep_sensors.plugins.dependencies import _upstream_now, read_upstream, status

        c = client()
        with up() as m:
            m.post(url("/api/v2/dags/~/dagRuns/list"), payload={"dag_runs": [], "total_entries": 0})
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0})
            m.get(url("/api/v2/dags"), payload=dags("billing"), repeat=True)
            m.get(url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"])], "total_entries": 1})
            m.get(url("/api/v2/assets"), payload={"assets": [], "total_entries": 0})
            facts = await read_upstream(c, {"orders"}, {"s3://lake/orders"})
        now = datetime.now(timezone.utc)
        dag_item = {"upstream": {"external_dag_id": "orders"}}
        asset_item = {"upstream": {"asset_uri": "s3://lake/orders"}}
        dag_item["upstream_now"] = _upstream_now(dag_item, facts, now)
        asset_item["upstream_now"] = _upstream_now(asset_item, facts, now)
        assert (
            status(dag_item) == "cannot see DAG"
            and "can_read on DAG:orders" in dag_item["upstream_now"]["error"]
        )
        assert status(asset_item) == "cannot see producer"
        assert "cannot see producer orders_etl" in asset_item["upstream_now"]["error"]
        await c.close()


async def test_a_failed_look_at_the_producers_is_tried_again_at_the_next_look():
    c = client()
    probe = AssetProbe(AssetWait(assets=[{"uri": "s3://lake/orders", "name": None}], since=T.isoformat()))
    with up() as m:
        m.get(url("/api/v2/assets"), payload={"assets": [asset_json(["orders_etl"])], "total_entries": 1})
        m.get(url("/api/v2/dags"), status=400, payload={"detail": "odd"})  # not a permission: not hidden
        m.get(url("/api/v2/dags"), payload=dags("billing"))
        m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0}, repeat=True)
        with pytest.raises(Exception, match="odd"):
            await probe(c)
        decision = await probe(c)
    assert "cannot see producer orders_etl" in decision.message
    await c.close()
