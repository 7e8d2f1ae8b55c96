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
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools import postgres
from devtools.airflow_local import LocalAirflow
from devtools.google_doubles import BearerFront, TokenEndpoint
from devtools.mwaa_double import Environment, Identity, MwaaDouble, aws_connection

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
AIRFLOW3_BIN = Path(os.environ.get("XDEP_AIRFLOW3_BIN", Path(sys.executable).parent / "airflow"))
AIRFLOW2_BIN = Path(os.environ.get("XDEP_AIRFLOW2_BIN", ROOT / ".venv-airflow2" / "bin" / "airflow"))
UPSTREAM_DAGS = ("xdep_test_producer", "xdep_test_assets")
UPSTREAM_DAG_FOLDER = HERE / "upstream_dags"  # every upstream's DAGs: one file per DAG, Airflow 2.9 to 3.3
# An operator may set [api] maximum_page_limit below its default 100: every test against these upstreams
# (sensors, watchers, feeds) then reads pages of 25, which Airflow caps silently.
PAGE_CAP = {"AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "25"}


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


def wait_for(predicate, timeout: float, what: str):
    """Poll predicate every second until it returns something truthy; return that, or fail after timeout."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)
    return value


def local_asset_id(server: LocalAirflow, uri: str) -> int | None:
    """The id of an asset of a (downstream) deployment, or None while it is not registered yet."""
    assets = server.api("GET", "/api/v2/assets?limit=100")["assets"]
    return next((a["id"] for a in assets if a["uri"].rstrip("/") == uri.rstrip("/")), None)


def local_asset_events(server: LocalAirflow, asset_id: int, order_by: str | None = None) -> list[dict]:
    """A deployment's own events of one asset (its watchers' fires), up to 100.

    Airflow 3.3.2 answers 500 while an event's created run has no start_date yet: wait that out.
    """
    query = f"asset_id={asset_id}&limit=100" + (f"&order_by={order_by}" if order_by else "")
    for _ in range(30):
        try:
            return server.api("GET", f"/api/v2/assets/events?{query}")["asset_events"]
        except RuntimeError as err:
            if "HTTP 500" not in str(err):
                raise
            time.sleep(1)
    raise AssertionError(f"{server.name}: asset events stayed unreadable (HTTP 500)")


def watchers_started(server: LocalAirflow, asset_ids) -> bool:
    """Whether the watcher of each of a (downstream, Airflow 3.3+) deployment's assets has started.

    A watcher's first act is to store its start state (cursor, or an alert's ``since``) in the asset state
    store: upstream events before that moment are, rightly, not delivered, so a test must not produce
    any before then.
    """

    def stored(asset_id: int) -> bool:
        entries = server.api("GET", f"/api/v2/assets/{asset_id}/state-store?limit=100")["asset_state_store"]
        return any(e["key"].startswith("xdep_sensors:") for e in entries)

    return all(stored(i) for i in asset_ids)


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
        "v2": LocalAirflow(
            tmp_path_factory.mktemp("upstream-v2"),
            AIRFLOW3_BIN,
            major=3,
            dags_folder=UPSTREAM_DAG_FOLDER,
            name="upstream-v2",
            extra_env=PAGE_CAP,
            # PostgreSQL, as in production: on SQLite its scheduler can die of "database is locked" under
            # the suite's load (seen in CI), and the whole session's Airflow 3 upstream with it
            database_url=postgres.fresh_database("xdep_upstream_v2"),
        ),
        "v1": LocalAirflow(
            tmp_path_factory.mktemp("upstream-v1"),
            AIRFLOW2_BIN,
            major=2,
            dags_folder=UPSTREAM_DAG_FOLDER,
            name="upstream-v1",
            extra_env=PAGE_CAP,
        ),
    }
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(_start, s) for s in servers.values()]:
                future.result()
        _set_conn("up_v2", host=servers["v2"].base_url, login="viewer", password="viewer")
        _set_conn(
            "up_v2_token", host=servers["v2"].base_url, password=servers["v2"].token("viewer", "viewer")
        )
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
    subprocess.run(
        [str(AIRFLOW3_BIN), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    yield


@pytest.fixture
def out_file():
    path = Path(tempfile.mkdtemp(prefix="xdep-out-")) / "result.json"
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture(params=["shared-poll", "own-poll"])
def polling_mode(request, monkeypatch):
    """Run a deferrable test with the shared poller (default) and with each trigger polling alone."""
    from xdep_sensors.core import poller as polling

    monkeypatch.setattr(polling, "SHARED_POLLING", request.param == "shared-poll")
    return request.param


# --- the version matrix (issue 11) ------------------------------------------------------------------
# Every upstream minor the library supports, and the results file the docs' versions table is rendered from.

MATRIX_VENVS = ROOT / ".venvs"
UPSTREAM_VERSIONS = ("2.9.3", "2.10.5", "2.11.2", "3.0.6", "3.1.8", "3.2.2", "3.3.2")
MATRIX_RESULTS = Path(os.environ.get("XDEP_MATRIX_RESULTS", ROOT / ".tmp" / "version-matrix.json"))


def airflow_bin(version: str) -> Path:
    """The `airflow` executable of one matrix version (3.3.2 is .venv, 2.11.2 is .venv-airflow2)."""
    if version == "3.3.2":
        return AIRFLOW3_BIN
    if version == "2.11.2":
        return AIRFLOW2_BIN
    path = MATRIX_VENVS / f"airflow-{version}" / "bin" / "airflow"
    if not path.exists():
        pytest.fail(f"Airflow {version} not installed at {path}: run `bash scripts/bootstrap.sh`")
    return path


@dataclass
class MatrixUpstream(Upstream):
    """An upstream of the matrix. API-only ones (``runs_tasks`` False) finish runs by a state PATCH."""

    version: str = ""
    token_conn_id: str | None = None  # a static bearer token (Airflow 3 only)
    runs_tasks: bool = True

    def trigger(self, dag_id: str = "xdep_test_producer", *, hold: bool = False, **kwargs) -> str:
        """Trigger a run. With hold, a full upstream's run of xdep_test_producer waits in its first task
        until finish_run releases it (a gate file named in its conf), so it cannot end before the
        downstream's waits are in place, however slow the machine (an API-only upstream's runs wait
        anyway)."""
        if hold and self.runs_tasks:
            gate = self.server.home / "gates" / uuid.uuid4().hex
            gate.parent.mkdir(exist_ok=True)
            kwargs["conf"] = {**(kwargs.get("conf") or {}), "gate": str(gate)}
        return super().trigger(dag_id, **kwargs)

    def finish_run(self, run_id: str, dag_id: str = "xdep_test_producer", state: str = "success") -> str:
        """Let the run end (in success, or in ``state``): its scheduler runs it (released if held), or
        (API-only upstream) set it by REST. A full upstream's run fails only when triggered with
        ``conf={"fail": True}``."""
        if self.runs_tasks:
            run = self.server.api("GET", f"/api/{self.api}/dags/{dag_id}/dagRuns/{run_id}")
            if gate := (run.get("conf") or {}).get("gate"):
                assert run["state"] not in ("success", "failed"), (
                    f"held run {run_id} ended before its release"
                )
                Path(gate).touch()
            return self.wait_run(run_id, dag_id)
        path = f"/api/{self.api}/dags/{dag_id}/dagRuns/{run_id}"
        return self.server.api("PATCH", path, {"state": state})["state"]

    def asset_event(self, uri: str, extra: dict, partition_key: str | None = None) -> None:
        """Create an upstream asset (dataset) event through the REST API (with a key: Airflow 3.2+)."""
        if self.api == "v1":
            self.server.api("POST", "/api/v1/datasets/events", {"dataset_uri": uri, "extra": extra})
            return
        assets = self.server.api("GET", "/api/v2/assets?limit=100")["assets"]
        asset_id = next(a["id"] for a in assets if a["uri"] == uri)
        body = {"asset_id": asset_id, "extra": extra}
        if partition_key is not None:
            body["partition_key"] = partition_key
        self.server.api("POST", "/api/v2/assets/events", body)


def _start_api_only(server: LocalAirflow) -> LocalAirflow:
    """Start, wait for the DAGs to be parsed, then stop all but the API server.

    Without a scheduler a triggered run stays queued until the test sets its end state by REST. A
    scheduler left running would run the run's tasks meanwhile and race that PATCH on SQLite (no row
    locks): the run could end ``failed`` on its own, under CI load, before or after the PATCH.
    """
    _start(server)
    for name in ("dag-processor", "scheduler") if server.major == 3 else ("scheduler",):
        server.stop_component(name)
    return server


@pytest.fixture(scope="session")
def matrix_upstreams(_upstreams, tmp_path_factory) -> dict[str, MatrixUpstream]:
    """Every upstream version: 3.3.2 and 2.11.2 are the shared full deployments; the others start
    API-only (their DAGs parsed once, then no scheduler), three at a time, and stop at session end."""
    own = [v for v in UPSTREAM_VERSIONS if v not in ("3.3.2", "2.11.2")]
    servers = {}
    for v in own:
        major = int(v[0])
        # FAB provider 1.2 (the one of 2.9.3's day) has no session backend: use the core one there
        backends = (
            "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
        )
        extra = {"AIRFLOW__API__AUTH_BACKENDS": backends} if v.startswith("2.9.") else {}
        servers[v] = LocalAirflow(
            tmp_path_factory.mktemp(f"upstream-{v}"),
            airflow_bin(v),
            major=major,
            dags_folder=UPSTREAM_DAG_FOLDER,
            name=f"upstream-{v}",
            extra_env=extra,
        )
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(_start_api_only, s) for s in servers.values()]:
                future.result()
        result = {
            "3.3.2": MatrixUpstream(
                "v2", _upstreams["v2"].server, "up_v2", version="3.3.2", token_conn_id="up_v2_token"
            ),
            "2.11.2": MatrixUpstream("v1", _upstreams["v1"].server, "up_v1", version="2.11.2"),
        }
        for v, server in servers.items():
            slug = "mx_" + v.replace(".", "_")
            _set_conn(slug, host=server.base_url, login="viewer", password="viewer")
            token = None
            if server.major == 3:
                token = f"{slug}_token"
                _set_conn(token, host=server.base_url, password=server.token("viewer", "viewer"))
            result[v] = MatrixUpstream(
                "v2" if server.major == 3 else "v1",
                server,
                slug,
                version=v,
                token_conn_id=token,
                runs_tasks=False,
            )
        yield result
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def matrix_record():
    """Record what the matrix proved: ``matrix_record(version, role, check)``; written at session end."""
    proved: dict[str, dict[str, list[str]]] = {}

    def record(version: str, role: str, check: str) -> None:
        checks = proved.setdefault(version, {}).setdefault(role, [])
        if check not in checks:
            checks.append(check)

    yield record
    if proved:  # `make test` names its run (XDEP_TEST_RUN): the table's --check refuses another run's results
        MATRIX_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        results = {"run": os.environ.get("XDEP_TEST_RUN"), "proved": proved}
        MATRIX_RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- MWAA
# The AWS side of Amazon MWAA (InvokeRestApi, SigV4) as a local double in front of the real upstreams
# above (devtools/mwaa_double.py); the library reaches it through real Airflow AWS connections, the
# Amazon provider and aiobotocore. The keys are canaries: the leak scans look for them.
AWS_KEY = "AKIAXDEPCANARY000001"
AWS_SECRET = "xdep-canary-aws-secret-Kq3vT9wLm2"
AWS_SESSION_TOKEN = "xdep-canary-aws-session-token-Zr8pN4cYh7"
AWS_NO_GRANT_KEY = "AKIAXDEPNOGRANT00002"
AWS_PUBLIC_KEY = "AKIAXDEPPUBLIC000003"
AWS_EXPIRED_KEY = "AKIAXDEPEXPIRED00004"
MWAA_ENVS = {"v2": "up-v2", "v1": "up-v1"}


@dataclass
class Mwaa:
    """The double, the endpoint the AWS connections name, and the remote connection per upstream API."""

    double: MwaaDouble
    endpoint_url: str
    upstreams: dict[str, Upstream]

    def conn_id(self, api: str) -> str:
        return f"mwaa_{api}"

    def env_vars(self) -> dict[str, str]:
        """Every MWAA test connection as ``AIRFLOW_CONN_*`` variables (for a downstream deployment)."""
        return {
            k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_MWAA", "AIRFLOW_CONN_AWS_"))
        }


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _mwaa_conn(conn_id: str, env: str, aws_conn_id: str, host: str | None = None) -> None:
    extra = {"auth": "aws_mwaa", "mwaa_environment": env, "aws_conn_id": aws_conn_id}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "remote_airflow", **({"host": host} if host else {}), "extra": extra}
    )


@pytest.fixture(scope="session")
def mwaa(_upstreams) -> Mwaa:
    """Two MWAA environments (Airflow 3.3 and 2.11) and four AWS identities: one granted the Viewer
    role on both, one granted nothing, one granted a role whose Airflow user may not read (Public),
    one whose temporary credentials have expired."""
    v2, v1 = _upstreams["v2"].server, _upstreams["v1"].server
    environments = {
        MWAA_ENVS["v2"]: Environment(
            v2.base_url,
            "v2",
            {
                "Viewer": {"Authorization": f"Bearer {v2.token('viewer', 'viewer')}"},
                "Public": {"Authorization": "Bearer not-a-token-of-this-deployment"},
            },
        ),
        MWAA_ENVS["v1"]: Environment(
            v1.base_url, "v1", {"Viewer": _basic("viewer", "viewer"), "Public": _basic("public", "nobody")}
        ),
    }
    everywhere = {env: "Viewer" for env in environments}
    identities = {
        AWS_KEY: Identity(AWS_SECRET, AWS_SESSION_TOKEN, grants=everywhere),
        AWS_NO_GRANT_KEY: Identity(AWS_SECRET + "-2"),
        AWS_PUBLIC_KEY: Identity(AWS_SECRET + "-3", grants={env: "Public" for env in environments}),
        AWS_EXPIRED_KEY: Identity(
            AWS_SECRET + "-4", "expired-session-token", grants=everywhere, expired=True
        ),
    }
    double = MwaaDouble(environments, identities)
    url = double.start()
    aws = {
        "aws_mwaa": aws_connection(url, AWS_KEY, AWS_SECRET, session_token=AWS_SESSION_TOKEN),
        "aws_mwaa_bad_secret": aws_connection(
            url, AWS_KEY, AWS_SECRET + "-wrong", session_token=AWS_SESSION_TOKEN
        ),
        "aws_mwaa_no_grant": aws_connection(url, AWS_NO_GRANT_KEY, AWS_SECRET + "-2"),
        "aws_mwaa_public": aws_connection(url, AWS_PUBLIC_KEY, AWS_SECRET + "-3"),
        "aws_mwaa_expired": aws_connection(
            url, AWS_EXPIRED_KEY, AWS_SECRET + "-4", session_token="expired-session-token"
        ),
    }
    for conn_id, conn in aws.items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    for api, env in MWAA_ENVS.items():
        # the host, optional for MWAA, is the environment's web server URL: links to the upstream UI
        _mwaa_conn(f"mwaa_{api}", env, "aws_mwaa", host=_upstreams[api].server.base_url)
        _mwaa_conn(f"mwaa_{api}_bad_secret", env, "aws_mwaa_bad_secret")
        _mwaa_conn(f"mwaa_{api}_no_grant", env, "aws_mwaa_no_grant")
        _mwaa_conn(f"mwaa_{api}_public", env, "aws_mwaa_public")
        _mwaa_conn(f"mwaa_{api}_expired", env, "aws_mwaa_expired")
    _mwaa_conn("mwaa_no_env", "no-such-environment", "aws_mwaa")
    try:
        yield Mwaa(double, url, _upstreams)
    finally:
        double.stop()


# ------------------------------------------------------------------------------------------ Composer
# The Google side of Cloud Composer as local doubles (devtools/google_doubles.py): an OAuth 2 token
# endpoint that verifies google-auth's service-account grants and issues short-lived tokens, and a
# front per upstream that lets through only the bearer tokens it issued. The library reaches them
# through real Airflow Google connections (key files), the Google provider and google-auth.
READER = "xdep-reader@xdep-test.iam.gserviceaccount.com"  # registered upstream as Viewer
NEWCOMER = "xdep-newcomer@xdep-test.iam.gserviceaccount.com"  # not registered: the default role
REVOKED = "xdep-revoked@xdep-test.iam.gserviceaccount.com"  # its key was deleted


@dataclass
class Composer:
    tokens: TokenEndpoint
    fronts: dict[str, BearerFront]
    upstreams: dict[str, Upstream]
    keys: dict[str, dict]

    def conn_id(self, api: str) -> str:
        return f"composer_{api}"

    def env_vars(self) -> dict[str, str]:
        """Every Composer test connection as ``AIRFLOW_CONN_*`` variables (for a downstream deployment)."""
        prefixes = ("AIRFLOW_CONN_COMPOSER", "AIRFLOW_CONN_GCP_")
        return {k: v for k, v in os.environ.items() if k.startswith(prefixes)}


def _gcp_conn(conn_id: str, key_path: Path, **extra: str) -> None:
    conn = {"conn_type": "google_cloud_platform", "extra": {"key_path": str(key_path), **extra}}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)


def _composer_conn(conn_id: str, host: str, gcp_conn_id: str) -> None:
    extra = {"auth": "google", "gcp_conn_id": gcp_conn_id}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "remote_airflow", "host": host, "extra": extra}
    )


@pytest.fixture(scope="session")
def composer(_upstreams, tmp_path_factory) -> Composer:
    """A front per upstream (Airflow 3.3 and 2.11) and three service accounts: one registered as
    Viewer, one not registered (Composer's default role here: one that may not read), one revoked."""
    tokens = TokenEndpoint()
    tokens.start()
    keys_dir = tmp_path_factory.mktemp("google-keys")
    keys = {email: tokens.service_account_key(email) for email in (READER, NEWCOMER, REVOKED)}
    tokens.revoke(REVOKED)
    for name, email in (("reader", READER), ("newcomer", NEWCOMER), ("revoked", REVOKED)):
        path = keys_dir / f"{name}.json"
        path.write_text(json.dumps(keys[email]))
        _gcp_conn(f"gcp_{name}", path)
    _gcp_conn("gcp_bad_scope", keys_dir / "reader.json", scope="https://www.googleapis.com/auth/bigquery")
    fronts = {}
    try:
        for api, up in _upstreams.items():
            server = up.server
            viewer = (
                {"Authorization": f"Bearer {server.token('viewer', 'viewer')}"}
                if api == "v2"
                else _basic("viewer", "viewer")
            )
            public = {"Authorization": "Bearer not-a-token"} if api == "v2" else _basic("public", "x")
            fronts[api] = BearerFront(tokens, server.base_url, {READER: viewer}, default_headers=public)
            host = fronts[api].start()
            _composer_conn(f"composer_{api}", host, "gcp_reader")
            for who in ("newcomer", "revoked", "bad_scope"):
                _composer_conn(f"composer_{api}_{who}", host, f"gcp_{who}")
        yield Composer(tokens, fronts, _upstreams, keys)
    finally:
        for front in fronts.values():
            front.stop()
        tokens.stop()
