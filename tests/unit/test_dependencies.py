"""The Remote dependencies page's data and page, without a server: declared dependencies from real
serialized DAGs, the per-connection upstream read (shared, cached, time-limited), the status of each
item, the page's escaping and the routes' access rule. Against real deployments:
tests/integration/test_versions_downstream.py (``test_remote_dependencies_*``) and test_ui_browser.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import DAG, Asset
from airflow.serialization.serialized_objects import DagSerialization
from fastapi.testclient import TestClient

from xdep_sensors import RemoteAirflowHook, RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.plugins import dependencies
from xdep_sensors.plugins import page as ui
from xdep_sensors.plugins.dependencies import (
    UpstreamFacts,
    compose,
    sensor_dependencies,
    wanted,
    watcher_dependency,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def serialized() -> dict:
    with DAG("down", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        RemoteDagRunSensor(
            task_id="run",
            remote_conn_id="team_a",
            external_dag_id="producer",
            task_ids=["load"],
            failed_states=["failed"],
            poke_interval=5,
        )
        RemoteDagRunSensor(
            task_id="free",
            remote_conn_id="team_a",
            external_dag_id="{{ params.up }}",
            start_from_trigger=True,
            end_from_trigger=True,
        )
        RemoteAssetSensor(
            task_id="asset",
            remote_conn_id="team_b",
            assets=["s3://x", Asset("s3://y")],
            require="any",
            deferrable=False,
            mode="reschedule",
        )
    return DagSerialization.to_dict(dag)


class TestDeclared:
    def test_every_sensor_of_a_serialized_dag_with_its_target_and_mode(self):
        items = {i["task_id"]: i for i in sensor_dependencies([("down", serialized())])}
        assert set(items) == {"run", "free", "asset"}
        run = items["run"]
        assert (run["kind"], run["dag_id"], run["remote_conn_id"], run["mode"]) == (
            "dag_run_sensor",
            "down",
            "team_a",
            "deferrable",
        )
        assert run["upstream"]["external_dag_id"] == "producer" and run["upstream"]["task_ids"] == ["load"]
        assert run["upstream"]["failed_states"] == ["failed"]
        assert items["free"]["mode"] in (
            "worker-free",
            "deferrable, ends in the triggerer",
        )  # 3.3+: worker-free
        asset = items["asset"]
        assert (asset["kind"], asset["mode"], asset["upstream"]["require"]) == (
            "asset_sensor",
            "reschedule",
            "any",
        )
        assert [r["uri"] for r in asset["upstream"]["assets"]] == ["s3://x", "s3://y/"]

    def test_a_dag_serialized_by_an_earlier_version_still_shows_its_templated_fields(self):
        data = serialized()
        for node in data["dag"]["tasks"]:
            node["__var"].pop("xdep_dependency")
        items = {i["task_id"]: i for i in sensor_dependencies([("down", data)])}
        assert items["run"]["upstream"]["external_dag_id"] == "producer"
        assert (items["asset"]["mode"], items["asset"]["upstream"]["assets"]) == ("reschedule", [])

    def test_other_operators_are_not_dependencies(self):
        data = serialized()
        data["dag"]["tasks"].append(
            {
                "__type": "operator",
                "__var": {
                    "task_id": "x",
                    "task_type": "BashOperator",
                    "_task_module": "airflow.operators.bash",
                },
            }
        )
        assert len(sensor_dependencies([("down", data)])) == 3

    def test_a_watcher_lists_its_assets_and_the_dags_they_schedule(self):
        item = watcher_dependency(
            "xdep_sensors.triggers.RemoteAssetEventTrigger",
            {"remote_conn_id": "team_a", "asset_uri": "s3://up", "poll_interval": 30},
            [{"uri": "s3://local", "name": "local", "dags": ["b", "a"]}],
        )
        assert (item["trigger"], item["upstream"], item["schedules"]) == (
            "RemoteAssetEventTrigger",
            {"asset_uri": "s3://up"},
            ["a", "b"],
        )

    def test_upstream_reads_skip_templated_targets(self):
        items = sensor_dependencies([("down", serialized())])
        assert wanted(items) == {
            "team_a": {"dags": {"producer"}, "assets": set()},
            "team_b": {"dags": set(), "assets": {"s3://x", "s3://y/"}},
        }


def _facts(**over):
    return {
        "conn_id": "team_a",
        "host": "https://up.example",
        "reachable": True,
        "authenticated": True,
        "api": "v2",
        "version": "3.3.2",
        "checked_at": NOW.isoformat(),
        "dags": {},
        "assets": {},
        **over,
    }


class TestUpstreamFacts:
    @pytest.fixture
    def reads(self, monkeypatch):
        calls = []
        monkeypatch.setattr(
            dependencies,
            "_connection_config",
            lambda conn_id: SimpleNamespace(
                base_url="https://user:pw@up.example/x?token=1", ui_base="https://up.example/x", auth=""
            ),
        )
        monkeypatch.setattr(
            RemoteAirflowHook,
            "client_for",
            staticmethod(lambda config: SimpleNamespace(upstream_version=None)),
        )

        async def read(client, dags, assets):
            calls.append((sorted(dags), sorted(assets)))
            await asyncio.sleep(0)
            return {
                "reachable": True,
                "authenticated": True,
                "version": "3.3.2",
                "api": "v2",
                "dags": {},
                "assets": {},
            }

        monkeypatch.setattr(dependencies, "read_upstream", read)
        return calls

    async def test_concurrent_viewers_share_one_read_and_it_is_cached(self, reads):
        clock = [0.0]
        facts = UpstreamFacts(ttl=30, clock=lambda: clock[0])
        got = await asyncio.gather(*(facts.get("team_a", {"producer"}, set()) for _ in range(20)))
        assert len(reads) == 1 and all(g == got[0] for g in got)
        assert got[0]["host"] == "https://up.example/x"  # no user-info, no query
        clock[0] = 29
        await facts.get("team_a", {"producer"}, set())
        assert len(reads) == 1
        clock[0] = 31
        await facts.get("team_a", {"producer"}, set())
        assert len(reads) == 2

    async def test_a_new_target_reads_again(self, reads):
        facts = UpstreamFacts(ttl=30, clock=lambda: 0.0)
        await facts.get("team_a", {"producer"}, set())
        await facts.get("team_a", {"producer"}, {"s3://x"})
        assert reads == [(["producer"], []), (["producer"], ["s3://x"])]

    async def test_an_upstream_that_does_not_answer_is_unreachable_within_the_time_limit(
        self, reads, monkeypatch
    ):
        hang = asyncio.Event()

        async def never(client, dags, assets):
            await hang.wait()

        monkeypatch.setattr(dependencies, "read_upstream", never)
        got = await UpstreamFacts(time_limit=0.05).get("team_a", {"producer"}, set())
        assert (got["reachable"], got["error"]) == (False, "no answer within 0.05 s")

    async def test_refused_credentials_mean_reached_even_before_the_version_is_known(
        self, reads, monkeypatch
    ):
        """Behind MWAA every call, the version's too, is signed: a refusal still means AWS answered."""
        from xdep_sensors.errors import AuthenticationError

        async def refused(client, dags, assets):
            raise AuthenticationError("AWS rejected the request signature", status=403)

        monkeypatch.setattr(dependencies, "read_upstream", refused)
        got = await UpstreamFacts().get("team_a", {"producer"}, set())
        assert (got["reachable"], got["authenticated"], got["version"]) == (True, False, None)

    async def test_an_unexpected_error_shows_its_type_only(self, reads, monkeypatch):
        async def broken(client, dags, assets):
            raise RuntimeError("secret-token-123 in a message")

        monkeypatch.setattr(dependencies, "read_upstream", broken)
        got = await UpstreamFacts().get("team_a", {"producer"}, set())
        assert (
            got["error"]
            == "unexpected RuntimeError reading the upstream; the API server's log has the details"
        )

    async def test_a_missing_connection_says_so(self, monkeypatch):
        def missing(conn_id):
            raise type("AirflowNotFoundException", (Exception,), {})("nope")

        monkeypatch.setattr(dependencies, "_connection_config", missing)
        got = await UpstreamFacts().get("nope", set(), set())
        assert (
            got["error"]
            == "connection 'nope' does not exist in this deployment: create it (type remote_airflow)"
        )


class FakeFacts:
    def __init__(self, by_conn):
        self.by_conn = by_conn

    async def get(self, conn_id, dags, assets):
        return self.by_conn[conn_id]


class TestCompose:
    async def test_status_and_what_the_upstream_shows_now(self):
        items = {i["task_id"]: i for i in sensor_dependencies([("down", serialized())])}
        items["run"]["in_flight"] = [
            {"run_id": "r9", "state": "deferred", "since": NOW.isoformat(), "target": {}}
        ]
        items["free"]["recent"] = [{"run_id": "r1", "state": "failed", "end_date": NOW.isoformat()}]
        success = {
            "run_id": "p1",
            "state": "success",
            "run_after": NOW.isoformat(),
            "end_date": (NOW - timedelta(minutes=10)).isoformat(),
        }
        facts = FakeFacts(
            {
                "team_a": _facts(
                    dags={"producer": {"latest": success, "last_success": success, "url": "https://up/p1"}}
                ),
                "team_b": _facts(reachable=False, error="no answer within 5 s"),
            }
        )
        body = await compose({"sensors": list(items.values()), "watchers": []}, facts, now=NOW)
        got = {i["task_id"]: i for i in body["dependencies"]}
        assert got["run"]["status"] == "waiting"
        assert (
            got["run"]["upstream_now"]["lag_s"] == 600.0
            and got["run"]["upstream_now"]["url"] == "https://up/p1"
        )
        assert got["free"]["status"] == "failed"
        assert (got["asset"]["status"], got["asset"]["upstream_now"]) == (
            "unreachable",
            {"error": "no answer within 5 s", "problem": "unreachable"},
        )
        assert "dags" not in body["upstreams"]["team_a"]  # the health line, not the raw listing
        refused = _facts(reachable=True, authenticated=False, error="authentication failed for conn 'team_b'")
        body = await compose(
            {"sensors": [items["asset"]], "watchers": []}, FakeFacts({"team_b": refused}), now=NOW
        )
        assert body["dependencies"][0]["status"] == "auth failed"
        json.dumps(body)

    def test_the_page_escapes_everything_and_links_both_sides(self):
        evil = "<script>alert(1)</script>"
        item = {
            "kind": "dag_run_sensor",
            "dag_id": evil,
            "task_id": "t",
            "remote_conn_id": "team_a",
            "mode": "deferrable",
            "upstream": {"external_dag_id": evil},
            "in_flight": [],
            "recent": [],
            "status": "ok",
            "upstream_now": {
                "latest_run": {"run_id": evil, "state": "success"},
                "url": "https://up/r",
                "last_success": None,
                "lag_s": None,
            },
        }
        page = ui.render(
            {"generated_at": NOW.isoformat(), "upstreams": {"team_a": _facts()}, "dependencies": [item]},
            airflow_root="/base",
        )
        assert evil not in page and "&lt;script&gt;" in page
        assert 'href="/base/dags/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" target=_top' in page
        assert 'href="https://up/r"' in page and "Airflow 3.3.2 (API v2), authenticated" in page


class TestRoutes:
    @pytest.fixture
    def client(self, monkeypatch):
        from airflow.api_fastapi.core_api.security import get_user

        seen = {}

        def read(dag_ids, session):
            seen["dag_ids"] = dag_ids
            return {
                "sensors": [
                    i for i in sensor_dependencies([("down", serialized())]) if i["dag_id"] in dag_ids
                ],
                "watchers": [],
            }

        monkeypatch.setattr(ui, "readable_dag_ids", lambda user: {"down"} if user.name == "reader" else set())
        monkeypatch.setattr(ui, "read_deployment", read)
        monkeypatch.setattr(ui, "FACTS", FakeFacts({"team_a": _facts(), "team_b": _facts()}))

        class Session:
            def __enter__(self):
                return None

            def __exit__(self, *exc):
                return False

        monkeypatch.setattr("airflow.utils.session.create_session", lambda: Session())
        test_client = TestClient(ui.app)
        test_client.seen = seen
        test_client.as_user = lambda name: ui.app.dependency_overrides.__setitem__(
            get_user, lambda: SimpleNamespace(name=name)
        )
        yield test_client
        ui.app.dependency_overrides.clear()

    def test_without_a_user_the_routes_refuse(self, client):
        for path in ("/api/dependencies", "/dependencies"):
            assert client.get(path).status_code in (401, 403)

    def test_a_user_sees_only_the_dags_they_may_read(self, client):
        client.as_user("reader")
        body = client.get("/api/dependencies").json()
        assert client.seen["dag_ids"] == {"down"} and len(body["dependencies"]) == 3
        assert [
            i["task_id"]
            for i in client.get("/api/dependencies", params={"q": "s3://x"}).json()["dependencies"]
        ] == ["asset"]
        client.as_user("nobody")
        assert client.get("/api/dependencies").json()["dependencies"] == []
        assert "No remote dependency matches." in client.get("/dependencies").text
