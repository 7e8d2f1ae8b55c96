"""``xdep-sensors doctor`` against real upstreams: one test per problem it diagnoses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devtools.airflow_local import free_port

pytestmark = pytest.mark.integration


def doctor(monkeypatch, capsys, conn: dict | None, *args: str) -> tuple[int, str]:
    from xdep_sensors.cli.main import main

    if conn is not None:
        monkeypatch.setenv("AIRFLOW_CONN_DOC", json.dumps({"conn_type": "remote_airflow", **conn}))
    code = main(["doctor", "--conn-id", "doc", *args])
    return code, capsys.readouterr().out


def test_healthy_connection_with_dag_and_asset(upstream, monkeypatch, capsys):
    conn = {"host": upstream.server.base_url, "login": "viewer", "password": "viewer"}
    code, out = doctor(
        monkeypatch, capsys, conn, "--dag-id", "xdep_test_producer", "--asset-uri", "file://include/bears"
    )
    assert code == 0, out
    assert f"REST API {upstream.api}" in out and "dag xdep_test_producer: exists" in out
    assert "all checks passed" in out


def test_unreachable(monkeypatch, capsys):
    code, out = doctor(monkeypatch, capsys, {"host": f"http://127.0.0.1:{free_port()}", "password": "t"})
    assert code == 1 and "[FAIL] api: the upstream did not answer" in out


def test_tls_to_a_plain_http_server(upstream_v2, monkeypatch, capsys):
    host = upstream_v2.server.base_url.replace("http://", "https://")
    code, out = doctor(monkeypatch, capsys, {"host": host, "password": "t"})
    assert code == 1 and "TLS" in out and "verify" in out


def test_wrong_api_version(upstream_v2, monkeypatch, capsys):
    conn = {"host": upstream_v2.server.base_url, "password": "t", "extra": {"api_version": "v1"}}
    code, out = doctor(monkeypatch, capsys, conn)
    assert code == 1 and "set the extra api_version to auto" in out


def test_bad_credentials(upstream, monkeypatch, capsys):
    conn = {"host": upstream.server.base_url, "login": "viewer", "password": "not-the-password"}
    code, out = doctor(monkeypatch, capsys, conn)
    assert code == 1 and "[FAIL] read dag runs" in out
    assert "not-the-password" not in out


def test_unknown_dag_and_asset_with_close_matches(upstream_v2, monkeypatch, capsys):
    conn = {"host": upstream_v2.server.base_url, "login": "viewer", "password": "viewer"}
    code, out = doctor(monkeypatch, capsys, conn, "--dag-id", "xdep_test_produce")
    assert code == 1 and "does not exist upstream" in out and "close matches: xdep_test_producer" in out
    code, out = doctor(monkeypatch, capsys, conn, "--asset-uri", "file://include/beers")
    assert code == 1 and "close matches: file://include/bears" in out


def test_missing_connection(monkeypatch, capsys):
    code, out = doctor(monkeypatch, capsys, None)
    assert code == 1 and "connection 'doc' does not exist" in out


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "xdep_sensors", "doctor", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--asset-uri" in done.stdout
