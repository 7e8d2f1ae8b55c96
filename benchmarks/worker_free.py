"""Worker-free waits in a real downstream deployment: classic deferral vs worker-free vs HttpSensor.

Two real Airflow 3.3.2 deployments on loopback: an upstream (SQLite, API only: its runs end when
this script says) and a downstream in production shape (PostgreSQL, LocalExecutor, scheduler,
dag-processor, two triggerers). Side by side in one run, for each of three DAGs
(benchmarks/worker_free_dags): ``N`` downstream runs, each with one sensor (``poke_interval=5``)
waiting for its own upstream run. Once every sensor is deferred, the upstream runs end one by one
(created, then set to success, ``--gap`` seconds apart).

* **classic**: ``RemoteDagRunSensor`` deferrable (a worker starts it, defers; a worker resumes it);
* **worker-free**: the same with ``start_from_trigger=True, end_from_trigger=True``;
* **HttpSensor**: ``HttpSensor(deferrable=True)`` on the upstream run's REST endpoint (it fires when
  the run exists: the push-free way to wait without this library).

Reported per sensor: worker task executions (each parses the DAG file and says so in the task's
log), CPU seconds of the scheduler, of its executor's workers (with their task processes) and
of the triggerers, the latency from the upstream run's end to the sensor task's end (p50 / p99 /
max), and its part after the trigger fired (the triggerer's "Trigger fired event" line to the
task's ``end_date``).

    python benchmarks/worker_free.py --quick   # N=100 per variant; ends with a RESULT line
    python benchmarks/worker_free.py           # N=200; writes benchmarks/results/worker_free.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools import postgres  # noqa: E402
from devtools.airflow_local import LocalAirflow, _descendants  # noqa: E402

AIRFLOW = ROOT / ".venv" / "bin" / "airflow"
VARIANTS = {"classic": "bench_classic", "worker-free": "bench_free", "HttpSensor": "bench_http"}


TICK = os.sysconf("SC_CLK_TCK")


def _stat_times(pid: int) -> tuple[float, float] | None:
    """(own CPU s, CPU s of its reaped children) of a process, zombies included (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def _tree_cpu(pid: int) -> tuple[float, float]:
    """(the process's own CPU s, all its descendants' CPU s). A process that exits is added to its
    parent's reaped-children times when the parent waits for it, so the sum over the tree (zombies
    included) only grows."""
    own, reaped = _stat_times(pid) or (0.0, 0.0)
    below = reaped
    for child, _, _ in _descendants(pid):
        times = _stat_times(child)
        if times:
            below += times[0] + times[1]
    return own, below


def cpu_snapshot(down: LocalAirflow) -> dict[str, float]:
    sched_own, workers = _tree_cpu(down._procs["scheduler"].pid)
    triggerers = sum(sum(_tree_cpu(down._procs[name].pid)) for name in down.triggerer_names())
    return {"scheduler": sched_own, "workers": workers, "triggerers": triggerers}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fired_times(down: LocalAirflow, dag_id: str) -> dict[str, float]:
    """Downstream run id -> when its sensor's trigger fired: the "Trigger fired event" line the triggerer
    writes to the task's trigger log (``<attempt>.log.trigger.<job id>.log``, JSON lines)."""
    out = {}
    for path in (down.log_dir / f"dag_id={dag_id}").glob("run_id=*/task_id=wait/*.log.trigger.*.log"):
        run_id = path.parent.parent.name[len("run_id=") :]
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "Trigger fired event":
                out[run_id] = _ts(record["timestamp"])
    return out


def task_instances(down: LocalAirflow, dag_id: str) -> list[dict]:
    out, offset = [], 0
    while True:
        page = down.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances?limit=100&offset={offset}")
        out += page["task_instances"]
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            return out


def wait_states(
    down: LocalAirflow, dag_id: str, n: int, states: set[str], timeout: float, what: str
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        tis = task_instances(down, dag_id)
        if len(tis) == n and all(ti["state"] in states for ti in tis):
            return tis
        if time.monotonic() > deadline:
            counts = {s: sum(ti["state"] == s for ti in tis) for s in {ti["state"] for ti in tis}}
            raise RuntimeError(
                f"{dag_id}: not all {what} after {timeout:.0f} s: {counts}\n{down.tail_logs(30)}"
            )
        time.sleep(0.5)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_variant(variant: str, dag_id: str, n: int, gap: float, up: LocalAirflow, down: LocalAirflow) -> dict:
    nonce = uuid.uuid4().hex[:6]
    up_runs = {}
    for i in range(n):
        up_run = f"bench_{nonce}_{i}"
        run_id = down.trigger(
            dag_id,
            conf={"run_id": up_run},
            logical_date=datetime.now(timezone.utc),
            run_id=f"{dag_id}_{nonce}_{i}",
        )
        up_runs[run_id] = up_run
    wait_states(down, dag_id, n, {"deferred"}, 600, "deferred")
    before = cpu_snapshot(down)
    ended = {}
    for run_id, up_run in up_runs.items():
        up.trigger("xdep_test_producer", run_id=up_run, logical_date=datetime.now(timezone.utc))
        up.api(
            "PATCH",
            f"/api/v2/dags/xdep_test_producer/dagRuns/{urllib.parse.quote(up_run)}",
            {"state": "success"},
        )
        ended[run_id] = time.time()
        time.sleep(gap)
    tis = wait_states(down, dag_id, n, {"success", "failed"}, 900, "ended")
    after = cpu_snapshot(down)
    failed = [ti["dag_run_id"] for ti in tis if ti["state"] != "success"]
    if failed:  # reported, not hidden: e.g. Airflow failing a resumed task under load (see the results)
        print(f"{dag_id}: {len(failed)} sensor(s) did not succeed: {failed[:3]}", flush=True)
    fired = fired_times(down, dag_id)
    ok = [ti for ti in tis if ti["state"] == "success"]
    latency = [_ts(ti["end_date"]) - ended[ti["dag_run_id"]] for ti in ok]
    after_fire = [_ts(ti["end_date"]) - fired[ti["dag_run_id"]] for ti in ok if ti["dag_run_id"] in fired]
    return {
        "sensors": n,
        "failed": len(failed),
        "worker_runs_per_sensor": sum(down.worker_runs(dag_id, ti["dag_run_id"], "wait") for ti in tis) / n,
        "cpu_s_per_sensor": {k: (after[k] - before[k]) / n for k in before},
        "latency_p50_s": statistics.median(latency),
        "latency_p99_s": pct(latency, 0.99),
        "latency_max_s": max(latency),
        "after_fire_p50_s": statistics.median(after_fire) if after_fire else None,
        "after_fire_max_s": max(after_fire) if after_fire else None,
        "fired_lines": len(after_fire),
    }


def start(work: Path, args: argparse.Namespace) -> tuple[LocalAirflow, LocalAirflow]:
    up = LocalAirflow(
        work / "up",
        AIRFLOW,
        major=3,
        dags_folder=ROOT / "tests" / "integration" / "upstream_dags",
        name="bench-up",
    )
    up.start(timeout=300)
    up.wait_for_dag("xdep_test_producer", timeout=180)
    for comp in ("scheduler", "dag-processor"):  # API only: a run ends when this script sets it
        up.stop_component(comp)
    remote = {"conn_type": "remote_airflow", "host": up.base_url, "login": "viewer", "password": "viewer"}
    http = {
        "conn_type": "http",
        "host": up.base_url,
        "extra": {"Authorization": f"Bearer {up.token('viewer', 'viewer')}"},
    }
    down = LocalAirflow(
        work / "down",
        AIRFLOW,
        major=3,
        dags_folder=Path(__file__).parent / "worker_free_dags",
        name="bench-down",
        components=("api-server", "scheduler", "dag-processor", "triggerer"),
        triggerers=2,
        database_url=postgres.fresh_database("xdep_bench_worker_free"),
        extra_env={
            "AIRFLOW_CONN_UP": json.dumps(remote),
            "AIRFLOW_CONN_UP_HTTP": json.dumps(http),
            "PYTHONPATH": str(ROOT),
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "1000",
        },
    )
    try:
        down.start(timeout=300)
        for dag_id in VARIANTS.values():
            down.wait_for_dag(dag_id, timeout=180)
    except BaseException:
        up.stop()
        raise
    return up, down


def report(results: dict, args: argparse.Namespace) -> str:
    rows = [
        ("sensors that did not succeed", "failed", "{:d}"),
        ("worker task executions per sensor", "worker_runs_per_sensor", "{:.2f}"),
        ("scheduler CPU s per sensor", ("cpu_s_per_sensor", "scheduler"), "{:.2f}"),
        (
            "executor workers' CPU s per sensor (task processes included)",
            ("cpu_s_per_sensor", "workers"),
            "{:.2f}",
        ),
        ("triggerers' CPU s per sensor", ("cpu_s_per_sensor", "triggerers"), "{:.3f}"),
        ("latency, upstream run end -> sensor task end, p50 (s)", "latency_p50_s", "{:.2f}"),
        ("latency p99 (s)", "latency_p99_s", "{:.2f}"),
        ("latency max (s)", "latency_max_s", "{:.2f}"),
        ("after the trigger fired, p50 (s)", "after_fire_p50_s", "{:.3f}"),
        ("after the trigger fired, max (s)", "after_fire_max_s", "{:.3f}"),
    ]
    lines = [
        "# Worker-free waits (benchmarks/worker_free.py)\n",
        f"Airflow 3.3.2 downstream on PostgreSQL (LocalExecutor, two triggerers), N={args.n} sensors per "
        f"variant, poke_interval=5 s, upstream runs ending {args.gap:g} s apart.\n",
        "| | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for label, key, fmt in rows:
        cells = []
        for r in results.values():
            value = r[key[0]][key[1]] if isinstance(key, tuple) else r[key]
            cells.append("—" if value is None else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "HttpSensor fires when the upstream run exists (it cannot wait for a state without a worker "
        "`response_check`); here the run is created and set to success at once.",
        "",
        "```json",
        json.dumps({"n": args.n, "gap_s": args.gap, "results": results}, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=100 per variant, no results file")
    parser.add_argument(
        "-n", type=int, default=None, help="sensors per variant (default 200; 100 with --quick)"
    )
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between two upstream runs' ends")
    parser.add_argument(
        "--keep", action="store_true", help="keep the deployments' folders (logs) and say where"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (100 if args.quick else 200)
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="xdep-bench-wf-")
    if args.keep:
        print(f"deployments in {tmp}", flush=True)
    try:
        up, down = start(Path(tmp), args)
        try:
            results = {}
            for variant, dag_id in VARIANTS.items():
                results[variant] = run_variant(variant, dag_id, args.n, args.gap, up, down)
                print(variant, json.dumps(results[variant]), flush=True)
        finally:
            down.stop()
            up.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, args)
    print(text)
    if not args.quick:
        out = Path(__file__).parent / "results" / "worker_free.md"
        out.write_text(text)
        print(f"wrote {out} ({time.monotonic() - t0:.0f} s)")
    c, f = results["classic"], results["worker-free"]
    ratio = (c["after_fire_p50_s"] / f["after_fire_p50_s"]) if f["after_fire_p50_s"] else float("inf")
    print(
        f"RESULT worker_runs_per_sensor={f['worker_runs_per_sensor']:.2f} "
        f"classic_worker_runs_per_sensor={c['worker_runs_per_sensor']:.2f} after_fire_ratio={ratio:.1f} "
        f"latency_p50_s={f['latency_p50_s']:.2f} classic_latency_p50_s={c['latency_p50_s']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
