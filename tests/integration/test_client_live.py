"""The client and hook against real upstreams: Airflow 3.3 (API v2) and Airflow 2.11 (API v1)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import xdep_sensors
from tests.chaos import ChaosProxy
from xdep_sensors import RemoteAirflowHook
from xdep_sensors.client import RemoteAirflowClient
from xdep_sensors.core.listings import list_asset_events
from xdep_sensors.errors import AuthenticationError, NotFound, PermissionDenied

pytestmark = pytest.mark.integration
WRONG = "wrong-PASSWORD-4242"


def run(conn_id, fn):
    return RemoteAirflowHook(conn_id).run(fn)


class TestVersionAndAuth:
    def test_version_detection(self, upstream):
        async def go(client: RemoteAirflowClient):
            return await client.dialect(), await client.version()

        dialect, version = run(upstream.conn_id, go)
        assert dialect.name == upstream.api
        assert version.startswith("3.3" if upstream.api == "v2" else "2.11")

    def test_login_password_reads_runs(self, upstream):
        # v2: exchanged for a JWT at /auth/token; v1: HTTP basic auth
        upstream.trigger(conf={})  # at least one run to read
        runs = run(upstream.conn_id, lambda c: c.list_dag_runs("~", limit=1))
        assert len(runs) == 1 and runs[0].run_id and runs[0].dag_id

    def test_static_token(self, upstream_v2):
        dag = run("up_v2_token", lambda c: c.get_dag("xdep_test_producer"))
        assert dag.dag_id == "xdep_test_producer"

    def test_wrong_password_is_a_clear_error_without_the_secret(self, upstream, monkeypatch):
        conn = {
            "conn_type": "remote_airflow",
            "host": upstream.server.base_url,
            "login": "viewer",
            "password": WRONG,
        }
        monkeypatch.setenv("AIRFLOW_CONN_BAD_PW", json.dumps(conn))
        expected = AuthenticationError if upstream.api == "v2" else PermissionDenied  # v1 answers 403
        with pytest.raises(expected) as info:
            run("bad_pw", lambda c: c.get_dag("xdep_test_producer"))
        text = str(info.value) + repr(info.value)
        assert WRONG not in text
        assert (
            ("authentication failed for conn 'bad_pw'" in text)
            if upstream.api == "v2"
            else ("wrong password" in text)
        )

    def test_bad_static_token(self, upstream_v2, monkeypatch):
        conn = {"conn_type": "remote_airflow", "host": upstream_v2.server.base_url, "password": WRONG}
        monkeypatch.setenv("AIRFLOW_CONN_BAD_TOKEN", json.dumps(conn))
        with pytest.raises((AuthenticationError, PermissionDenied)) as info:
            run("bad_token", lambda c: c.get_dag("xdep_test_producer"))
        assert WRONG not in str(info.value)

    def test_every_request_says_who_sends_it(self, upstream, monkeypatch):
        """The User-Agent names the library, this Airflow and the connection's ``client_name`` (control
        characters stripped) on every request the upstream receives, the JWT exchange included."""
        from airflow import __version__ as airflow_version

        proxy = ChaosProxy(upstream.server.base_url).start()
        try:
            conn = {
                "conn_type": "remote_airflow",
                "host": proxy.url,
                "login": "viewer",
                "password": "viewer",
                "extra": {"client_name": "team-b\r\nX-Evil: 1 (prod)"},
            }
            monkeypatch.setenv("AIRFLOW_CONN_NAMED", json.dumps(conn))
            upstream.trigger(conf={})
            assert run("named", lambda c: c.list_dag_runs("~", limit=1))
        finally:
            proxy.stop()
        expected = (
            f"xdep-sensors/{xdep_sensors.__version__} (Airflow {airflow_version}; team-b X-Evil: 1 prod)"
        )
        assert dict(proxy.user_agents) == {expected: proxy.total}
        assert proxy.total >= 2 and (proxy.paths["/auth/token"] == 1) == (upstream.api == "v2")

    def test_test_connection_button(self, upstream):
        ok, message = RemoteAirflowHook(upstream.conn_id).test_connection()
        assert ok, message
        assert f"REST API {upstream.api}" in message and "allowed to read DAG runs" in message

    def test_test_connection_reports_wrong_url(self, upstream, monkeypatch):
        conn = {
            "conn_type": "remote_airflow",
            "host": upstream.server.base_url + "/wrong-prefix",
            "password": "x",
        }
        monkeypatch.setenv("AIRFLOW_CONN_WRONG_URL", json.dumps(conn))
        ok, message = RemoteAirflowHook("wrong_url").test_connection()
        # Airflow 2 answers 404 there; Airflow 3's UI answers any unknown path with its HTML page
        assert not ok and (
            "no Airflow REST API found" in message or "HTML page instead of the Airflow API" in message
        )
        assert "check the connection's host" in message


class TestReads:
    def test_runs_one_run_and_task_instances(self, upstream):
        run_id = upstream.trigger(conf={"tag": "reads"}, logical_date=datetime.now(timezone.utc))
        assert upstream.wait_run(run_id) == "success"

        async def go(client: RemoteAirflowClient):
            one = await client.get_dag_run("xdep_test_producer", run_id)
            latest = await client.list_dag_runs("xdep_test_producer", limit=5)
            by_date = await client.list_dag_runs("xdep_test_producer", logical_date=one.logical_date)
            group = await client.list_task_instances("xdep_test_producer", run_id, task_group_id="grp")
            missing = await client.get_dag_run("xdep_test_producer", "no_such_run")
            return one, latest, by_date, group, missing

        one, latest, by_date, group, missing = run(upstream.conn_id, go)
        assert one.run_id == run_id and one.state == "success" and one.conf == {"tag": "reads"}
        assert one.logical_date is not None and one.logical_date.tzinfo is not None
        assert run_id in [r.run_id for r in latest]
        assert [r.run_id for r in by_date] == [run_id]
        assert sorted(ti.task_id for ti in group) == ["grp.a", "grp.b"]
        assert missing is None

    def test_unknown_dag(self, upstream):
        with pytest.raises(NotFound):
            run(upstream.conn_id, lambda c: c.get_dag("no_such_dag"))

    def test_assets_and_events(self, upstream):
        before = datetime.now(timezone.utc) - timedelta(seconds=1)
        run_id = upstream.trigger("xdep_test_assets", conf={"extra": {"path": "/data/bears.csv"}})
        assert upstream.wait_run(run_id, "xdep_test_assets") == "success"

        async def go(client: RemoteAirflowClient):
            assets = await client.list_assets(uri_pattern="bears")
            bears = next(a for a in assets if a.uri == "file://include/bears")
            events = await list_asset_events(client, asset_ids=[bears.id], since=before)
            return bears, events

        bears, events = run(upstream.conn_id, go)
        mine = [e for e in events if e.source_run_id == run_id]
        assert len(mine) == 1
        assert mine[0].extra.get("path") == "/data/bears.csv" and mine[0].asset_id == bears.id
        assert mine[0].uri == "file://include/bears" and mine[0].source_dag_id == "xdep_test_assets"
