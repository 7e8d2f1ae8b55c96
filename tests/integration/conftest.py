"""Real upstream Airflow servers on loopback (3.3 with API v2, 2.11 with API v1) and a downstream DB.

Both upstreams start once per test session, in parallel, and are stopped by PID at the end, even
when tests fail. Connections reach the downstream (this process) as ``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.airflow_local import LocalAirflow

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
AIRFLOW3_BIN = Path(os.environ.get("XDEP_AIRFLOW3_BIN", Path(sys.executable).parent / "airflow"))
AIRFLOW2_BIN = Path(os.environ.get("XDEP_AIRFLOW2_BIN", ROOT / ".venv-airflow2" / "bin" / "airflow"))
UPSTREAM_DAGS = ("xdep_test_producer", "xdep_test_assets")


@dataclass
class Upstream:
    """One running upstream and the downstream connection ids that point at it."""

    api: str  # "v2" or "v1"
    server: LocalAirflow
    conn_id: str  # viewer with login + password (JWT exchange on v2, basic auth on v1)

    def trigger(self, dag_id: str = "xdep_test_producer", **kwargs) -> str:
        return self.server.trigger(dag_id, **kwargs)

    def wait_run(self, run_id: str, dag_id: str = "xdep_test_producer", **kwargs) -> str:
        return self.server.wait_run(dag_id, run_id, **kwargs)


def _set_conn(conn_id: str, **fields) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "remote_airflow", **fields})


def _start(server: LocalAirflow) -> LocalAirflow:
    server.start(timeout=300)
    for dag_id in UPSTREAM_DAGS:
        server.wait_for_dag(dag_id, timeout=180)
    return server


@pytest.fixture(scope="session")
def _upstreams(tmp_path_factory):
    """Start both upstreams in parallel (about a minute), stop them at the end whatever happened."""
    if not AIRFLOW2_BIN.exists():
        pytest.fail(f"Airflow 2 upstream not installed at {AIRFLOW2_BIN}: run `bash scripts/bootstrap.sh`")
    servers = {
        "v2": LocalAirflow(tmp_path_factory.mktemp("upstream-v2"), AIRFLOW3_BIN, major=3,
                           dags_folder=HERE / "upstream_dags", name="upstream-v2"),
        "v1": LocalAirflow(tmp_path_factory.mktemp("upstream-v1"), AIRFLOW2_BIN, major=2,
                           dags_folder=HERE / "upstream_dags_v1", name="upstream-v1"),
    }
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(_start, s) for s in servers.values()]:
                future.result()
        _set_conn("up_v2", host=servers["v2"].base_url, login="viewer", password="viewer")
        _set_conn("up_v2_token", host=servers["v2"].base_url, password=servers["v2"].token("viewer", "viewer"))
        _set_conn("up_v1", host=servers["v1"].base_url, login="viewer", password="viewer")
        yield {
            "v2": Upstream("v2", servers["v2"], "up_v2"),
            "v1": Upstream("v1", servers["v1"], "up_v1"),
        }
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=["v2", "v1"])
def upstream(request, _upstreams) -> Upstream:
    """Each test using this runs once against Airflow 3.3 (v2) and once against Airflow 2.11 (v1)."""
    return _upstreams[request.param]


@pytest.fixture
def upstream_v2(_upstreams) -> Upstream:
    return _upstreams["v2"]


@pytest.fixture(scope="session")
def downstream_db():
    """Migrate this process's (the downstream's) metadata DB once, for ``dag.test()``."""
    subprocess.run([str(AIRFLOW3_BIN), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    yield


@pytest.fixture
def out_file():
    path = Path(tempfile.mkdtemp(prefix="xdep-out-")) / "result.json"
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture(params=["shared-poll", "own-poll"])
def polling_mode(request, monkeypatch):
    """Run a deferrable test with the shared poller (default) and with each trigger polling alone."""
    from xdep_sensors import polling

    monkeypatch.setattr(polling, "SHARED_POLLING", request.param == "shared-poll")
    return request.param
