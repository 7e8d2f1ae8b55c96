"""Upstreams on Amazon MWAA: every request an ``InvokeRestApi`` call signed by the AWS connection's identity.

The AWS side is a local double built from botocore's own ``mwaa`` model that verifies each SigV4
signature and forwards to the real upstreams (Airflow 3.3 and 2.11); the library reaches it through real
Airflow AWS connections, the Amazon provider's ``MwaaHook`` and aiobotocore. The downstream runs here
(``dag.test()`` and the triggers in this process); a real downstream deployment with a triggerer runs
the same features through MWAA in test_versions_downstream.py (``3.3.2+mwaa``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from tests.integration.conftest import (
    AWS_SECRET,
    AWS_SESSION_TOKEN,
    MWAA_ENVS,
)
from tests.integration.test_asset_sensor_live import clear_cursor, events_of, produce_later
from tests.integration.test_dag_run_sensor_live import run_downstream
from xdep_sensors.errors import ConfigurationError
from xdep_sensors.hooks import RemoteAirflowHook

pytestmark = pytest.mark.integration

SECRETS = (AWS_SECRET, AWS_SESSION_TOKEN, "Signature=")
LABEL = {"v2": "3.3.2 via MWAA", "v1": "2.11.2 via MWAA"}  # the versions table's rows


@pytest.fixture(params=["v2", "v1"])
def api(request) -> str:
    return request.param


def doctor(monkeypatch, capsys, conn_id: str, *args: str) -> tuple[int, str]:
    from xdep_sensors.cli.main import main

    code = main(["doctor", "--conn-id", conn_id, *args])
    out = capsys.readouterr().out
    assert not any(secret in out for secret in SECRETS), out
    return code, out


def test_doctor_through_mwaa(mwaa, api, monkeypatch, capsys):
    before = mwaa.double.count("forwarded", env=MWAA_ENVS[api])
    code, out = doctor(
        monkeypatch,
        capsys,
        mwaa.conn_id(api),
        "--dag-id",
        "xdep_test_producer",
        "--asset-uri",
        "file://include/bears",
    )
    assert code == 0, out
    assert f"MWAA environment {MWAA_ENVS[api]} through InvokeRestApi" in out
    assert f"REST API {api} through airflow:InvokeRestApi (allowed)" in out
    assert "dag xdep_test_producer: exists" in out and "all checks passed" in out
    assert mwaa.double.count("forwarded", env=MWAA_ENVS[api]) > before  # it went through AWS


@pytest.mark.parametrize(
    ("suffix", "words"),
    [
        ("bad_secret", ["AWS rejected the request signature", "secret access key", "aws_mwaa_bad_secret"]),
        ("no_grant", ["airflow:InvokeRestApi", "role/up-v", "/Viewer"]),
        ("public", ["Airflow role", "Viewer"]),
        ("expired", ["the AWS credentials have expired", "renew the session token", "aws_mwaa_expired"]),
    ],
)
def test_doctor_names_each_aws_fault_with_the_fix(mwaa, api, monkeypatch, capsys, suffix, words):
    code, out = doctor(monkeypatch, capsys, f"{mwaa.conn_id(api)}_{suffix}")
    assert code == 1, out
    assert all(w in out for w in words), out


def test_doctor_unknown_environment(mwaa, monkeypatch, capsys):
    code, out = doctor(monkeypatch, capsys, "mwaa_no_env")
    assert code == 1 and "MWAA environment 'no-such-environment' not found" in out, out
    assert "mwaa_environment" in out


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_dag_run_sensor_by_run_id(mwaa, api, downstream_db, out_file, variant, matrix_record):
    upstream = mwaa.upstreams[api]
    # no run id given: Airflow 3 makes a manual one with a random suffix, too long for MWAA's Path in
    # /dags/<dag>/dagRuns/<id>: the library reads it through the DAG's runs filtered by id instead
    run_id = upstream.trigger(conf={"sleep": 3}, logical_date=datetime.now(timezone.utc))
    forwarded = mwaa.double.count("forwarded", env=MWAA_ENVS[api])
    state = run_downstream(
        f"xdep_ds_by_id_{variant}", {"conn": mwaa.conn_id(api), "run_id": run_id, "out": str(out_file)}
    )
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert (result["run_id"], result["state"], result["conf"]) == (run_id, "success", {"sleep": 3})
    assert result["url"].startswith(upstream.server.base_url)  # the connection's host: the web server URL
    assert mwaa.double.count("forwarded", env=MWAA_ENVS[api]) > forwarded
    assert all(len(c.path or "") <= 64 for c in mwaa.double.calls)
    assert mwaa.double.count("ValidationException") == 0  # no path MWAA would refuse was ever sent
    matrix_record(LABEL[api], "upstream", f"dag_run_wait:iam:{variant}")


def test_dag_run_sensor_by_logical_date_and_latest_after(mwaa, api, downstream_db, out_file):
    upstream = mwaa.upstreams[api]
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=5)
    run_id = upstream.trigger(conf={"sleep": 2}, logical_date=when)
    conf = {"conn": mwaa.conn_id(api), "out": str(out_file)}
    assert run_downstream("xdep_ds_by_date_defer", conf, logical_date=when) == "success"
    assert json.loads(out_file.read_text())["run_id"] == run_id
    after = datetime.now(timezone.utc) - timedelta(seconds=1)
    run_id = upstream.trigger(conf={"sleep": 2}, logical_date=datetime.now(timezone.utc))
    assert run_downstream("xdep_ds_latest_after_defer", {**conf, "after": after.isoformat()}) == "success"
    assert json.loads(out_file.read_text())["run_id"] == run_id


def test_task_group_and_failure(mwaa, api, downstream_db, out_file, matrix_record):
    upstream = mwaa.upstreams[api]
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    conf = {"conn": mwaa.conn_id(api), "run_id": run_id, "out": str(out_file)}
    assert run_downstream("xdep_ds_group_defer", conf) == "success"
    assert json.loads(out_file.read_text())["tasks"] == {"grp.a": "success", "grp.b": "success"}
    failed = upstream.trigger(conf={"fail": True}, logical_date=datetime.now(timezone.utc))
    assert run_downstream("xdep_ds_by_id_defer", {**conf, "run_id": failed}) == "failed"
    matrix_record(LABEL[api], "upstream", "task_group_filter")


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_asset_sensor(mwaa, api, downstream_db, out_file, variant, matrix_record):
    upstream = mwaa.upstreams[api]
    dag_id = f"xdep_ds_asset_uri_{variant}"
    clear_cursor(dag_id)
    box = produce_later(upstream, extra={"via": f"mwaa {variant}"})
    state = run_downstream(dag_id, {"conn": mwaa.conn_id(api), "out": str(out_file)})
    box["timer"].join()
    assert state == "success"
    (event,) = events_of(out_file)
    assert event["extra"] == {"via": f"mwaa {variant}"} and event["source_run_id"] == box["run_id"]
    matrix_record(LABEL[api], "upstream", f"asset_wait:iam:{variant}")


def test_throttling_backs_off_and_the_wait_still_succeeds(mwaa, api, downstream_db, out_file):
    upstream = mwaa.upstreams[api]
    run_id = upstream.trigger(conf={"sleep": 2}, logical_date=datetime.now(timezone.utc))
    throttled = mwaa.double.count("ThrottlingException")
    mwaa.double.throttle(3)
    conf = {"conn": mwaa.conn_id(api), "run_id": run_id, "out": str(out_file)}
    assert run_downstream("xdep_ds_by_id_defer", conf) == "success"
    assert mwaa.double.count("ThrottlingException") == throttled + 3
    assert json.loads(out_file.read_text())["run_id"] == run_id


def test_paths_too_long_for_mwaa_are_read_around_or_refused_before_sending(mwaa):
    """Airflow 2 has no run id filter: a run whose /dags/<dag>/dagRuns/<id> path exceeds MWAA's 64
    characters is found through one of its task instances' date; a DAG id too long for any path fails
    before anything is sent, naming the DAG."""
    upstream = mwaa.upstreams["v1"]
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))  # microseconds: long
    assert len(f"/dags/xdep_test_producer/dagRuns/{run_id}") > 64
    hook = RemoteAirflowHook(mwaa.conn_id("v1"))
    run = hook.run(lambda client: client.get_dag_run("xdep_test_producer", run_id))
    assert run is not None and run.run_id == run_id
    sent = len(mwaa.double.calls)
    long_dag = "xdep_test_producer_" + "x" * 50
    with pytest.raises(ConfigurationError) as caught:
        hook.run(lambda client: client.get_dag(long_dag))
    assert f"DAG {long_dag!r}" in str(caught.value) and "at most 64" in str(caught.value)
    assert all(c.path is None or long_dag not in c.path for c in mwaa.double.calls[sent:])
    assert mwaa.double.count("ValidationException") == 0


def _finished_runs(upstream) -> dict[str, str]:
    query = "state=success&state=failed&order_by=-run_after&limit=10"
    listing = upstream.server.api("GET", f"/api/v2/dags/xdep_test_producer/dagRuns?{query}")
    return {r["dag_run_id"]: r["state"] for r in listing["dag_runs"]}


def waits_share_one_poll(monkeypatch, upstream, conn_id: str, count: Callable[[], int]) -> None:
    """Ten deferred waits on one connection, in one event loop as in the triggerer: each poll cycle is
    one or two calls (``count``: those the cloud's side saw) for all of them, not one per wait
    (waiting alone, each would make at least one)."""
    from xdep_sensors.core import poller
    from xdep_sensors.triggers import RemoteDagRunTrigger

    monkeypatch.setattr(poller, "SHARED_POLLING", True)
    cycles = []
    step_all = poller.SharedPoller._step_all

    async def counted(subs, source):
        cycles.append(len(subs))
        return await step_all(subs, source)

    monkeypatch.setattr(poller.SharedPoller, "_step_all", staticmethod(counted))
    while len(runs := _finished_runs(upstream)) < 10:  # the earlier tests' runs, and more if needed
        pending = [upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc)) for _ in range(10)]
        for run_id in pending:
            upstream.wait_run(run_id)

    async def wait_all() -> tuple[list, int]:
        triggers = [
            RemoteDagRunTrigger(
                remote_conn_id=conn_id, external_dag_id="xdep_test_producer", run_id=run_id, poke_interval=1
            )
            for run_id in runs
        ]
        before = count()
        events = await asyncio.gather(*(t.run().__anext__() for t in triggers))
        return events, count() - before

    events, calls = asyncio.run(wait_all())
    assert [e.payload["status"] for e in events] == list(runs.values())
    assert max(cycles) == len(runs)  # the waits did share a cycle
    # each cycle one or two calls for every wait in it, plus the first look's version and DAG reads
    assert calls <= 2 * len(cycles) + 3, (calls, cycles)


def test_many_waits_share_one_poll_of_invoke_rest_api(mwaa, monkeypatch):
    """Every InvokeRestApi call is an AWS API call with its own quota: the shared poll coalesces."""
    waits_share_one_poll(
        monkeypatch, mwaa.upstreams["v2"], mwaa.conn_id("v2"), lambda: mwaa.double.count(env=MWAA_ENVS["v2"])
    )
