"""The upstream version matrix: a DAG-run wait and an asset wait against every supported upstream minor.

Airflow 2.9.3, 2.10.5, 2.11.2 (API v1, basic auth) and 3.0.6, 3.1.8, 3.2.2, 3.3.2 (API v2, a JWT
from username/password and a static token). Downstream runs go through ``dag.test()`` in this
process (Airflow 3.3.2); the deferrable variant runs the sensor's trigger, the poke variant its
poke. Each passing check is recorded for the "Supported versions" table of the docs.
"""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.integration.conftest import UPSTREAM_VERSIONS
from tests.integration.test_asset_sensor_live import clear_cursor
from tests.integration.test_dag_run_sensor_live import run_downstream
from xdep_sensors import RemoteAirflowHook
from xdep_sensors.core.probes import AssetProbe, AssetWait

pytestmark = pytest.mark.integration


def later(fn, delay: float = 3.0) -> threading.Timer:
    """Run fn in a thread after delay seconds, while the downstream sensor waits."""
    timer = threading.Timer(delay, fn)
    timer.start()
    return timer


def auth_variants(version: str) -> list[str]:
    return ["password", "token"] if version.startswith("3.") else ["password"]


@pytest.mark.parametrize(
    "version, auth, variant",
    [(v, a, "defer" if a == "password" else "poke") for v in UPSTREAM_VERSIONS for a in auth_variants(v)],
)
def test_dag_run_wait(matrix_upstreams, matrix_record, downstream_db, out_file, version, auth, variant):
    up = matrix_upstreams[version]
    conn_id = up.conn_id if auth == "password" else up.token_conn_id
    run_id = up.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    states = []
    timer = later(lambda: states.append(up.finish_run(run_id)))
    state = run_downstream(
        f"xdep_ds_by_id_{variant}", {"conn": conn_id, "run_id": run_id, "out": str(out_file)}
    )
    timer.join()
    assert states == ["success"]
    assert state == "success"
    result = json.loads(out_file.read_text())
    assert (result["run_id"], result["state"]) == (run_id, "success")
    matrix_record(version, "upstream", f"dag_run_wait:{auth}:{variant}")


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
def test_asset_wait(matrix_upstreams, matrix_record, downstream_db, out_file, version):
    up = matrix_upstreams[version]
    dag_id = "xdep_ds_asset_uri_defer"
    clear_cursor(dag_id)
    timer = later(lambda: up.asset_event("file://include/bears", {"version": version}))
    state = run_downstream(dag_id, {"conn": up.conn_id, "out": str(out_file)})
    timer.join()
    assert state == "success"
    (event,) = json.loads(out_file.read_text())
    # events created through the REST API may carry a marker of their own (2.9: from_rest_api)
    assert event["extra"]["version"] == version and event["uri"] == "file://include/bears"
    matrix_record(version, "upstream", "asset_wait:password:defer")


@pytest.mark.parametrize("version", [v for v in UPSTREAM_VERSIONS if v.startswith("3.")])
def test_task_group_filter(matrix_upstreams, matrix_record, version):
    """task_group_id narrows server-side on 3.1+ and on the client on 3.0: the same tasks either way."""
    up = matrix_upstreams[version]
    run_id = up.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    tis = RemoteAirflowHook(up.conn_id).run(
        lambda c: c.list_task_instances("xdep_test_producer", run_id, task_group_id="grp")
    )
    assert sorted(ti.task_id for ti in tis) == ["grp.a", "grp.b"]
    up.finish_run(run_id)
    matrix_record(version, "upstream", "task_group_filter")


@pytest.mark.parametrize("version", [v for v in UPSTREAM_VERSIONS if v.startswith("2.") and v != "2.11.2"])
async def test_task_failure_alert(matrix_upstreams, matrix_record, version):
    """RemoteTaskInstanceEventTrigger on the API-only Airflow 2 upstreams (2.9's task-instance batch
    has no paging).

    The watcher polls a few times, then a task of a new run is set failed through the REST API: it
    fires with that task instance. (2.11.2 is the shared upstream of tests/integration/test_alerts_live.py.)
    """
    import asyncio

    from tests.helpers import MemoryStateStore, sleep_patched
    from xdep_sensors.core import pacing
    from xdep_sensors.triggers import RemoteTaskInstanceEventTrigger

    up = matrix_upstreams[version]
    run_id = up.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    trigger = RemoteTaskInstanceEventTrigger(
        remote_conn_id=up.conn_id, external_dag_id="xdep_test_producer", states=["failed"], poll_interval=1
    )
    trigger.asset_state_store = MemoryStateStore()
    polls: list[int] = []
    real_sleep = asyncio.sleep

    def fail_extract() -> None:
        up.server.api(
            "POST",
            "/api/v1/dags/xdep_test_producer/updateTaskInstancesState",
            {
                "dry_run": False,
                "dag_run_id": run_id,
                "task_id": "extract",
                "include_upstream": False,
                "include_downstream": False,
                "include_future": False,
                "include_past": False,
                "new_state": "failed",
            },
        )

    async def sleep(seconds, *args, **kwargs):  # the watcher's stream sleeps once per poll
        polls.append(1)
        if len(polls) == 3:
            await asyncio.to_thread(fail_extract)
        await real_sleep(0.2)

    with sleep_patched(sleep, pacing):
        gen = trigger.run()
        event = await asyncio.wait_for(gen.__anext__(), 90)
        await gen.aclose()
    ti = event.payload["task_instance"]
    assert (ti["run_id"], ti["task_id"], ti["state"]) == (run_id, "extract", "failed"), event.payload
    up.finish_run(run_id)
    matrix_record(version, "upstream", "task_failure_alert")


@pytest.mark.parametrize("version", [v for v in UPSTREAM_VERSIONS if v.startswith("2.") and v != "2.11.2"])
async def test_task_duration_alert(matrix_upstreams, matrix_record, version):
    """RemoteDagRunDurationTrigger(task_ids=...) on the API-only Airflow 2 upstreams.

    The watcher polls a few times, then a task of a new run starts (through Airflow's models: these
    upstreams have no scheduler): once it has run longer than max_duration, the watcher fires with that
    task instance, and only for the watched task.
    """
    import asyncio

    from tests.helpers import MemoryStateStore, sleep_patched
    from xdep_sensors.core import pacing
    from xdep_sensors.triggers.alerts import RemoteDagRunDurationTrigger

    up = matrix_upstreams[version]
    run_id = up.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    trigger = RemoteDagRunDurationTrigger(
        remote_conn_id=up.conn_id,
        external_dag_id="xdep_test_producer",
        task_ids=["extract"],
        max_duration=2,
        poll_interval=1,
    )
    trigger.asset_state_store = MemoryStateStore()
    polls: list[int] = []
    real_sleep = asyncio.sleep

    def start(task_id: str) -> None:
        python = Path(up.server.airflow_bin).parent / "python"
        res = subprocess.run(
            [
                str(python),
                str(Path(__file__).parent / "seed_history.py"),
                "running",
                "xdep_test_producer",
                run_id,
                task_id,
            ],
            env=up.server.env,
            cwd=up.server.home,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    async def sleep(seconds, *args, **kwargs):  # the alert sleeps once per poll
        polls.append(1)
        if len(polls) == 3:
            await asyncio.to_thread(start, "load")  # not watched, and started first: it would alert first
            await asyncio.to_thread(start, "extract")
        await real_sleep(0.2)

    with sleep_patched(sleep, pacing):
        gen = trigger.run()
        event = await asyncio.wait_for(gen.__anext__(), 90)
        await gen.aclose()
    ti = event.payload["task_instance"]
    assert (ti["run_id"], ti["task_id"], ti["state"]) == (run_id, "extract", "running"), event.payload
    assert event.payload["running_for"] >= 2 and event.payload["run"]["run_id"] == run_id
    up.finish_run(run_id)
    matrix_record(version, "upstream", "task_duration_alert")


@pytest.mark.parametrize("version", UPSTREAM_VERSIONS)
async def test_one_listing_finds_many_dags_and_assets_from_3_2(matrix_upstreams, version):
    """From 3.2 the server takes ``|`` between prefix alternatives: ids or URIs with no common prefix are
    found in one listing (a server that ignored the ``|`` would find none of them). Older versions use
    substring filters, and the same lookups find the same things."""
    up = matrix_upstreams[version]
    client = await RemoteAirflowHook(up.conn_id).aget_client()
    try:
        newer = tuple(int(p) for p in version.split(".")[:2]) >= (3, 2)
        assert await client.alternatives() is newer
        assert set(await client.find_dags(["xdep_test_producer", "no_such_dag"])) == {"xdep_test_producer"}
        if newer:
            found = await client.find_assets("uri", ["bears_named", "file://include/bears", "s3://no/such"])
            assert {"bears_named", "file://include/bears"} <= {a.uri for a in found}
        probe = AssetProbe(
            AssetWait(
                assets=[{"uri": "file://include/bears", "name": None}, {"uri": "s3://no/such", "name": None}],
                check_existence=False,
                since=datetime.now(timezone.utc).isoformat(),
            )
        )
        decision = await probe(client)
        assert list(probe.ids) == ["file://include/bears"] and decision.status == "waiting"
    finally:
        await client.close()


def _partition_runs(up, *specs: str) -> list[str]:
    """Finished runs of xdep_test_producer with partition keys (``state:key``), oldest first."""
    python = Path(up.server.airflow_bin).parent / "python"
    args = [
        str(python),
        str(Path(__file__).parent / "seed_history.py"),
        "partition_runs",
        "xdep_test_producer",
    ]
    res = subprocess.run(
        [*args, *specs], env=up.server.env, cwd=up.server.home, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _partitioned(version: str) -> bool:
    return tuple(int(p) for p in version.split(".")[:2]) >= (3, 2)


@pytest.mark.parametrize("version", [v for v in UPSTREAM_VERSIONS if _partitioned(v)])
def test_partition_waits(matrix_upstreams, matrix_record, downstream_db, out_file, version):
    """The newest run of exactly a key, then only events of exactly a key (3.2's prefix filter reads
    ``|`` as OR and drops trailing punctuation: still exactly the key)."""
    up = matrix_upstreams[version]
    key = f"m{version}|eu"
    _, newest, *_ = _partition_runs(
        up, f"failed:{key}", f"success:{key}", f"failed:{key}-west", f"failed:{key.upper()}", "failed:eu"
    )
    params = {"conn": up.conn_id, "partition": key, "dag": "xdep_test_producer", "out": str(out_file)}
    assert run_downstream("xdep_ds_partition_defer", params) == "success"
    result = json.loads(out_file.read_text())
    assert (result["run_id"], result["partition_key"]) == (newest, key)
    matrix_record(version, "upstream", "partition_wait:runs")

    dag_id = "xdep_ds_asset_partition_defer"
    clear_cursor(dag_id)

    def produce():
        for n, k in enumerate((f"{key}-west", key.upper(), "eu", key)):
            up.asset_event("file://include/bears", {"n": n}, partition_key=k)

    timer = later(produce)
    state = run_downstream(dag_id, {"conn": up.conn_id, "partition": key, "out": str(out_file)})
    timer.join()
    assert state == "success"
    assert [(e["partition_key"], e["extra"]["n"]) for e in json.loads(out_file.read_text())] == [(key, 3)]
    matrix_record(version, "upstream", "partition_wait:events")


@pytest.mark.parametrize("version", [v for v in UPSTREAM_VERSIONS if not _partitioned(v)])
def test_partition_waits_refused_naming_the_version(
    matrix_upstreams, matrix_record, downstream_db, out_file, version, capfd
):
    up = matrix_upstreams[version]
    for dag_id, words in (
        ("xdep_ds_partition_defer", "which has no partitioned runs"),
        ("xdep_ds_asset_partition_defer", "whose asset events have no partition keys"),
    ):
        params = {"conn": up.conn_id, "partition": "eu", "dag": "xdep_test_producer", "out": str(out_file)}
        assert run_downstream(dag_id, params) == "failed"
        out = "".join(capfd.readouterr())
        assert f"runs Airflow {version}, {words} (Airflow 3.2+)" in out, out[-3000:]
    matrix_record(version, "upstream", "partition_wait:refused")
