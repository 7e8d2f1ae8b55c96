"""Benchmark: N deferred "wait for an upstream DAG run" triggers in one triggerer-like event loop.

Compares, against a local stub of the upstream Airflow REST API (``stub_upstream.py``, its own process):

* ``ours-shared``: ``xdep_sensors.triggers.RemoteDagRunTrigger`` with the shared poller (default);
* ``ours-direct``: the same triggers with ``xdep_sensors.polling.SHARED_POLLING = False``;
* ``http-sensor``: ``airflow.providers.http.triggers.http.HttpSensorTrigger`` on each run's endpoint
  ``/api/v2/dags/{dag_id}/dagRuns/{run_id}`` (the stub answers 404 until the run completed).

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py           # N = 100, 1000, 5000; writes benchmarks/results/
    .venv/bin/python benchmarks/run.py --quick   # N = 1000 only, short; last line is the RESULT line

Each (mode, N) case runs in a fresh worker process (``run.py --worker``): it imports Airflow, takes an
RSS baseline, sends the seeded completion schedule to a fresh stub process, then creates the N
triggers and iterates each one's ``run()`` in one asyncio event loop until its first ``TriggerEvent``.
See ``benchmarks/README.md`` for the method and the limits of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
STUB = HERE / "stub_upstream.py"

MODES = ("ours-shared", "ours-direct", "http-sensor")
LABELS = {
    "ours-shared": "RemoteDagRunTrigger (shared poller)",
    "ours-direct": "RemoteDagRunTrigger (SHARED_POLLING=False)",
    "http-sensor": "HttpSensorTrigger",
}
RUN_ID = "scheduled__2026-11-20T00:00:00+00:00"
TOKEN = "bench-token"


# ---------------------------------------------------------------------------------------------
# plan


def plan(quick: bool) -> list[dict]:
    """Per N: poll interval and timeline (seconds after the triggers start).

    ``warm``: first looks (ignored); ``steady``: the measured window, no run completes in it;
    ``complete``: runs complete at seeded-random times spread over this span after the window.
    """
    if quick:
        return [dict(n=1000, interval=5.0, warm=15.0, steady=15.0, complete=10.0)]
    return [
        dict(n=100, interval=5.0, warm=15.0, steady=20.0, complete=15.0),
        dict(n=1000, interval=5.0, warm=15.0, steady=20.0, complete=15.0),
        dict(n=5000, interval=10.0, warm=30.0, steady=40.0, complete=30.0),
    ]


# ---------------------------------------------------------------------------------------------
# worker: one (mode, N) case in this process; the stub is another process


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def steady_window(stats: dict, ws: float, we: float, interval: float) -> tuple[float, float, str]:
    """The window to measure steady state in: ``[ws, we)``, or, when the requests come in bursts (one
    shared poll cycle each), from the first burst start in it to the last one, so that it holds whole
    cycles only (a cycle lasts the interval plus the cycle's own work, so a fixed window would hold
    a varying number of cycles)."""
    bucket = stats["bucket_s"]
    busy = sorted({int(k) for b in stats["counts"].values() for k, c in b.items() if c})
    starts, prev = [], None
    for k in busy:
        if prev is None or (k - prev) * bucket >= 0.4 * interval:
            starts.append(k * bucket)
        prev = k
    inside = [t for t in starts if ws <= t < we]
    if len(inside) >= 2:
        return inside[0], inside[-1], f"{len(inside) - 1} whole poll cycles"
    return ws, we, "fixed"


def cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """Process CPU seconds at wall time ``when``, interpolated between the sampler's readings."""
    import bisect

    i = bisect.bisect_left(samples, (when, float("-inf")))
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1


def library_fingerprint() -> str:
    """Short hash of the xdep_sensors sources as this process imported them (others edit concurrently)."""
    import hashlib

    import xdep_sensors

    digest = hashlib.sha256()
    pkg = Path(xdep_sensors.__file__).parent
    for path in sorted(pkg.rglob("*.py")):
        digest.update(str(path.relative_to(pkg)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "xdep_sensors"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in xdep_sensors/' if dirty else ''}"


def _http_json(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def worker(spec: dict) -> dict:
    port = spec["port"]
    base = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="xdep-bench-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW_CONN_BENCH_UPSTREAM"] = json.dumps(
        {"conn_type": "remote_airflow", "host": base, "password": TOKEN, "extra": {"api_version": "v2"}})
    # HttpAsyncHook turns the extra into request headers: the token, as a real user would send it
    os.environ["AIRFLOW_CONN_BENCH_HTTP"] = json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http",
         "extra": {"Authorization": f"Bearer {TOKEN}"}})

    # Airflow and the triggers log to stdout/stderr: send fd 1 and 2 to a log file (as the triggerer sends
    # trigger logs away from its console), keep our own copies for progress and errors.
    err = os.fdopen(os.dup(2), "w", buffering=1)
    log_path = os.path.join(home, "triggerer.log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        result = _measure(spec, base, err, log_path)
    except BaseException:
        import traceback

        traceback.print_exc(file=err)
        print(f"  (triggerer log kept in {log_path})", file=err, flush=True)
        raise
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    err.close()
    return result


def _measure(spec: dict, base: str, err, log_path: str) -> dict:
    mode, n, interval = spec["mode"], spec["n"], spec["interval"]
    import asyncio
    import gc
    import logging

    import psutil

    from airflow.providers.http.triggers.http import HttpSensorTrigger
    from xdep_sensors import hook as xdep_hook
    from xdep_sensors import polling
    from xdep_sensors.triggers import RemoteDagRunTrigger

    logging.getLogger().setLevel(logging.INFO)
    code = library_fingerprint()
    if mode == "ours-direct":
        polling.SHARED_POLLING = False

    proc = psutil.Process()
    rng = random.Random(spec["seed"] * 1_000_003 + n)  # same schedule for every mode at this N
    offsets = [spec["warm"] + spec["steady"] + rng.uniform(0.0, spec["complete"]) for _ in range(n)]
    # tasks defer at different moments: each trigger starts at a seeded-random time in the first interval
    starts = [rng.uniform(0.0, interval) for _ in range(n)]
    dag_ids = [f"bench_dag_{i}" for i in range(n)]

    gc.collect()
    time.sleep(0.2)
    baseline_rss = proc.memory_info().rss
    peak = {"rss": baseline_rss}
    cpu_samples: list[tuple[float, float]] = []  # (wall, process CPU) every 0.1 s, for any window later
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.1):
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            cpu_samples.append((time.time(), time.process_time()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    t0 = time.time() + 0.5
    done_at = [t0 + off for off in offsets]
    _http_json("POST", f"{base}/_schedule", {"dag_ids": dag_ids, "done_at": done_at})
    window = (t0 + spec["warm"], t0 + spec["warm"] + spec["steady"])
    deadline = t0 + spec["warm"] + spec["steady"] + spec["complete"] + 2 * interval + 20.0

    fired: list[float | None] = [None] * n
    payloads: list[object] = [None] * n
    marks: dict[str, tuple[float, float]] = {}
    left = {"n": n}
    all_done: list = []  # the asyncio.Event, made inside the loop

    async def run_one(i: int, trigger) -> None:
        await asyncio.sleep(max(t0 + starts[i] - time.time(), 0))
        agen = trigger.run()
        try:
            async for event in agen:
                fired[i] = time.time()
                payloads[i] = event.payload
                break
        finally:
            await agen.aclose()
            try:
                await trigger.cleanup()
            except Exception:
                pass
            left["n"] -= 1
            if left["n"] == 0:
                all_done[0].set()

    async def main() -> dict:
        await asyncio.sleep(max(t0 - time.time(), 0))
        marks["start"] = (time.time(), time.process_time())
        all_done.append(asyncio.Event())
        tasks = []
        for i, dag_id in enumerate(dag_ids):
            if mode == "http-sensor":
                trigger = HttpSensorTrigger(endpoint=f"/api/v2/dags/{dag_id}/dagRuns/{RUN_ID}",
                                            http_conn_id="bench_http", poke_interval=interval)
            else:
                trigger = RemoteDagRunTrigger(remote_conn_id="bench_upstream", external_dag_id=dag_id,
                                              run_id=RUN_ID, poke_interval=interval, timeout_at=None)
            tasks.append(asyncio.ensure_future(run_one(i, trigger)))
        marks["created"] = (time.time(), time.process_time())
        try:  # one waiter for all (asyncio.wait on N tasks would cost the harness O(N) per wake-up)
            await asyncio.wait_for(all_done[0].wait(), max(deadline - time.time(), 0.01))
        except asyncio.TimeoutError:
            pass
        pending = [t for t in tasks if not t.done()]
        cancelled = len(pending)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        # the per-loop clients of SHARED_POLLING=False stay open by design (one per triggerer loop): close them
        for client in list(xdep_hook._clients.get(asyncio.get_running_loop(), {}).values()):
            await client.close()
        await asyncio.sleep(0.25)  # let aiohttp close its transports
        marks["end"] = (time.time(), time.process_time())
        return {"cancelled": cancelled, "errors": [repr(e)[:300] for e in errors[:5]], "n_errors": len(errors)}

    print(f"  [{mode} N={n}] running {deadline - t0:.0f}s at most ...", file=err, flush=True)
    outcome = asyncio.run(main())
    stop_sampling.set()
    sampler.join()
    stats = _http_json("GET", f"{base}/_stats")

    # request rates in the steady window, from the stub's 0.1 s buckets of arrival time
    bucket = stats["bucket_s"]
    ws, we, window_kind = steady_window(stats, window[0], window[1], interval)
    in_window: dict[str, int] = {}
    for route, buckets in stats["counts"].items():
        in_window[route] = sum(c for k, c in buckets.items() if ws <= int(k) * bucket < we)
    intervals = (we - ws) / interval
    cpu_window = cpu_at(cpu_samples, we) - cpu_at(cpu_samples, ws)
    delays = [f - d for f, d in zip(fired, done_at) if f is not None]
    early = sum(1 for f, d in zip(fired, done_at) if f is not None and f < d)
    wrong = sum(1 for p in payloads if p is not None and p is not True
                and not (isinstance(p, dict) and p.get("status") == "success"))
    cpu_total = marks["end"][1] - marks["start"][1]
    result = {
        **spec,
        "label": LABELS[mode],
        "code": code,
        "fired": sum(1 for f in fired if f is not None),
        "early": early,
        "wrong_payload": wrong,
        **outcome,
        "requests_total": sum(stats["totals"].values()),
        "requests_by_route": stats["totals"],
        "statuses": stats["statuses"],
        "requests_window": sum(in_window.values()),
        "requests_window_by_route": in_window,
        "window_s": we - ws,
        "window_kind": window_kind,
        "load_avg_1m": os.getloadavg()[0],
        "requests_per_interval": sum(in_window.values()) / intervals if intervals > 0 else None,
        "bytes_total": sum(stats["bytes_in"].values()) + sum(stats["bytes_out"].values()),
        "cpu_s": cpu_total,
        "cpu_per_interval_steady": cpu_window / intervals if cpu_window is not None and intervals > 0 else None,
        "create_cpu_s": marks["created"][1] - marks["start"][1],
        "stub_cpu_s": stats["cpu_s"],
        "wall_s": marks["end"][0] - marks["start"][0],
        "rss_baseline_mib": baseline_rss / 2**20,
        "rss_peak_mib": peak["rss"] / 2**20,
        "rss_per_trigger_kib": (peak["rss"] - baseline_rss) / n / 1024,
        "detect_p50_s": percentile(delays, 0.50),
        "detect_p99_s": percentile(delays, 0.99),
        "detect_max_s": max(delays) if delays else None,
        "log_bytes": os.path.getsize(log_path),
    }
    return result


# ---------------------------------------------------------------------------------------------
# parent: stub + worker per case, then the table and the plot


def _read_port(stub: subprocess.Popen, timeout: float) -> int:
    box: dict[str, str] = {}

    def read() -> None:
        box["line"] = stub.stdout.readline()  # type: ignore[union-attr]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    line = box.get("line", "")
    if not line.startswith("PORT "):
        raise RuntimeError(f"the stub did not start (got {line!r})")
    return int(line.split()[1])


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def run_case(case: dict, mode: str, seed: int) -> dict:
    python = sys.executable
    budget = case["warm"] + case["steady"] + case["complete"] + 2 * case["interval"] + 20.0
    stub = subprocess.Popen([python, str(STUB), "--mode", "http" if mode == "http-sensor" else "ours",
                             "--port", "0", "--max-seconds", str(budget + 180)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT))
    try:
        port = _read_port(stub, 30.0)
        with tempfile.NamedTemporaryFile("r", suffix=".json", prefix="xdep-bench-") as out:
            spec = {**case, "mode": mode, "port": port, "seed": seed, "out": out.name}
            worker_proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                           stdout=subprocess.DEVNULL, cwd=str(ROOT))
            try:
                rc = worker_proc.wait(budget + 120)
            except subprocess.TimeoutExpired:
                _stop(worker_proc)
                raise RuntimeError(f"worker {mode} N={case['n']} overran its time budget")
            if rc != 0:
                raise RuntimeError(f"worker {mode} N={case['n']} failed with exit code {rc}")
            return json.loads(Path(out.name).read_text())
    finally:
        _stop(stub)


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def write_markdown(results: list[dict], quick: bool, seed: int, elapsed: float, git: tuple[str, str]) -> str:
    import platform

    import psutil

    lines = [
        "# Benchmark results: N waiting triggers against one upstream Airflow",
        "",
        f"Generated by `.venv/bin/python benchmarks/run.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {psutil.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, seed {seed}, whole script {elapsed:.0f} s. "
        "Method and limits: `benchmarks/README.md`.",
        "",
        f"Library: git {git[0]} at the start, {git[1]} at the end; xdep_sensors source fingerprint(s) as the "
        f"workers imported it: {', '.join(sorted({r['code'] for r in results}))}"
        + (" — **the library changed during the run: cases are not comparable**"
           if len({r["code"] for r in results}) > 1 else "") + ".",
        "",
        "| N | mode | interval s | requests / interval (steady) | total requests | triggerer CPU s (whole run) "
        "| CPU s / interval (steady) | peak RSS growth KiB / trigger | detect p50 s | detect p99 s | detect max s "
        "| fired / N | run wall s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['label']} | {r['interval']:g} | {fmt(r['requests_per_interval'], 1)} "
            f"| {r['requests_total']:,} | {fmt(r['cpu_s'])} | {fmt(r['cpu_per_interval_steady'], 3)} "
            f"| {fmt(r['rss_per_trigger_kib'], 1)} | {fmt(r['detect_p50_s'])} | {fmt(r['detect_p99_s'])} "
            f"| {fmt(r['detect_max_s'])} | {r['fired']:,} / {r['n']:,} | {fmt(r['wall_s'], 0)} |")
    lines += ["", "## Ratios (HttpSensorTrigger ÷ RemoteDagRunTrigger with the shared poller)", "",
              "| N | requests / interval ratio | CPU ratio (whole run) | CPU ratio (steady) | ours p99 detect s "
              "| p99 ≤ interval + 1 s |",
              "|---:|---:|---:|---:|---:|---|"]
    for n in sorted({r["n"] for r in results}):
        by = {r["mode"]: r for r in results if r["n"] == n}
        ours, http = by.get("ours-shared"), by.get("http-sensor")
        if not ours or not http:
            continue
        p99 = ours["detect_p99_s"]
        lines.append(
            f"| {n:,} | {fmt(ratio(http['requests_per_interval'], ours['requests_per_interval']), 1)} "
            f"| {fmt(ratio(http['cpu_s'], ours['cpu_s']), 1)} "
            f"| {fmt(ratio(http['cpu_per_interval_steady'], ours['cpu_per_interval_steady']), 1)} "
            f"| {fmt(p99)} | {'yes' if p99 is not None and p99 <= ours['interval'] + 1 else 'no'} |")
    lines += ["", "## Details per case", "",
              "| N | mode | timeline warm / steady / completions s | steady requests by route | all requests by route "
              "| bytes on the wire (both ways) | stub CPU s | creating triggers CPU s | RSS baseline → peak MiB "
              "| triggers cancelled / errors / early | trigger log | load avg 1 min |",
              "|---:|---|---|---|---|---:|---:|---:|---|---|---:|---:|"]
    for r in results:
        steady = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_window_by_route"].items()) if v)
        allr = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_by_route"].items()))
        lines.append(
            f"| {r['n']:,} | {r['label']} | {r['warm']:g} / {r['steady']:g} (measured {r['window_s']:.1f} s: {r['window_kind']}) / "
            f"{r['complete']:g} | {steady or '–'} | {allr} | {r['bytes_total'] / 2**20:,.1f} MiB "
            f"| {fmt(r['stub_cpu_s'])} | {fmt(r['create_cpu_s'])} "
            f"| {r['rss_baseline_mib']:.0f} → {r['rss_peak_mib']:.0f} "
            f"| {r['cancelled']} / {r['n_errors']} / {r['early']} | {r['log_bytes'] / 2**20:,.1f} MiB | {r['load_avg_1m']:.2f} |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text(text)
    return text


def write_plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"ours-shared": ("tab:green", "o"), "ours-direct": ("tab:blue", "s"), "http-sensor": ("tab:red", "^")}
    panels = [("requests_per_interval", "upstream requests per poll interval (steady state)"),
              ("cpu_s", "triggerer CPU seconds (whole run)")]
    for ax, (key, title) in zip(axes, panels):
        for mode in MODES:
            rows = sorted((r for r in results if r["mode"] == mode and r[key]), key=lambda r: r["n"])
            if not rows:
                continue
            color, marker = styles[mode]
            xs, ys = [r["n"] for r in rows], [r[key] for r in rows]
            ax.plot(xs, ys, marker=marker, color=color, label=LABELS[mode], linewidth=2)
            # labels: HttpSensorTrigger above-left, the others below-right (the two upper lines nearly touch)
            dx, dy, ha = (-7, 6, "right") if mode == "http-sensor" else (7, -11, "left")
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:,.0f}" if y >= 10 else f"{y:.2g}", (x, y), textcoords="offset points",
                            xytext=(dx, dy), ha=ha, fontsize=8, color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        values = [r[key] for r in results if r[key]]
        if values:
            ax.set_ylim(min(values) / 2.5, max(values) * 2.5)
        ax.set_xlim(min(r["n"] for r in results) / 1.6, max(r["n"] for r in results) * 1.6)
        ax.set_xlabel("N waiting triggers")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ns = sorted({r["n"] for r in results})
        ax.set_xticks(ns)
        ax.set_xticklabels([f"{n:,}" for n in ns])
        ax.minorticks_off() if len(ns) == 1 else None
    axes[0].legend(fontsize=8, loc="upper left")
    intervals = ", ".join(f"N={n:,}: {i:g} s" for n, i in sorted({(r['n'], r['interval']) for r in results}))
    fig.suptitle(f"N deferred triggers waiting for upstream DAG runs (poll interval {intervals})", fontsize=12)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "results.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N deferred triggers against a stub upstream Airflow")
    parser.add_argument("--quick", action="store_true", help="N=1000 only, short timeline (< 3 minutes)")
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--ns", default="", help="comma-separated subset of the planned N values")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        result = worker(spec)
        Path(spec["out"]).write_text(json.dumps(result))
        return 0

    started = time.time()
    git_start = git_state()
    cases = plan(args.quick)
    if args.ns:
        wanted = {int(x) for x in args.ns.split(",")}
        cases = [c for c in cases if c["n"] in wanted]
    modes = [m for m in args.modes.split(",") if m]
    results = []
    for case in cases:
        for mode in modes:
            r = run_case(case, mode, args.seed)
            results.append(r)
            print(f"N={r['n']:>5} {mode:<12} req/interval={fmt(r['requests_per_interval'], 1):>8} "
                  f"total_req={r['requests_total']:>7,} cpu={r['cpu_s']:6.2f}s "
                  f"rss/trigger={r['rss_per_trigger_kib']:6.1f}KiB p50={fmt(r['detect_p50_s'])}s "
                  f"p99={fmt(r['detect_p99_s'])}s fired={r['fired']}/{r['n']} wall={r['wall_s']:.0f}s "
                  f"code={r['code']}", flush=True)
    elapsed = time.time() - started
    write_markdown(results, args.quick, args.seed, elapsed, (git_start, git_state()))
    write_plot(results)
    print(f"wrote {RESULTS / 'results.md'} and {RESULTS / 'results.png'} ({elapsed:.0f} s)", flush=True)
    if args.quick:
        by = {r["mode"]: r for r in results}
        ours, http = by.get("ours-shared"), by.get("http-sensor")
        if ours and http:
            print(f"RESULT requests_ratio={ratio(http['requests_per_interval'], ours['requests_per_interval']):.1f} "
                  f"cpu_ratio={ratio(http['cpu_s'], ours['cpu_s']):.1f} "
                  f"p99_detect_s={ours['detect_p99_s']:.2f} interval_s={ours['interval']:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
