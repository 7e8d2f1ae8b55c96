"""Two local Airflow deployments on loopback; the downstream waits for the upstream by pulling.

upstream   (team A): bears_producer, unchanged, no token of anyone else's.
downstream (team B): bears_report, whose RemoteDagRunSensor defers to a real `airflow triggerer`
                     and polls the upstream's REST API with a read-only (viewer) connection, and
                     bears_consumer, scheduled on the upstream asset through an AssetWatcher.

Run with `make demo`. Everything started here is stopped at the end, by PID.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.airflow_local import LocalAirflow  # noqa: E402

WORK = ROOT / ".demo"
AIRFLOW = Path(sys.executable).parent / "airflow"
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def deployment(name: str, examples: list[str], **kwargs) -> LocalAirflow:
    home = WORK / name
    shutil.rmtree(home, ignore_errors=True)
    dags = home / "dags"
    dags.mkdir(parents=True)
    for example in examples:
        shutil.copy(ROOT / "example_dags" / example, dags / example)
    return LocalAirflow(home, AIRFLOW, major=3, dags_folder=dags, name=name, **kwargs)


def task_state(airflow: LocalAirflow, dag_id: str, run_id: str, task_id: str) -> str | None:
    ti = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    return ti.get("state")


def wait_task(
    airflow: LocalAirflow, dag_id: str, run_id: str, task_id: str, states: set[str], timeout=180
) -> str:
    deadline = time.monotonic() + timeout
    while (state := task_state(airflow, dag_id, run_id, task_id)) not in states:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id}.{task_id} still {state} after {timeout}s\n{airflow.tail_logs()}")
        time.sleep(1)
    return state


def wait_triggers_started(airflow: LocalAirflow, count: int, timeout: float = 120) -> None:
    log = airflow.log_dir / "triggerer.log"
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(" starting ") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} triggers started\n{airflow.tail_logs()}")
        time.sleep(1)


def wait_first_run(airflow: LocalAirflow, dag_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while not (
        runs := [
            r
            for r in airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
            if r["state"] == "success"
        ]
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} did not run\n{airflow.tail_logs()}")
        time.sleep(1)
    return runs[0]["dag_run_id"]


def main() -> int:
    # The upstream's runs are triggered by hand below (no waiting for midnight); the downstream
    # schedules normally, so its AssetWatcher-driven DAG can start by itself.
    upstream = deployment(
        "upstream",
        ["upstream_bears_producer.py"],
        extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"},
    )
    conn = {"conn_type": "remote_airflow", "host": upstream.base_url, "login": "viewer", "password": "viewer"}
    downstream = deployment(
        "downstream",
        ["downstream_wait_for_bears_run.py", "downstream_watchers.py"],
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        extra_env={"AIRFLOW_CONN_UPSTREAM_AIRFLOW": json.dumps(conn)},
    )
    try:
        say("starting two Airflow 3 deployments on loopback (about a minute)...")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda d: d.start(timeout=300), (upstream, downstream)))
        upstream.wait_for_dag("bears_producer")
        downstream.wait_for_dag("bears_report")
        downstream.wait_for_dag("bears_consumer")
        say(f"upstream   {upstream.base_url}  (team A: bears_producer; holds no downstream token)")
        say(
            f"downstream {downstream.base_url}  "
            "(team B: bears_report; connection 'upstream_airflow' = viewer)"
        )

        day = datetime.now(timezone.utc).replace(microsecond=0)
        ds_run = downstream.trigger("bears_report", logical_date=day)
        wait_task(downstream, "bears_report", ds_run, "wait_for_bears", {"deferred"})
        say(
            "downstream sensor wait_for_bears is DEFERRED in the triggerer, "
            f"polling upstream for logical date {day.isoformat()}"
        )

        wait_triggers_started(downstream, 2)  # the two AssetWatchers
        say(
            "downstream AssetWatchers are polling upstream too "
            "(bears_consumer is scheduled on team A's asset)"
        )
        up_run = upstream.trigger("bears_producer", logical_date=day)
        say(f"upstream bears_producer triggered: {up_run}")
        say(f"upstream run finished: {upstream.wait_run('bears_producer', up_run)}")

        state = downstream.wait_run("bears_report", ds_run, timeout=180)
        result = downstream.api(
            "GET", f"/api/v2/dags/bears_report/dagRuns/{ds_run}/taskInstances/report/xcomEntries/return_value"
        )
        say(f"downstream bears_report run: {state}")
        say(f"downstream task 'report' says: {result.get('value')}")
        consumer = wait_first_run(downstream, "bears_consumer")
        paths = downstream.api(
            "GET",
            f"/api/v2/dags/bears_consumer/dagRuns/{consumer}/taskInstances/load/xcomEntries/return_value",
        )
        say(
            f"downstream bears_consumer was STARTED by the upstream asset event; it read {paths.get('value')}"
        )
        ok = state == "success"
        print(
            "\nDEMO",
            "PASSED" if ok else "FAILED",
            "- a sensor waited for, and a watcher was scheduled by, the "
            "upstream, both by pulling its API with a read-only connection.",
        )
        if not ok:
            print(downstream.tail_logs())
        return 0 if ok else 1
    finally:
        say("stopping both deployments")
        upstream.stop()
        downstream.stop()


if __name__ == "__main__":
    sys.exit(main())
