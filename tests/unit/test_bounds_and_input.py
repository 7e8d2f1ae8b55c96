"""A hostile upstream cannot exhaust memory; bad arguments fail at parse time naming the parameter."""

from __future__ import annotations

import re

import pytest

from tests.helpers import mocked_client, upstream_mock
from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.client import client as client_module
from xdep_sensors.client import policy
from xdep_sensors.errors import BadResponse, ConfigurationError
from xdep_sensors.hooks import RemoteAirflowHook

BASE = "http://up.test:8080"


class TestResponseBounds:
    async def test_oversized_body_is_refused(self, monkeypatch):
        monkeypatch.setattr("xdep_sensors.client.session.MAX_BODY_BYTES", 1024)
        client = mocked_client()
        with upstream_mock() as m:
            m.get(
                re.compile(re.escape(BASE) + r"/api/v2/dags/d\b.*"),
                body=b'{"dag_id": "' + b"x" * 5000 + b'"}',
                content_type="application/json",
            )
            with pytest.raises(BadResponse, match="exceeds"):
                await client.get_dag("d")
        await client.close()

    async def test_endless_paging_stops(self, monkeypatch):
        monkeypatch.setattr(client_module, "MAX_PAGES", 3)
        client = mocked_client()
        page = {"dags": [{"dag_id": f"d{i}"} for i in range(100)], "total_entries": 10**9}
        with upstream_mock() as m:
            m.get(re.compile(re.escape(BASE) + r"/api/v2/dags\?.*"), payload=page, repeat=True)
            dags = await client.list_dags()
            calls = sum(len(v) for k, v in m.requests.items() if "/api/v2/dags?" in str(k[1]))
        assert len(dags) == 300 and calls == 3
        await client.close()

    def test_default_caps(self):
        assert policy.MAX_BODY_BYTES == 16 * 2**20 and client_module.MAX_PAGES == 50


class TestBadInput:
    @pytest.mark.parametrize("kwargs", [{"poke_interval": -1}, {"timeout": -5}])
    def test_negative_intervals(self, kwargs):
        with pytest.raises(ValueError, match=list(kwargs)[0]):
            RemoteDagRunSensor(task_id="w", external_dag_id="d", **kwargs)

    def test_deferrable_must_be_bool(self):
        with pytest.raises(ValueError, match="deferrable"):
            RemoteAssetSensor(task_id="w", asset_uri="u", deferrable="yes")

    def test_unknown_connection_names_it_when_the_task_runs(self):
        with pytest.raises(ConfigurationError, match="connection 'nope' does not exist.*AIRFLOW_CONN_NOPE"):
            RemoteAirflowHook("nope").get_config()

    @pytest.mark.parametrize(
        ("extra", "match"),
        [
            ({"api_version": "v9"}, "api_version"),
            ({"timeout": "soon"}, "timeout"),
            ({"timeout": -1}, "timeout"),
        ],
    )
    def test_bad_connection_extras(self, monkeypatch, extra, match):
        import json

        monkeypatch.setenv(
            "AIRFLOW_CONN_BAD_EXTRA",
            json.dumps({"conn_type": "remote_airflow", "host": BASE, "extra": extra}),
        )
        with pytest.raises(ConfigurationError, match=match):
            RemoteAirflowHook("bad_extra").get_config()
