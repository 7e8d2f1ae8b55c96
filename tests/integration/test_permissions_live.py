"""Least privilege against real FAB per-DAG roles: an Airflow 3.3.2 deployment with the FAB auth manager
(its own upstream, and a downstream with a triggerer and the Remote dependencies page) and the Airflow
2.11.2 upstream (FAB).

One table per feature (``FEATURES``, the rows of docs/guides/permissions.md): with exactly its
permissions it works; with each one removed in turn it fails or warns at its first look, naming what is
missing. Each case gets its own role, user and connection, so no cache can answer for another.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from devtools import postgres
from devtools.airflow_local import CANARY_USER, LocalAirflow, free_port
from tests.helpers import MemoryStateStore, close_loop_clients
from tests.integration.conftest import AIRFLOW3_BIN, UPSTREAM_DAG_FOLDER, UPSTREAM_DAGS, wait_for
from tests.leakscan import scan_files, scan_postgres, secret_forms

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
PRODUCER, ASSETS_DAG, BEARS = "xdep_test_producer", "xdep_test_assets", "file://include/bears"
FERNET_KEY = "eGRlcC1wZXJtaXNzaW9ucy1mYWItZmVybmV0LWtleSE="  # 32 bytes, as Fernet needs
PASSWORD = "Perm-Passw0rd-xdep-4b7e1a"  # every case user's: the leak scan looks for it
PERM_DAGS = ("xdep_perm_wait_a", "xdep_perm_wait_b", "xdep_perm_hidden")


# --- the deployments ------------------------------------------------------------------------------------


def _conn(host: str, user: str) -> str:
    return json.dumps({"conn_type": "remote_airflow", "host": host, "login": user, "password": PASSWORD})


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    """Airflow 3.3.2 with the FAB auth manager on PostgreSQL: the upstream DAGs and PERM_DAGS."""
    home = tmp_path_factory.mktemp("fab-3.3.2")
    dags = home / "dags"
    dags.mkdir()
    for path in [*UPSTREAM_DAG_FOLDER.glob("*.py"), *(HERE / "permission_dags").glob("*.py")]:
        shutil.copy(path, dags / path.name)
    port = free_port()
    here, alias = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    server = LocalAirflow(
        home,
        AIRFLOW3_BIN,
        major=3,
        auth="fab",
        port=port,
        dags_folder=dags,
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        name="fab-3.3.2",
        database_url=postgres.fresh_database("xdep_fab_3_3_2"),
        extra_env={
            "AIRFLOW_CONN_PERM_A": _conn(here, "reader_a"),
            "AIRFLOW_CONN_PERM_B": _conn(alias, "reader_b"),
            "AIRFLOW_CONN_PERM_BLIND": _conn(here, "blind"),
            "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
        },
    )
    try:
        server.start(timeout=300)
        for dag_id in (*UPSTREAM_DAGS, *PERM_DAGS):
            server.wait_for_dag(dag_id, timeout=180)
        yield server
    finally:
        server.stop()


@dataclass
class Up:
    """One upstream of the table, and what its cases share."""

    server: LocalAirflow
    api: str  # "v2" | "v1"
    version: str
    run_id: str = ""  # a finished run of PRODUCER
    since: str = ""  # before an event of BEARS by ASSETS_DAG
    cases: int = 0


@pytest.fixture(scope="module")
def ups(fab, _upstreams) -> dict[str, Up]:
    """Both upstreams, each with a finished run of the producer and an event of BEARS by its DAG."""
    out = {"v2": Up(fab, "v2", "3.3.2"), "v1": Up(_upstreams["v1"].server, "v1", "2.11.2")}
    for up in out.values():
        up.since = datetime.now(timezone.utc).isoformat()
        run = up.server.trigger(PRODUCER, conf={}, logical_date=datetime.now(timezone.utc))
        made = up.server.trigger(ASSETS_DAG, conf={"which": "bears"}, logical_date=datetime.now(timezone.utc))
        assert up.server.wait_run(PRODUCER, run) == "success"
        assert up.server.wait_run(ASSETS_DAG, made) == "success"
        up.run_id = run
    return out


# --- the table ------------------------------------------------------------------------------------------


def _assets(api: str) -> list[str]:
    return ["Datasets"] if api == "v1" else ["Assets", "Asset Aliases"]


@dataclass
class Feature:
    """What one feature needs (``needs(api)``: can_read resources) and how its first look is run."""

    name: str
    needs: Callable[[str], list[str]]
    look: Callable[[Up, str], Any]  # async: (upstream, conn id) -> the outcome's text, "ok" when it works
    # resources whose loss only warns on 3.3 (the wait goes on): a hidden producer
    warns: tuple[str, ...] = field(default=())


class Output:
    """What the process has written so far (Airflow 3's structured logs go to stdout, not to logging)."""

    capfd: Any = None

    def __init__(self) -> None:
        self.text = ""

    def lines(self) -> list[str]:
        out, err = Output.capfd.readouterr()
        self.text += out + err
        return self.text.splitlines()


async def _until(trigger: Any, done: Callable[[list[str]], bool], timeout: float = 90) -> list[str]:
    """Run a trigger until it yields an event or its log says what ``done`` waits for; every line."""
    output, events = Output(), []

    async def first() -> None:
        async for event in trigger.run():
            events.append("EVENT " + json.dumps(event.payload, default=str))
            return

    task = asyncio.ensure_future(first())
    try:
        deadline = time.monotonic() + timeout
        while not task.done() and not done(output.lines()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no outcome within {timeout}s: {output.lines()[-20:]}")
            await asyncio.sleep(0.2)
        if task.done():
            task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return events + output.lines()


def _said(lines: list[str]) -> bool:
    return any("cannot see producer" in line or "upstream error on" in line for line in lines)


def _outcome(lines: list[str]) -> str:
    """ "ok" for a success (a watcher's or alert's payload has no status), else every line."""
    events = [json.loads(line[6:]) for line in lines if line.startswith("EVENT ")]
    if events and events[0].get("status", "success") == "success":
        return "ok"
    return "\n".join(lines)


async def _dag_run(up: Up, conn: str, **narrow: Any) -> str:
    from xdep_sensors.triggers import RemoteDagRunTrigger

    trigger = RemoteDagRunTrigger(
        remote_conn_id=conn, external_dag_id=PRODUCER, run_id=up.run_id, poke_interval=1, **narrow
    )
    return _outcome(await _until(trigger, lambda lines: False))


async def _asset(up: Up, conn: str) -> str:
    from xdep_sensors.triggers import RemoteAssetTrigger

    trigger = RemoteAssetTrigger(
        remote_conn_id=conn, assets=[{"uri": BEARS, "name": None}], since=up.since, poke_interval=1
    )
    return _outcome(await _until(trigger, _said))


async def _run_watcher(up: Up, conn: str) -> str:
    """A watcher fires for runs that end after it started: it gets one."""
    from xdep_sensors.triggers import RemoteDagRunEventTrigger

    trigger = RemoteDagRunEventTrigger(remote_conn_id=conn, external_dag_id=PRODUCER, poll_interval=1)
    return await _watch(up, trigger, lambda: up.server.trigger(PRODUCER, conf={}, logical_date=_now()))


async def _asset_watcher(up: Up, conn: str) -> str:
    from xdep_sensors.triggers import RemoteAssetEventTrigger

    trigger = RemoteAssetEventTrigger(remote_conn_id=conn, asset_uri=BEARS, poll_interval=1)
    return await _watch(
        up, trigger, lambda: up.server.trigger(ASSETS_DAG, conf={"which": "bears"}, logical_date=_now())
    )


async def _task_alert(up: Up, conn: str) -> str:
    from xdep_sensors.triggers.alerts import RemoteTaskInstanceEventTrigger

    trigger = RemoteTaskInstanceEventTrigger(
        remote_conn_id=conn,
        external_dag_id=PRODUCER,
        task_ids=["extract"],
        states=["success"],
        poll_interval=1,
    )
    return await _watch(up, trigger, lambda: up.server.trigger(PRODUCER, conf={}, logical_date=_now()))


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _watch(up: Up, trigger: Any, produce: Callable[[], str]) -> str:
    """Start the watcher; once it has looked (a look went through, or an error), make what it fires on.
    Its state goes where Airflow 3.3's triggerer puts a watcher's: an asset state store (here in memory)."""
    from xdep_sensors.core import pacing

    trigger.asset_state_store = MemoryStateStore()

    looked: list[bool] = []
    original = pacing.Pace.ok

    def ok(self) -> None:  # a look that worked
        looked.append(True)
        original(self)

    pacing.Pace.ok = ok  # type: ignore[method-assign]
    try:
        task = asyncio.ensure_future(_until(trigger, _said))
        deadline = time.monotonic() + 60
        while not looked and not task.done():
            if time.monotonic() > deadline:
                raise AssertionError("the watcher never looked")
            await asyncio.sleep(0.2)
        if looked and not task.done():
            await asyncio.to_thread(produce)
        return _outcome(await task)
    finally:
        pacing.Pace.ok = original  # type: ignore[method-assign]


async def _doctor(up: Up, conn: str, **target: str) -> str:
    from xdep_sensors.core.doctor import diagnose, render
    from xdep_sensors.hooks import RemoteAirflowHook

    client = await RemoteAirflowHook(conn).aget_client()
    checks = await diagnose(client, **target)
    return "ok" if all(c.ok for c in checks) else render(checks)


def _dag_needs(*more: str) -> Callable[[str], list[str]]:
    return lambda api: [f"DAG:{PRODUCER}", "DAG Runs", *more]


def _asset_needs(api: str) -> list[str]:
    return [*_assets(api), *([f"DAG:{ASSETS_DAG}"] if api == "v2" else [])]


FEATURES = [
    Feature("dag_run_sensor", _dag_needs(), lambda up, c: _dag_run(up, c)),
    Feature(
        "dag_run_sensor_tasks",
        _dag_needs("Task Instances"),
        lambda up, c: _dag_run(up, c, task_ids=["extract"]),
    ),
    Feature("asset_sensor", _asset_needs, _asset, warns=(f"DAG:{ASSETS_DAG}",)),
    Feature("run_watcher", _dag_needs(), _run_watcher),
    Feature("asset_watcher", _asset_needs, _asset_watcher, warns=(f"DAG:{ASSETS_DAG}",)),
    Feature("task_alert", _dag_needs("Task Instances"), _task_alert),
    Feature("doctor_dag", _dag_needs(), lambda up, c: _doctor(up, c, dag_id=PRODUCER)),
    Feature("doctor_asset", _asset_needs, lambda up, c: _doctor(up, c, asset_uri=BEARS)),
]
CASES = [
    (api, f, removed)
    for api in ("v2", "v1")
    for f in FEATURES
    for removed in [None, *f.needs(api)]
    # a watcher's or alert's lost permission is an error its log names (looked at again later): the
    # sensor rows already prove the words; their full sets are proven here
    if removed is None or not f.name.endswith(("watcher", "alert")) or removed == f.needs(api)[0]
]


async def _closing(look: Any) -> str:
    """The look's outcome; then the HTTP clients its event loop shared are closed."""
    try:
        return await look
    finally:
        await close_loop_clients()


def _case_conn(up: Up, monkeypatch, resources: list[str]) -> str:
    """A role with exactly these can_read resources, its user, and a connection with that user."""
    up.cases += 1
    name = f"perm_{up.api}_{up.cases}_{uuid.uuid4().hex[:6]}"
    up.server.set_role(name, [("can_read", r) for r in resources])
    up.server.set_user(name, PASSWORD, [name])
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", _conn(up.server.base_url, name))
    return name


@pytest.mark.parametrize(
    ("api", "feature", "removed"), CASES, ids=[f"{a}-{f.name}-{r or 'all'}" for a, f, r in CASES]
)
def test_each_feature_works_with_its_permissions_and_names_each_missing_one(
    ups, api, feature: Feature, removed, monkeypatch, downstream_db, capfd
):
    Output.capfd = capfd
    up = ups[api]
    granted = [r for r in feature.needs(api) if r != removed]
    conn = _case_conn(up, monkeypatch, granted)
    said = asyncio.run(_closing(feature.look(up, conn)))
    if removed is None:
        assert said == "ok", said
        return
    assert said != "ok", f"{feature.name} worked without {removed}"
    assert removed in said, said  # the missing permission's resource, by name (a DAG as DAG:<id>)
    if removed in feature.warns:  # a hidden producer: said once, and the wait goes on
        assert f"cannot see producer {ASSETS_DAG}" in said or "events exist that the listing hides" in said, (
            said
        )
    else:
        assert "Traceback" not in said


# --- a real triggerer, the page, and no leak -------------------------------------------------------------


def _roles(fab: LocalAirflow) -> None:
    """reader_a / reader_b read the producer (and the viewer's page needs nothing upstream); blind
    reads the assets DAG but not the producer; alice may see only DAG xdep_perm_wait_a downstream."""
    fab.set_role("reader", [("can_read", r) for r in (f"DAG:{PRODUCER}", "DAG Runs", "Task Instances")])
    fab.set_role("blind", [("can_read", r) for r in (f"DAG:{ASSETS_DAG}", "DAG Runs", "Task Instances")])
    downstream_a = ["DAG:xdep_perm_wait_a", "DAG Runs", "Task Instances", "Website"]
    fab.set_role("sees_a", [("can_read", r) for r in downstream_a])
    for user, role in (
        ("reader_a", "reader"),
        ("reader_b", "reader"),
        ("blind", "blind"),
        ("alice", "sees_a"),
    ):
        fab.set_user(user, PASSWORD, [role])


def test_a_deferred_wait_on_a_dag_its_user_cannot_see_fails_in_the_triggerer_saying_why(fab):
    _roles(fab)
    run_id = fab.trigger("xdep_perm_hidden", conf={"run_id": "any"}, logical_date=_now())
    assert fab.wait_run("xdep_perm_hidden", run_id, timeout=240) == "failed"
    log = _task_log(fab, "xdep_perm_hidden", run_id)
    assert f"DAG '{PRODUCER}' not found at {fab.base_url}, or not readable by user 'blind'" in log, log[
        -3000:
    ]
    assert f"grant user 'blind' read on DAG:{PRODUCER}" in log and "does not exist" not in log


def _task_log(server: LocalAirflow, dag_id: str, run_id: str) -> str:
    files = sorted(server.log_dir.rglob("*.log"))
    texts = [
        p.read_text(errors="replace") for p in files if f"dag_id={dag_id}" in str(p) and run_id in str(p)
    ]
    return "\n".join(texts)


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _json(server: LocalAirflow, path: str, user: str) -> tuple[int, str]:
    token = server.token(user, PASSWORD)
    request = urllib.request.Request(server.base_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_page_shows_a_viewer_only_the_dags_their_role_reads_in_a_real_browser(fab, tmp_path):
    """alice (a per-DAG role on xdep_perm_wait_a) sees its wait in flight and its upstream; the other
    DAG's row, its connection's host and its state appear neither in the HTML nor in the JSON."""
    from playwright.sync_api import sync_playwright

    _roles(fab)
    later = f"later_{uuid.uuid4().hex[:8]}"  # a run that never comes: both waits stay in flight
    runs = {d: fab.trigger(d, conf={"run_id": later}, logical_date=_now()) for d in PERM_DAGS[:2]}

    def both_in_flight() -> bool:
        status, body = _json(fab, "/xdep-sensors/api/dependencies", "admin_viewer")
        items = json.loads(body)["dependencies"] if status == 200 else []
        return sum(1 for i in items if i["dag_id"] in PERM_DAGS[:2] and i["in_flight"]) == 2

    fab.set_user("admin_viewer", PASSWORD, ["Admin"])
    wait_for(both_in_flight, 180, "both waits in flight on the page (as an admin sees it)")
    status, body = _json(fab, "/xdep-sensors/api/dependencies", "alice")
    assert status == 200, body
    dags = {i["dag_id"] for i in json.loads(body)["dependencies"]}
    assert dags == {"xdep_perm_wait_a"}, dags
    assert "xdep_perm_wait_b" not in body and "localhost:" not in body and "perm_b" not in body

    page_url = f"{fab.base_url}/xdep-sensors/dependencies"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            assert page.goto(page_url).status == 401  # not logged in
            page.goto(f"{fab.base_url}/auth/login/")  # FAB's own login form
            page.locator("input[name=username]").fill("alice")
            page.locator("input[name=password]").fill(PASSWORD)
            page.locator("input[type=submit], button[type=submit]").first.click()
            page.wait_for_url(re.compile(r"^(?!.*/login).*$"), timeout=60_000)
            response = page.goto(page_url)
            assert response is not None and response.status == 200
            html = page.content()
            assert "xdep_perm_wait_a" in html and later in html  # its wait, rendered
            assert "xdep_perm_wait_b" not in html and "localhost:" not in html and "perm_b" not in html
            assert PASSWORD not in html
        finally:
            browser.close()
    for dag_id, run_id in runs.items():  # end the waits: their upstream run comes
        fab.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


def test_no_credential_in_the_fab_deployment(fab, ups):
    """The case users' password (and the JWTs it is exchanged for) appear nowhere the FAB deployment
    keeps anything: its PostgreSQL database (trigger kwargs decrypted) and its files."""
    database = "xdep_fab_3_3_2"
    secrets = [form for user in ("reader_a", "reader_b", "blind") for form in secret_forms(user, PASSWORD)]
    assert scan_postgres(database, FERNET_KEY, secrets, jwt_user="blind") == []
    assert scan_files(fab.home, secrets, jwt_user="blind") == []
    assert CANARY_USER  # the canary's scans run on the matrix deployments (test_versions_downstream)
