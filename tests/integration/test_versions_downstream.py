"""Every Airflow 3 minor (3.0.6, 3.1.8, 3.2.2, 3.3.2) as a real downstream deployment with a triggerer.

Each runs both sensors deferrable (in ``airflow triggerer``) and in poke mode (in a worker), a
task-group wait, a watcher and the durable trigger state, against the upstream of its own
version: the 3.0.6 downstream polls a 3.0.6 upstream (no shared streams, no server-side task-group
filter, no asset state store: every feature's fallback), the 3.3.2 one a 3.3.2 upstream.

The durable state is proven with the library's watcher (an event before and one during a restart of
every triggerer each fire once) and with the test-only ``CounterTrigger`` (tests/versions/counter_trigger.py):
it reads a counter, adds one, writes it and fires it, each time a triggerer starts it. Fired 1 and
then 2 after a triggerer restart proves the state was read and written durably; a store that loses
writes fires 1 twice. Below 3.3 the state is an Airflow Variable; from 3.3 the asset state store.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from devtools import postgres
from devtools.airflow_local import CANARY_PASSWORD, CANARY_USER, LocalAirflow, free_port
from tests.integration.conftest import (
    AWS_SECRET,
    AWS_SESSION_TOKEN,
    ROOT,
    Composer,
    MatrixUpstream,
    Mwaa,
    airflow_bin,
    local_asset_events,
    local_asset_id,
    wait_for,
)
from tests.integration.test_composer_live import secrets as composer_secrets
from tests.leakscan import encrypted_rows, scan_files, scan_postgres, secret_forms
from xdep_sensors.triggers.state import variable_key
from xdep_sensors.triggers.watchers import RemoteAssetEventTrigger

pytestmark = pytest.mark.integration

# 3.3.2+mwaa: the 3.3.2 downstream whose upstreams (3.3.2 and 2.11.2) are reached as Amazon MWAA
# environments, through the local AWS double (conftest ``mwaa``) and real Airflow AWS connections
# 3.3.2+composer: the same upstreams as Cloud Composer environments, behind the local Google doubles
# (conftest ``composer``) and real Airflow Google connections
DOWNSTREAM_VERSIONS = ("3.0.6", "3.1.8", "3.2.2", "3.3.2", "3.3.2+mwaa", "3.3.2+composer")
# Two triggerers from 3.2: below, Airflow hands every AssetWatcher trigger to each triggerer that looks
# for work (``Trigger.get_sorted_triggers`` selects asset triggers whoever holds them; fixed in 3.2), so
# each triggerer runs the watcher and every upstream event fires once per triggerer.
HA_VERSIONS = ("3.2.2", "3.3.2")

# production shape: secrets in the metadata DB (trigger kwargs, Variables) are encrypted
FERNET_KEY = "ZmVybmV0LWtleS1vZi10aGUtdmVyc2lvbi1tYXRyaXg="
COUNTER_URI = "xdep://durable/counter"
COUNTER_KEY = "tests:durable:counter"


def local_payloads(server: LocalAirflow, uri: str) -> list[dict]:
    """Payloads of the deployment's own asset events of uri (fired by its watcher triggers)."""
    asset_id = local_asset_id(server, uri)
    if asset_id is None:
        return []
    return [
        e["extra"]["payload"] for e in sorted(local_asset_events(server, asset_id), key=lambda e: e["id"])
    ]


def check_counter_across_restart(server: LocalAirflow, version: str, while_stopped=lambda: None) -> str:
    """The counter fired, every triggerer restarts, it fires a higher number: return the backend it used.

    Each start reads the counter, writes it plus one, then fires it. A store that loses writes fires a
    number twice; one that keeps them fires strictly increasing numbers, and the value stored is the
    last one fired. (A triggerer SIGKILLed between the write and the event's commit, as in the
    failover test, loses that event: a gap, not a repeat.)"""
    first = wait_for(lambda: local_payloads(server, COUNTER_URI), 180, "the counter's first event")
    fired = [p["n"] for p in first]
    assert fired == sorted(set(fired)) and fired[0] == 1, first
    for name in server.triggerer_names():  # every triggerer: none may take the trigger over meanwhile
        server.stop_component(name)
    while_stopped()
    for name in server.triggerer_names():
        server.start_component(name)

    def one_more():
        payloads = local_payloads(server, COUNTER_URI)
        return payloads if len(payloads) > len(first) else None

    both = wait_for(one_more, 180, "the counter's event after the triggerer restart")
    after = [p["n"] for p in both]
    assert after[: len(fired)] == fired and after == sorted(set(after)), both  # higher, never repeated
    backend = both[-1]["backend"]
    assert backend == ("asset_state_store" if version >= "3.3" else "variable")
    if backend == "variable":  # the value is where durable.py says, readable through the API
        var = server.api("GET", f"/api/v2/variables/{variable_key(COUNTER_KEY)}")
        assert json.loads(var["value"]) == {"n": after[-1]}
    return backend


@dataclass
class Downstream:
    version: str
    server: LocalAirflow
    up: MatrixUpstream
    database: str
    mwaa: Mwaa | None = None  # the upstreams are reached through MWAA InvokeRestApi
    composer: Composer | None = None  # the upstreams are reached as Cloud Composer environments

    @property
    def label(self) -> str:
        """The versions table's row: the version, or the version behind MWAA or Composer."""
        if self.mwaa or self.composer:
            return f"{self.version} via {'MWAA' if self.mwaa else 'Composer'}"
        return self.version

    @property
    def secrets(self) -> list[bytes]:
        """The connections' credentials, in every form they could leak in."""
        if self.mwaa is not None:
            keys = (AWS_SECRET, AWS_SECRET + "-wrong", AWS_SESSION_TOKEN)
            return [k.encode() for k in keys] + [s.encode() for s in self.mwaa.double.signatures]
        if self.composer is not None:
            return composer_secrets(self.composer)
        return [
            *secret_forms(CANARY_USER, CANARY_PASSWORD),
            *secret_forms(CANARY_USER, CANARY_PASSWORD + "-wrong"),
        ]

    def ti_state(self, dag_id: str, run_id: str) -> str | None:
        return self.server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait").get(
            "state"
        )

    def result(self, dag_id: str, run_id: str):
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait/xcomEntries/return_value"
        value = self.server.api("GET", path)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str) -> str:
        """The sensor task's log as the UI shows it (the triggerer's part included), as text."""
        body = self.server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/wait/logs/1")
        return json.dumps(body["content"]) if isinstance(body, dict) else str(body)

    def worker_runs(self, dag_id: str, run_id: str) -> int:
        return self.server.worker_runs(dag_id, run_id, "wait")

    def assert_worker_runs(self, dag_id: str, run_id: str, expected: int) -> None:
        """The sensor task ran on a worker ``expected`` times. A run that Airflow's stale defer-exit race
        failed (``LocalAirflow.wait_run`` clears it and waits again) has a try more, so only more runs."""
        runs = self.worker_runs(dag_id, run_id)
        raced = (dag_id, run_id) in self.server.cleared_runs
        assert runs == expected or (raced and runs > expected), (runs, expected, raced)

    def wait_success(self, dag_id: str, run_id: str) -> None:
        """Wait for the downstream run to end; if it did not succeed, say why (sensor log, components)."""
        state = self.server.wait_run(dag_id, run_id, timeout=180)
        if state != "success":
            try:
                log = self.task_log(dag_id, run_id)[-4000:]
            except RuntimeError as err:
                log = f"(task log unreadable: {err})"
            raise AssertionError(
                f"{dag_id} {run_id} ended {state!r}; sensor log:\n{log}\n"
                f"{self.server.tail_logs(20)}\n{self.up.server.tail_logs(20)}"
            )

    def start_waiting(self, dag_id: str, variant: str, conf: dict) -> str:
        """Trigger a downstream run; return once its sensor is deferred (or poking in a worker)."""
        run_id = self.server.trigger(dag_id, conf=conf, logical_date=datetime.now(timezone.utc))
        waiting = "deferred" if variant == "defer" else "running"
        wait_for(lambda: self.ti_state(dag_id, run_id) == waiting, 180, f"{dag_id} {waiting}")
        return run_id


def _upstream_polls(up: MatrixUpstream) -> int:
    log = up.server.log_dir / "api-server.log"
    return sum("/api/v2/assets/events" in line for line in log.read_text(errors="replace").splitlines())


def _database(version: str) -> str:
    return "xdep_downstream_" + version.replace(".", "_").replace("+", "_")


@pytest.fixture(scope="module", params=DOWNSTREAM_VERSIONS)
def downstream(request, matrix_upstreams, tmp_path_factory) -> Downstream:
    version, _, via = request.param.partition("+")
    up = matrix_upstreams[version]
    # the canary user: the leak scan looks for its password and for the JWTs it is exchanged for
    conn = {
        "conn_type": "remote_airflow",
        "host": up.server.base_url,
        "login": CANARY_USER,
        "password": CANARY_PASSWORD,
    }
    bad = {**conn, "password": CANARY_PASSWORD + "-wrong"}
    v1 = matrix_upstreams["2.11.2"].server  # the Remote dependencies page shows an Airflow 2 upstream too
    conn_v1 = {"conn_type": "remote_airflow", "host": v1.base_url, "login": "viewer", "password": "viewer"}
    mwaa: Mwaa | None = request.getfixturevalue("mwaa") if via == "mwaa" else None
    cloud_conns = {}
    if mwaa is not None:  # the same upstreams as MWAA environments: the AWS identity is the credential
        conn, bad, conn_v1 = (
            json.loads(os.environ[f"AIRFLOW_CONN_{name}"])
            for name in ("MWAA_V2", "MWAA_V2_BAD_SECRET", "MWAA_V1")
        )
        cloud_conns = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_AWS_MWAA")}
    composer: Composer | None = request.getfixturevalue("composer") if via == "composer" else None
    if composer is not None:  # the same upstreams behind Composer's front: Google identities' tokens
        conn, bad, conn_v1 = (
            json.loads(os.environ[f"AIRFLOW_CONN_{name}"])
            for name in ("COMPOSER_V2", "COMPOSER_V2_REVOKED", "COMPOSER_V1")
        )
        cloud_conns = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_GCP_")}
    # production shape: PostgreSQL, two triggerers
    server = LocalAirflow(
        tmp_path_factory.mktemp(f"downstream-{request.param}"),
        airflow_bin(version),
        major=3,
        dags_folder=ROOT / "tests" / "versions" / "downstream_dags",
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        name=f"downstream-{request.param}",
        database_url=postgres.fresh_database(_database(request.param)),
        triggerers=2 if request.param in HA_VERSIONS else 1,
        extra_env={
            "AIRFLOW_CONN_UP": json.dumps(conn),
            "AIRFLOW_CONN_UP_BAD": json.dumps(bad),
            "AIRFLOW_CONN_UP_V1": json.dumps(conn_v1),
            "AIRFLOW_CONN_UP_DEAD": json.dumps(
                {"conn_type": "remote_airflow", "host": f"http://127.0.0.1:{free_port()}"}
            ),
            "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
            "PYTHONPATH": str(ROOT),
            **cloud_conns,
        },
    )
    polls = _upstream_polls(up)
    try:
        server.start(timeout=300)
        for dag_id in (
            "xdep_v_run_defer",
            "xdep_v_run_poke",
            "xdep_v_asset_defer",
            "xdep_v_asset_poke",
            "xdep_v_run_free",
            "xdep_v_run_free_skip",
            "xdep_v_run_free_badauth",
            "xdep_v_asset_free",
            "xdep_v_run_v1",
            "xdep_v_run_dead",
            "xdep_v_group_defer",
            "xdep_v_watch",
            "xdep_durable_counter",
        ):
            server.wait_for_dag(dag_id, timeout=180)
        # the watcher starts from "now" (or its stored cursor): wait until it has polled the upstream
        wait_for(lambda: _upstream_polls(up) >= polls + 2, 180, "the watcher's first polls upstream")
        yield Downstream(version, server, up, _database(request.param), mwaa, composer)
    finally:
        server.stop()


def test_watcher_schedules_a_downstream_dag(downstream, matrix_record):
    marker = uuid.uuid4().hex
    downstream.up.asset_event("file://include/bears", {"marker": marker})

    def fired():
        return [
            p
            for p in local_payloads(downstream.server, "file://include/bears")
            if p["event"]["extra"].get("marker") == marker
        ]  # the API may add from_rest_api

    assert len(wait_for(fired, 120, "the watcher's event downstream")) == 1
    matrix_record(downstream.label, "downstream", "watcher:asset_event")


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_dag_run_sensor(downstream, matrix_record, variant):
    up_run = downstream.up.trigger(hold=True, conf={}, logical_date=datetime.now(timezone.utc))
    dag_id = f"xdep_v_run_{variant}"
    run_id = downstream.start_waiting(dag_id, variant, {"run_id": up_run})
    assert downstream.up.finish_run(up_run) == "success"
    downstream.wait_success(dag_id, run_id)
    result = downstream.result(dag_id, run_id)
    assert (result["run_id"], result["state"]) == (up_run, "success")
    if variant == "defer":  # what the trigger saw is in the task's log, under the trigger class's logger
        log = downstream.task_log(dag_id, run_id)
        assert f"xdep_test_producer run {up_run}: success" in log, log[-3000:]
        assert "xdep_sensors.triggers.RemoteDagRunTrigger" in log, log[-3000:]
        downstream.assert_worker_runs(dag_id, run_id, 2)  # the classic deferral: the start and the resume
    matrix_record(downstream.label, "downstream", f"dag_run_sensor:{variant}")


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_asset_sensor(downstream, matrix_record, variant):
    dag_id = f"xdep_v_asset_{variant}"
    marker = uuid.uuid4().hex
    run_id = downstream.start_waiting(dag_id, variant, {"since": datetime.now(timezone.utc).isoformat()})
    downstream.up.asset_event("file://include/bears", {"marker": marker})
    downstream.wait_success(dag_id, run_id)
    assert [e["extra"].get("marker") for e in downstream.result(dag_id, run_id)] == [marker]
    matrix_record(downstream.label, "downstream", f"asset_sensor:{variant}")


def _starts_in_triggerer(version: str) -> bool:
    return tuple(int(p) for p in version.split(".")) >= (3, 3)


@pytest.mark.parametrize("outcome", ["success", "failed", "skipped"])
def test_worker_free_dag_run_sensor(downstream, matrix_record, outcome):
    """start_from_trigger + end_from_trigger: no worker run from 3.3 (below, one: the start); the
    task ends in the trigger with the worker path's outcome, XCom and log line."""
    up_run = downstream.up.trigger(
        hold=True,
        conf={} if outcome == "success" else {"fail": True},
        logical_date=datetime.now(timezone.utc),
    )
    dag_id = "xdep_v_run_free_skip" if outcome == "skipped" else "xdep_v_run_free"
    run_id = downstream.start_waiting(dag_id, "defer", {"run_id": up_run})
    assert downstream.up.finish_run(up_run, state="success" if outcome == "success" else "failed") == (
        "success" if outcome == "success" else "failed"
    )
    downstream.server.wait_run(dag_id, run_id, timeout=180)
    assert downstream.ti_state(dag_id, run_id) == outcome, downstream.task_log(dag_id, run_id)[-3000:]
    log = downstream.task_log(dag_id, run_id)
    if outcome == "success":
        result = downstream.result(dag_id, run_id)
        assert (result["run_id"], result["state"]) == (up_run, "success")
    else:
        assert f"upstream {outcome}: xdep_test_producer run {up_run}: failed" in log, log[-3000:]
    runs = 0 if _starts_in_triggerer(downstream.version) else 1
    downstream.assert_worker_runs(dag_id, run_id, runs)
    matrix_record(downstream.label, "downstream", f"worker_free:dag_run:{outcome}:{runs}")


def test_worker_free_asset_sensor(downstream, matrix_record):
    dag_id = "xdep_v_asset_free"
    marker = uuid.uuid4().hex
    run_id = downstream.start_waiting(dag_id, "defer", {"since": datetime.now(timezone.utc).isoformat()})
    downstream.up.asset_event("file://include/bears", {"marker": marker})
    downstream.wait_success(dag_id, run_id)
    assert [e["extra"].get("marker") for e in downstream.result(dag_id, run_id)] == [marker]
    runs = 0 if _starts_in_triggerer(downstream.version) else 1
    downstream.assert_worker_runs(dag_id, run_id, runs)
    matrix_record(downstream.label, "downstream", f"worker_free:asset:{runs}")


def _trigger_hosts(downstream: Downstream) -> list[str | None]:
    """The hostname of the triggerer running each trigger (None: not assigned), from the ``trigger`` and
    ``job`` tables (the ``job`` table keeps hostnames, not pids: each triggerer has its own)."""
    rows = postgres.query(
        downstream.database,
        "SELECT j.hostname FROM trigger t LEFT JOIN job j ON j.id = t.triggerer_id ORDER BY t.id",
    )
    return [r[0] for r in rows]


def _triggerers_that_ran(downstream: Downstream, dag_id: str, run_id: str) -> set[str]:
    """Hostnames of the triggerers that ran a task's trigger: each writes the task's trigger log to a file
    of its own, ``<attempt>.log.trigger.<job id>.log``; the ``job`` table has the job's hostname."""
    folder = downstream.server.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=wait"
    jobs = [
        int(m.group(1))
        for f in folder.glob("*.log.trigger.*.log")
        if (m := re.search(r"\.(\d+)\.log$", f.name))
    ]
    rows = postgres.query(downstream.database, "SELECT hostname FROM job WHERE id = ANY(%s)", (jobs,))
    return {r[0] for r in rows}


@pytest.mark.parametrize("downstream", HA_VERSIONS, indirect=True)
def test_a_killed_triggerers_waits_complete_on_the_other_exactly_once(downstream, matrix_record):
    """Two triggerers; the one running a classic deferred sensor, a worker-free one and the watcher is
    SIGKILLed; the upstream run ends and an asset event appears while no triggerer runs them. Airflow
    hands the triggers to the other triggerer: both sensors succeed once, the watcher fires once."""
    server = downstream.server
    first, second = server.triggerer_names()
    one, two = server.triggerer_hostname(first), server.triggerer_hostname(second)
    server.stop_component(second)  # every trigger on the first one
    runs = {
        dag_id: downstream.up.trigger(hold=True, conf={}, logical_date=datetime.now(timezone.utc))
        for dag_id in ("xdep_v_run_defer", "xdep_v_run_free")
    }
    waits = {
        dag_id: downstream.start_waiting(dag_id, "defer", {"run_id": up_run})
        for dag_id, up_run in runs.items()
    }

    def all_on(host):
        hosts = _trigger_hosts(downstream)
        return len(hosts) >= 3 and set(hosts) == {host}  # the two sensors' triggers and the watcher's

    wait_for(lambda: all_on(one), 180, f"every trigger on {first}")
    server.start_component(second)
    server.kill_component(first)
    marker = uuid.uuid4().hex
    downstream.up.asset_event("file://include/bears", {"marker": marker})
    for up_run in runs.values():
        assert downstream.up.finish_run(up_run) == "success"
    for dag_id, run_id in waits.items():
        downstream.wait_success(dag_id, run_id)
        result = downstream.result(dag_id, run_id)
        assert (result["run_id"], result["state"]) == (runs[dag_id], "success")
        assert downstream.ti_state(dag_id, run_id) == "success"
        # the first one held it (above); the other one ran it to the end (a SIGKILLed triggerer may not
        # have flushed its part of the task's trigger log)
        assert two in _triggerers_that_ran(downstream, dag_id, run_id)

    def fired(mark):
        return [
            p
            for p in local_payloads(server, "file://include/bears")
            if p["event"]["extra"].get("marker") == mark
        ]

    wait_for(lambda: fired(marker), 180, "the watcher's event after the failover")
    later = uuid.uuid4().hex  # once a later event has fired, a repeat of the first would have too
    downstream.up.asset_event("file://include/bears", {"marker": later})
    wait_for(lambda: fired(later), 180, "the watcher's next event")
    assert len(fired(marker)) == 1
    assert set(_trigger_hosts(downstream)) == {two}  # the watcher's trigger, now on the other triggerer
    downstream.assert_worker_runs("xdep_v_run_defer", waits["xdep_v_run_defer"], 2)
    downstream.assert_worker_runs(
        "xdep_v_run_free", waits["xdep_v_run_free"], 0 if _starts_in_triggerer(downstream.version) else 1
    )
    server.start_component(first)  # two triggerers again for the module's other tests
    matrix_record(downstream.label, "downstream", "triggerer_failover")


def _heartbeat(downstream: Downstream, host: str):
    """The latest heartbeat of the triggerer job of that hostname (the database's clock)."""
    rows = postgres.query(
        downstream.database,
        "SELECT max(latest_heartbeat) FROM job WHERE job_type = 'TriggererJob' AND hostname = %s",
        (host,),
    )
    return rows[0][0]


@pytest.mark.parametrize("downstream", HA_VERSIONS, indirect=True)
def test_a_stalled_triggerer_does_not_fire_again_when_it_resumes(downstream, matrix_record):
    """The supervisor of the triggerer running the watcher stalls (SIGSTOP: no heartbeat, no metadata DB,
    as on a database that does not answer) while its trigger runner goes on polling. Airflow hands the
    watcher to the other triggerer, which fires the next upstream event; the stalled one's copy sees
    that event too. When the supervisor resumes it passes on what its runner fired before it cancels
    the copy: the copy reads the watcher's stored state before it fires, so the event fires once."""
    server = downstream.server
    first, second = server.triggerer_names()
    one, two = server.triggerer_hostname(first), server.triggerer_hostname(second)

    def fired(mark):
        return [
            p
            for p in local_payloads(server, "file://include/bears")
            if p["event"]["extra"].get("marker") == mark
        ]

    server.stop_component(second)  # the watcher (and the counter) on the first one
    wait_for(lambda: set(_trigger_hosts(downstream)) == {one}, 180, f"every trigger on {first}")
    warm = uuid.uuid4().hex  # the first one's watcher runs: it has fired an event
    downstream.up.asset_event("file://include/bears", {"marker": warm})
    wait_for(lambda: fired(warm), 180, f"an event fired by {first}")
    server.start_component(second)
    server.pause_component(first, leader_only=True)
    marker = uuid.uuid4().hex
    try:
        wait_for(lambda: set(_trigger_hosts(downstream)) == {two}, 180, f"the watcher handed to {second}")
        downstream.up.asset_event("file://include/bears", {"marker": marker})
        wait_for(lambda: fired(marker), 180, f"the event fired by {second}")
    finally:
        resumed = postgres.query(downstream.database, "SELECT now()")[0][0]
        server.resume_component(first)
    # the resumed supervisor's loop passes on its runner's events before it heartbeats
    wait_for(lambda: (_heartbeat(downstream, one) or resumed) > resumed, 180, f"{first} heartbeating again")
    later = uuid.uuid4().hex  # once a later event has fired, a repeat of the first would have too
    downstream.up.asset_event("file://include/bears", {"marker": later})
    wait_for(lambda: fired(later), 180, "the watcher's next event")
    assert len(fired(marker)) == 1, fired(marker)
    assert len(fired(warm)) == 1 and len(fired(later)) == 1, (fired(warm), fired(later))
    matrix_record(downstream.label, "downstream", "triggerer_stall")


def test_task_group_wait(downstream, matrix_record):
    up_run = downstream.up.trigger(hold=True, conf={}, logical_date=datetime.now(timezone.utc))
    run_id = downstream.start_waiting("xdep_v_group_defer", "defer", {"run_id": up_run})
    downstream.up.finish_run(up_run)
    downstream.wait_success("xdep_v_group_defer", run_id)
    result = downstream.result("xdep_v_group_defer", run_id)
    assert result["run_id"] == up_run
    # decided on the group's tasks, not on the run (a sensor that ignored task_group_id has no "tasks")
    assert result["tasks"] == {"grp.a": "success", "grp.b": "success"}, result
    matrix_record(downstream.label, "downstream", "task_group_sensor:defer")


def test_trigger_state_survives_a_triggerer_restart(downstream, matrix_record):
    """The test-only counter (above) and the library's own watcher keep their state across a restart of
    every triggerer: an upstream event from before fires once, one produced while no triggerer ran fires
    once after. Below 3.3 the watcher's state is the Variable durable.py names, holding that event."""
    server, up = downstream.server, downstream.up
    before, during = uuid.uuid4().hex, uuid.uuid4().hex

    def fired(marker):
        return [
            p["event"]
            for p in local_payloads(server, "file://include/bears")
            if p["event"]["extra"].get("marker") == marker
        ]

    up.asset_event("file://include/bears", {"marker": before})
    wait_for(lambda: fired(before), 180, "the watcher's event before the restart")
    backend = check_counter_across_restart(
        server,
        downstream.version,
        while_stopped=lambda: up.asset_event("file://include/bears", {"marker": during}),
    )
    # the watcher hands events over in upstream order: once the later one is here, a repeat of the
    # earlier one (a lost state) would have been fired before it
    after = wait_for(lambda: fired(during), 180, "the event produced while no triggerer ran")
    assert len(after) == 1 and len(fired(before)) == 1, (after, fired(before))
    if backend == "variable":
        watcher = RemoteAssetEventTrigger(
            remote_conn_id="up", asset_uri="file://include/bears", poll_interval=2
        )
        state = json.loads(
            server.api("GET", f"/api/v2/variables/{variable_key(watcher._state_key)}")["value"]
        )
        assert state["timestamp"] is not None and after[0]["id"] in state["seen_ids"] + [
            k for k, _ in state["recent"]
        ]
    matrix_record(downstream.label, "downstream", f"durable_state:{backend}")


def test_no_credential_in_the_deployment(downstream, matrix_record):
    """The connection's password (the canary user's), a wrong one, and the JWTs an upstream issues for
    them appear nowhere the downstream keeps anything: its PostgreSQL database (``pg_dump``, plus trigger
    kwargs and Variables decrypted with its Fernet key) and its files (task, trigger and component logs),
    while waits are in flight and after they ended. A worker-free wait with the wrong password fails in
    the trigger, saying what to fix."""
    server, database = downstream.server, downstream.database
    up_run = downstream.up.trigger(hold=True, conf={}, logical_date=datetime.now(timezone.utc))
    waits = {
        dag_id: downstream.start_waiting(dag_id, "defer", conf)
        for dag_id, conf in (
            ("xdep_v_run_defer", {"run_id": up_run}),
            ("xdep_v_run_free", {"run_id": up_run}),
            ("xdep_v_asset_free", {"since": datetime.now(timezone.utc).isoformat()}),
        )
    }
    bad = server.trigger(
        "xdep_v_run_free_badauth", conf={"run_id": up_run}, logical_date=datetime.now(timezone.utc)
    )

    def in_flight():  # every wait's trigger is stored (the watchers' and the counter's too)
        return len(_trigger_hosts(downstream)) >= 5

    wait_for(in_flight, 180, "the waits' triggers in the trigger table")
    assert encrypted_rows(database) >= 5
    # the scan sees inside the encrypted kwargs: the upstream run id is in the waits' triggers
    assert any(h.startswith("trigger ") for h in scan_postgres(database, FERNET_KEY, [up_run.encode()]))
    assert scan_postgres(database, FERNET_KEY, downstream.secrets, jwt_user=CANARY_USER) == []

    marker = uuid.uuid4().hex
    downstream.up.asset_event("file://include/bears", {"marker": marker})
    assert downstream.up.finish_run(up_run) == "success"
    for dag_id, run_id in waits.items():
        downstream.wait_success(dag_id, run_id)
    assert server.wait_run("xdep_v_run_free_badauth", bad, timeout=180) == "failed"
    log = downstream.task_log("xdep_v_run_free_badauth", bad)
    if downstream.mwaa is not None:
        expected = ("AWS rejected the request signature", "check the secret access key")
    elif downstream.composer is not None:
        expected = ("Google refused the key of Google connection 'gcp_revoked'", "create a new key")
    else:
        expected = ("authentication failed for conn 'up_bad'", "check the login and password")
    assert all(words in log for words in expected), log[-3000:]
    runs = downstream.worker_runs("xdep_v_run_free_badauth", bad)
    assert runs == (0 if _starts_in_triggerer(downstream.version) else 1)

    secrets = downstream.secrets  # the MWAA double's signatures of this run included
    assert scan_postgres(database, FERNET_KEY, secrets, jwt_user=CANARY_USER) == []
    # passwords.json: the test harness's users of this deployment's own UI (the canary is one of them)
    assert scan_files(server.home, secrets, jwt_user=CANARY_USER, skip=("passwords.json",)) == []
    matrix_record(downstream.label, "downstream", f"worker_free:dag_run:auth_failed:{runs}")
    matrix_record(downstream.label, "downstream", "no_credential_leak:postgres")


def _get(server: LocalAirflow, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(server.base_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_remote_dependencies_json(downstream, matrix_upstreams, matrix_record):
    """The plugin's JSON route on a real downstream: every sensor and the watcher from its serialized DAGs,
    a wait in flight with its rendered target, what the upstreams (its own version's, and Airflow 2.11)
    show now; refused without a user; no credential in it."""
    server = downstream.server
    for upstream in (matrix_upstreams["2.11.2"], downstream.up):  # a run to show on each
        upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    up_run = f"later_{uuid.uuid4().hex[:8]}"  # a run that does not exist yet: the wait stays in flight
    run_id = downstream.start_waiting("xdep_v_run_defer", "defer", {"run_id": up_run})

    assert _get(server, "/xdep-sensors/api/dependencies")[0] == 401
    assert _get(server, "/xdep-sensors/dependencies")[0] == 401
    status, text = _get(
        server,
        "/xdep-sensors/api/dependencies",
        {"Authorization": f"Bearer {server.token('viewer', 'viewer')}"},
    )
    assert status == 200 and CANARY_PASSWORD not in text
    body = json.loads(text)
    items = {(i.get("dag_id"), i.get("task_id")): i for i in body["dependencies"] if i["kind"] != "watcher"}
    assert {d for d, _ in items} >= {
        "xdep_v_run_defer",
        "xdep_v_run_poke",
        "xdep_v_asset_defer",
        "xdep_v_run_free",
        "xdep_v_group_defer",
        "xdep_v_run_v1",
    }
    waiting = items[("xdep_v_run_defer", "wait")]
    assert (waiting["kind"], waiting["remote_conn_id"], waiting["upstream"]["external_dag_id"]) == (
        "dag_run_sensor",
        "up",
        "xdep_test_producer",
    )
    assert waiting["upstream"]["run_id"] == "{{ dag_run.conf['run_id'] }}"  # declared: the template
    flight = [w for w in waiting["in_flight"] if w["run_id"] == run_id]
    assert flight and flight[0]["state"] == "deferred" and flight[0]["target"]["run_id"] == up_run  # rendered
    assert waiting["status"] == "waiting" and waiting["upstream_now"]["latest_run"]["run_id"]
    assert items[("xdep_v_group_defer", "wait")]["upstream"]["task_group_id"] == "grp"
    assert items[("xdep_v_asset_free", "wait")]["mode"] == (
        "worker-free" if _starts_in_triggerer(downstream.version) else "deferrable, ends in the triggerer"
    )
    assert items[("xdep_v_run_poke", "wait")]["mode"] == "poke"
    watchers = [
        i for i in body["dependencies"] if i["kind"] == "watcher" and "xdep_v_watch" in i["schedules"]
    ]
    assert watchers and watchers[0]["trigger"] == "RemoteAssetEventTrigger"
    assert watchers[0]["upstream"]["asset_uri"] == "file://include/bears"
    up, v1 = body["upstreams"]["up"], body["upstreams"]["up_v1"]
    assert (up["reachable"], up["authenticated"], up["api"], up["version"]) == (
        True,
        True,
        "v2",
        downstream.version,
    )
    assert (v1["reachable"], v1["authenticated"], v1["api"], v1["version"]) == (True, True, "v1", "2.11.2")
    assert items[("xdep_v_run_v1", "wait")]["upstream_now"]["latest_run"]["run_id"]
    dead = body["upstreams"]["up_dead"]  # nobody listens there: shown as such, the page still served
    assert (
        dead["reachable"] is False
        and dead["error"]
        and items[("xdep_v_run_dead", "wait")]["status"] == "unreachable"
    )
    if downstream.composer is not None:  # the web server's URL: here the Google front's
        assert (up["host"], v1["host"]) == (
            downstream.composer.fronts["v2"].base_url,
            downstream.composer.fronts["v1"].base_url,
        )
        assert not any(s.decode() in text for s in downstream.secrets)
    elif downstream.mwaa is None:
        assert up["host"] == downstream.up.server.base_url
    else:  # named as people know it; the links go to the web server URL (the connection's host)
        assert (up["host"], v1["host"]) == ("MWAA environment up-v2", "MWAA environment up-v1")
        assert up["ui"] == downstream.up.server.base_url
        assert not any(s.decode() in text for s in downstream.secrets)
    assert "viewer" not in json.dumps(body["upstreams"])

    if downstream.version >= "3.1":  # in the UI's navigation (3.0 has no plugin views)
        plugins = server.api("GET", "/api/v2/plugins")["plugins"]
        views = [v for p in plugins if p["name"] == "xdep_sensors" for v in p.get("external_views", [])]
        assert [v["href"] for v in views] == ["/xdep-sensors/dependencies"]
        matrix_record(downstream.label, "downstream", "remote_dependencies:nav")
    end_wait(downstream, up_run, run_id)
    matrix_record(downstream.label, "downstream", "remote_dependencies:json")


def end_wait(downstream: Downstream, up_run: str, run_id: str) -> None:
    """Create the upstream run a wait is waiting for, let it end, and the wait with it."""
    downstream.up.trigger(conf={}, logical_date=datetime.now(timezone.utc), run_id=up_run)
    assert downstream.up.finish_run(up_run) == "success"
    downstream.wait_success("xdep_v_run_defer", run_id)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.parametrize("downstream", ["3.3.2", "3.3.2+mwaa"], indirect=True)
def test_remote_dependencies_page_in_a_real_browser(downstream, matrix_record, tmp_path):
    """Headless Chromium: refused before logging in; after it, Browse -> Remote dependencies shows the page in
    Airflow's UI, with a wait in flight, the upstream's health and the filter. A screenshot for the docs."""
    from playwright.sync_api import sync_playwright

    server = downstream.server
    up_run = f"later_{uuid.uuid4().hex[:8]}"  # a run that does not exist yet: the wait stays in flight
    run_id = downstream.start_waiting("xdep_v_run_defer", "defer", {"run_id": up_run})
    page_url = f"{server.base_url}/xdep-sensors/dependencies"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1000})
            page = context.new_page()
            assert page.goto(page_url).status == 401  # not logged in
            page.goto(f"{server.base_url}/auth/login")  # Airflow's own login form
            page.get_by_label("Username").fill("viewer")
            page.get_by_label("Password").fill("viewer")
            page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"), timeout=60_000)

            page.goto(f"{server.base_url}/plugin/xdep-sensors")  # the UI's route for the plugin's view
            frame = page.frame_locator("iframe")
            frame.get_by_role("heading", name="Remote dependencies").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "remote-dependencies.png"))
            shot = ROOT / ".tmp" / f"remote-dependencies{'-mwaa' if downstream.mwaa else ''}.png"
            shot.parent.mkdir(exist_ok=True)
            shot.write_bytes((tmp_path / "remote-dependencies.png").read_bytes())
            row = frame.locator("tr", has_text="xdep_v_run_defer").first
            assert "waiting" in row.inner_text() and up_run in row.inner_text()  # the rendered run id
            health = frame.locator("section[data-conn=up]").inner_text()
            assert "reachable, Airflow 3.3.2 (API v2), authenticated" in health, health
            if downstream.mwaa is not None:
                assert "MWAA environment up-v2" in health, health

            direct = context.new_page()
            assert direct.goto(page_url + "?q=bears").status == 200  # the same session, the page itself
            texts = direct.locator("tbody tr").all_inner_texts()
            assert texts and all("bears" in t for t in texts)
            assert CANARY_PASSWORD not in direct.content()
        finally:
            browser.close()
    end_wait(downstream, up_run, run_id)
    matrix_record(downstream.label, "downstream", "remote_dependencies:browser")
