"""N waits on an Amazon MWAA upstream: ``InvokeRestApi`` calls per poll interval, ours against the provider's.

Side by side in one run, against one real Airflow 3 upstream behind the local double of MWAA's AWS side
(``devtools/mwaa_double.py``: it checks each SigV4 signature and forwards to the api-server):

* **ours**: ``xdep_sensors.triggers.RemoteDagRunTrigger`` on a ``remote_airflow`` connection with
  ``auth: aws_mwaa`` (the shared poller, the default), signed by one AWS identity;
* **provider**: ``MwaaDagRunCompletedTrigger``, what ``MwaaDagRunSensor(deferrable=True)`` defers to,
  signed by another identity, so the double's ``calls`` split the counts by access key.

Both wait for the same N queued runs (no scheduler: they stay queued) in one event loop of a worker
process that plays the triggerer; this process runs the double and counts its calls. After the steady
window a few runs are set to success through the API and both sides' triggers for them must fire.

    .venv/bin/python benchmarks/mwaa.py            # N=1000; writes benchmarks/results/mwaa.md
    .venv/bin/python benchmarks/mwaa.py --quick    # N=200; writes .tmp/benchmarks/mwaa.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from devtools.airflow_local import LocalAirflow  # noqa: E402
from devtools.mwaa_double import Environment, Identity, MwaaDouble, aws_connection  # noqa: E402

ENV, DAG = "bench-mwaa", "bench_mwaa"
KEYS = {
    "ours": ("AKIAXDEPBENCHOURS001", "bench-ours-secret"),
    "provider": ("AKIAXDEPBENCHPROV002", "bench-prov-secret"),
}
SIDES = tuple(KEYS)
NOISY = ("airflow.providers.amazon", "botocore", "aiobotocore", "asyncio")  # waiter logs every attempt


def run_id(i: int) -> str:
    return f"b{i:04d}"  # /dags/bench_mwaa/dagRuns/b0001: within MWAA's 64-character Path


# --------------------------------------------------------------------------------------------- worker


def worker(spec: dict) -> None:
    """The triggerer: both sides' N triggers in one asyncio loop, each iterated to its first event."""
    Path(spec["home"]).mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = spec["home"]  # inside the upstream's home: removed with it
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)  # Airflow's, botocore's and the triggers' log lines: away from the console
    os.dup2(log_fd, 2)
    import asyncio
    import logging

    from airflow.providers.amazon.aws.triggers.mwaa import MwaaDagRunCompletedTrigger

    from xdep_sensors.hooks import remote_airflow as xdep_hook
    from xdep_sensors.triggers import RemoteDagRunTrigger

    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    n, interval, finish = spec["n"], spec["interval"], set(spec["finish"])
    rng = random.Random(spec["seed"])
    starts = {side: [rng.uniform(0.0, interval) for _ in range(n)] for side in SIDES}
    fired: dict[str, dict[int, tuple[float, str]]] = {side: {} for side in SIDES}

    def make(side: str, i: int):
        if side == "ours":
            return RemoteDagRunTrigger(
                remote_conn_id="bench_mwaa",
                external_dag_id=DAG,
                run_id=run_id(i),
                poke_interval=interval,
                timeout_at=time.time() + 7 * 24 * 3600,  # what a sensor with the default timeout passes
            )
        return MwaaDagRunCompletedTrigger(
            external_env_name=ENV,
            external_dag_id=DAG,
            external_dag_run_id=run_id(i),
            waiter_delay=int(interval),
            waiter_max_attempts=720,
            aws_conn_id="bench_aws_provider",
        )

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        tasks: list[asyncio.Future] = []

        async def run_one(side: str, i: int) -> None:
            trigger = make(side, i)  # made when it arrives, as the triggerer makes it when it picks it up
            agen = trigger.run()
            try:
                async for event in agen:
                    p = event.payload
                    fired[side][i] = (time.time(), str(p.get("status")) if isinstance(p, dict) else repr(p))
                    break
            finally:
                await agen.aclose()
                try:
                    await trigger.cleanup()
                except Exception:
                    pass
            if all(i in fired[s] for s in SIDES for i in finish):
                stop.set()

        def arrive(side: str, i: int) -> None:
            tasks.append(asyncio.ensure_future(run_one(side, i)))

        await asyncio.sleep(max(spec["t0"] - time.time(), 0))
        for side in SIDES:
            for i in range(n):
                loop.call_later(starts[side][i], arrive, side, i)
        try:
            await asyncio.wait_for(stop.wait(), max(spec["deadline"] - time.time(), 0.01))
        except asyncio.TimeoutError:
            pass
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
        ]
        for client in list(xdep_hook.CLIENTS.here().values()):
            await client.close()
        await asyncio.sleep(0.25)
        return {
            "started": len(tasks),
            "errors": len(errors),
            "error_samples": [repr(e)[:300] for e in errors[:3]],
        }

    outcome = asyncio.run(main())
    outcome["fired"] = {side: {str(i): v for i, v in fired[side].items()} for side in SIDES}
    Path(spec["out"]).write_text(json.dumps(outcome))


# --------------------------------------------------------------------------------------------- parent


class CallLog:
    """Samples the double's ``calls`` every 0.1 s: (time seen, side, path, outcome) of each new call."""

    def __init__(self, double: MwaaDouble):
        self.double, self.seen = double, 0
        self.log: list[tuple[float, str, str | None, str]] = []
        self.side = {KEYS[side][0]: side for side in SIDES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        now, new = time.time(), self.double.calls[self.seen :]  # append-only: a slice is a snapshot
        self.seen += len(new)
        self.log += [(now, self.side.get(c.access_key or "", "?"), c.path, c.outcome) for c in new]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def between(self, side: str, start: float, end: float) -> list[tuple]:
        return [c for c in self.log if c[1] == side and start <= c[0] < end]


def cpu_s(pid: int, tree: bool) -> float:
    """CPU seconds of a process (the double: this process, its thread) and, if ``tree``, its children."""
    import psutil

    procs = [psutil.Process(pid)]
    total = 0.0
    for p in procs + (procs[0].children(recursive=True) if tree else []):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def cycle_window(times: list[float], start: float, end: float, interval: float) -> tuple[float, float]:
    """Whole cycles of a side whose calls come in bursts: from the first burst start in the window to the
    last (a shared cycle lasts the interval plus its own work); else the window itself."""
    starts = [t for k, t in enumerate(times) if k == 0 or t - times[k - 1] >= 0.4 * interval]
    inside = [t for t in starts if start <= t < end]
    return (inside[0], inside[-1]) if len(inside) >= 3 else (start, end)


def measure(args: argparse.Namespace, home: Path, timings: dict) -> dict:
    n, interval = args.n, float(args.interval)
    af = LocalAirflow(
        home,
        Path(sys.executable).parent / "airflow",
        components=("api-server",),
        dags_folder=HERE / "mwaa_dags",
        name="bench-mwaa",
        # 64 + 64 DB connections, not 5 + 10: a burst of first calls once held all 15 for 30 s (timeouts)
        extra_env={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "64",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "64",
            "AIRFLOW__API__WORKERS": "2",  # one is one core: N=1,000 polls every 5 s would queue in it
        },
    )
    double: MwaaDouble | None = None
    proc: subprocess.Popen | None = None
    try:
        t = time.time()
        af.start(timeout=300)
        af.start_component("dag-processor", wait=False)  # parse the one DAG, then stop it
        af.wait_for_dag(DAG, timeout=180)
        af.stop_component("dag-processor")
        timings["airflow_start_s"] = time.time() - t
        t = time.time()
        for i in range(n):  # one at a time: SQLite takes one writer; no scheduler, so they stay queued
            af.trigger(DAG, run_id=run_id(i))
        timings["create_runs_s"] = time.time() - t
        roles = {"Viewer": {"Authorization": f"Bearer {af.token('viewer', 'viewer')}"}}
        double = MwaaDouble(
            {ENV: Environment(af.base_url, "v2", roles)},
            {key: Identity(secret, grants={ENV: "Viewer"}) for key, secret in KEYS.values()},
        )
        endpoint = double.start()
        counter = CallLog(double)
        finish = sorted(random.Random(args.seed).sample(range(n), min(args.finish, n)))
        t0 = time.time() + 1.0
        spec = {
            "n": n,
            "interval": interval,
            "seed": args.seed,
            "t0": t0,
            "finish": finish,
            "deadline": t0 + args.budget,
            "home": str(home / "worker-home"),
            "log": str(home / "worker.log"),
            "out": str(home / "worker.json"),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env["PYTHONPATH"] = str(ROOT)
        mwaa_extra = {"auth": "aws_mwaa", "mwaa_environment": ENV, "aws_conn_id": "bench_aws_ours"}
        env["AIRFLOW_CONN_BENCH_MWAA"] = json.dumps({"conn_type": "remote_airflow", "extra": mwaa_extra})
        for side, (key, secret) in KEYS.items():
            env[f"AIRFLOW_CONN_BENCH_AWS_{side.upper()}"] = json.dumps(aws_connection(endpoint, key, secret))
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        # warm: every provider trigger has made its first call, and 3 intervals have passed
        while True:
            time.sleep(0.5)
            first = {c[2] for c in counter.between("provider", 0, time.time())}
            if (len(first) >= n and time.time() >= t0 + 3 * interval) or proc.poll() is not None:
                break
            if time.time() > t0 + args.budget / 2:
                raise RuntimeError(f"only {len(first)} of {n} provider triggers made a call in time")
        timings["warm_s"] = time.time() - t0
        window = (time.time() + interval, time.time() + interval * (1 + args.steady))
        print(
            f"  all {2 * n} triggers waiting {window[0] - t0:.0f}s after t0; steady window of "
            f"{args.steady} intervals ...",
            flush=True,
        )
        procs = {"worker": proc.pid, "double": os.getpid(), "api-server": af._procs["api-server"].pid}
        time.sleep(max(window[0] - time.time(), 0))
        cpu0 = {k: cpu_s(pid, k != "double") for k, pid in procs.items()}
        time.sleep(max(window[1] - time.time(), 0))
        cpu = {k: (cpu_s(pid, k != "double") - cpu0[k]) / (window[1] - window[0]) for k, pid in procs.items()}
        load = os.getloadavg()
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited early ({proc.returncode}); see {home / 'worker.log'}")
        finished_at = {}
        for i in finish:  # the run ends upstream (what the scheduler would record)
            af.api("PATCH", f"/api/v2/dags/{DAG}/dagRuns/{run_id(i)}", {"state": "success"})
            finished_at[i] = time.time()
        try:
            proc.wait(timeout=3 * interval + 60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        counter.stop()
        out = json.loads(Path(spec["out"]).read_text())
        res = summarise(args, counter, window, out, finish, finished_at)
        return {**res, "cpu_per_s": cpu, "load_avg": load}
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        af.stop()  # first: the double's calls still forwarded then fail at once, and it can close
        if double is not None:
            try:
                double.stop()
            except Exception as exc:  # its thread is a daemon: it ends with this process
                print(f"  the double did not stop cleanly: {exc!r}", file=sys.stderr)


def summarise(
    args, counter: CallLog, window: tuple[float, float], out: dict, finish: list[int], finished_at: dict
) -> dict:
    interval, res = float(args.interval), {}
    for side in SIDES:
        calls = counter.between(side, 0, float("inf"))
        ws, we = (
            cycle_window([c[0] for c in calls], window[0], window[1], interval) if side == "ours" else window
        )
        steady = counter.between(side, ws, we)
        fired = {int(i): v for i, v in out["fired"][side].items()}
        per_run: dict[str, list[float]] = {}
        for t, _, path, _ in steady:
            per_run.setdefault(path, []).append(t)
        gaps = [b - a for ts in per_run.values() for a, b in zip(ts, ts[1:])]
        res[side] = {
            "calls_per_interval": len(steady) / ((we - ws) / interval),
            "calls_window": len(steady),
            "window_s": we - ws,
            "calls_total": len(calls),
            "aws_errors": sum(1 for c in calls if c[3] != "forwarded"),
            "paths_window": len(per_run),
            "paths_total": dict(Counter(c[2] for c in calls).most_common(5)),
            "period_median_s": statistics.median(gaps) if gaps else None,
            "fired_finished": sum(1 for i in finish if fired.get(i, (0, ""))[1] == "success"),
            "fired_other": sum(1 for i in fired if i not in finish),
            "detect_max_s": max((fired[i][0] - finished_at[i] for i in finish if i in fired), default=None),
        }
    res["worker"] = {k: out[k] for k in ("started", "errors", "error_samples")}
    return res


def report(args, res: dict, timings: dict, wall: float) -> str:
    o, p = res["ours"], res["provider"]
    f = "{:.2f}"
    rows = [
        ("**InvokeRestApi calls per interval (steady)**", "calls_per_interval", f),
        ("calls in the steady window", "calls_window", "{:d}"),
        ("steady window (s)", "window_s", "{:.1f}"),
        ("calls over the whole run", "calls_total", "{:,}"),
        ("calls answered with an AWS error", "aws_errors", "{:d}"),
        ("distinct Paths called in the window", "paths_window", "{:d}"),
        ("median seconds between two calls on one Path", "period_median_s", f),
        (f"fired (success) of the {args.finish} runs set to success", "fired_finished", "{:d}"),
        ("fired for a run still queued", "fired_other", "{:d}"),
        ("detection, slowest of those (s)", "detect_max_s", f),
    ]
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    lines = [
        f"{when}; {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{res['load_avg'][0]:.2f} at the end of the window. N={args.n} waits per side, each on its own "
        f"queued run (run ids `b0000`...), poll interval {args.interval} s, steady window {args.steady} "
        f"intervals. Whole script {wall:.0f} s (Airflow start {timings['airflow_start_s']:.0f} s, "
        f"{args.n} runs created {timings['create_runs_s']:.0f} s, triggers started to all waiting "
        f"{timings['warm_s']:.0f} s).",
        "",
        "| | ours: `RemoteDagRunTrigger` (shared poll) | provider: `MwaaDagRunCompletedTrigger` |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in rows:
        cells = ["—" if s[key] is None else fmt.format(s[key]) for s in (o, p)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    ratio = p["calls_per_interval"] / o["calls_per_interval"]
    lines.append(f"| **provider ÷ ours** | | **{ratio:.0f}** |")
    w, cpu = res["worker"], ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_per_s"].items())
    lines += [
        "",
        f"CPU seconds per second in the window: {cpu} (the worker runs both sides; the double runs in "
        f"the script's process). Worker: {w['started']} triggers started, {w['errors']} ended in an "
        f"exception {w['error_samples']}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=200; writes .tmp/benchmarks/mwaa.md")
    parser.add_argument("--n", type=int, default=None, help="waits per side (default 1000; --quick: 200)")
    parser.add_argument("--interval", type=int, default=5, help="poll interval, seconds (both sides)")
    parser.add_argument("--steady", type=int, default=8, help="intervals in the steady window")
    parser.add_argument("--finish", type=int, default=5, help="runs set to success after the window")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--budget", type=float, default=900.0, help="the worker's hard limit, seconds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    args.n = args.n or (200 if args.quick else 1000)
    out = args.out or (
        ROOT / ".tmp" / "benchmarks" / "mwaa.md" if args.quick else HERE / "results" / "mwaa.md"
    )
    started, timings = time.time(), dict[str, float]()
    home = Path(tempfile.mkdtemp(prefix="xdep-bench-mwaa-airflow-"))
    try:
        res = measure(args, home, timings)
    except BaseException:
        print(f"  (Airflow home and logs kept in {home})", file=sys.stderr)
        raise
    shutil.rmtree(home, ignore_errors=True)
    text = report(args, res, timings, time.time() - started)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Waits on an MWAA upstream (benchmarks/mwaa.py)\n\n"
        + f"{text}\n\n```json\n{json.dumps(res, indent=2)}\n```\n"
    )
    o, p = res["ours"]["calls_per_interval"], res["provider"]["calls_per_interval"]
    print(f"wrote {out}")
    print(
        f"RESULT mwaa_calls_ratio={p / o:.1f} ours_calls_per_interval={o:.2f} "
        f"provider_calls_per_interval={p:.1f} n={args.n} interval_s={args.interval}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
