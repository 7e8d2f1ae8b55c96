"""Benchmark: N deferred "wait for an upstream DAG run" triggers in one triggerer-like event loop.

Compares, against a local stub of the upstream Airflow REST API (``stub_upstream.py``, its own process):

* ``ours-shared``: ``xdep_sensors.triggers.RemoteDagRunTrigger`` with the shared poller (default);
* ``ours-direct``: the same triggers with ``xdep_sensors.core.poller.SHARED_POLLING = False``;
* ``http-sensor``: ``airflow.providers.http.triggers.http.HttpSensorTrigger`` on each run's endpoint
  ``/api/v2/dags/{dag_id}/dagRuns/{run_id}`` (the stub answers 404 until the run completed).

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py           # N = 100, 1000, 5000; writes benchmarks/results/
    .venv/bin/python benchmarks/run.py --quick   # N = 1000 only, short; last line is the RESULT line

A quick run prints its tables and writes them (and the plot) to the git-ignored ``.tmp/benchmarks/``,
never over the committed full results.

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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
QUICK_RESULTS = ROOT / ".tmp" / "benchmarks"  # --quick: git-ignored, never the committed full results
STUB = HERE / "stub_upstream.py"

MODES = ("ours-shared", "ours-direct", "http-sensor")
LABELS = {
    "ours-shared": "RemoteDagRunTrigger (shared poller)",
    "ours-direct": "RemoteDagRunTrigger (SHARED_POLLING=False)",
    "http-sensor": "HttpSensorTrigger",
}
RUN_ID = "scheduled__2026-11-20T00:00:00+00:00"
REAL_RUN_ID = "manual__2026-11-20T00:00:00+00:00"  # runs made through the API must be "manual__" ones
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
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "xdep_sensors"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
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
    token = spec.get("token") or TOKEN
    os.environ["AIRFLOW_CONN_BENCH_UPSTREAM"] = json.dumps(
        {"conn_type": "remote_airflow", "host": base, "password": token, "extra": {"api_version": "v2"}}
    )
    # HttpAsyncHook turns the extra into request headers: the token, as a real user would send it
    os.environ["AIRFLOW_CONN_BENCH_HTTP"] = json.dumps(
        {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": port,
            "schema": "http",
            "extra": {"Authorization": f"Bearer {token}"},
        }
    )

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
    real = bool(spec.get("real"))  # a real Airflow upstream: no completions, no stub statistics
    import asyncio
    import collections
    import contextvars
    import gc
    import logging

    import psutil
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    from xdep_sensors.core import poller as polling
    from xdep_sensors.hooks import remote_airflow as xdep_hook
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
    heap_baseline = (
        collections.Counter(  # only for the XDEP_BENCH_HEAP development aid
            type(o).__qualname__ for o in gc.get_objects()
        )
        if os.environ.get("XDEP_BENCH_HEAP")
        else collections.Counter()
    )
    time.sleep(0.2)
    baseline_rss = proc.memory_info().rss
    peak = {"rss": baseline_rss}
    cpu_samples: list[tuple[float, float]] = []  # (wall, process CPU) every 0.1 s, for any window later
    cycle_samples: list[tuple[float, int]] = []  # (wall, shared poll cycles completed so far)
    stop_sampling = threading.Event()

    def cycles_done() -> int:
        return sum(p.cycles for p in polling.POLLERS.pollers.everywhere())

    def sample() -> None:
        while not stop_sampling.wait(0.1):
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            cpu_samples.append((time.time(), time.process_time()))
            cycle_samples.append((time.time(), cycles_done()))

    # full (generation 2) collections: how many, and how long each blocked the loop
    gc_full: list[float] = []
    gc_at: list[float] = []
    gc_started: list[float] = []

    gc_young = {"s": 0.0, "n": 0, "started": 0.0}  # generation 0 and 1 collections: count and total time

    def on_gc(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            if phase == "start":
                gc_young["started"] = time.perf_counter()
            else:
                gc_young["s"] += time.perf_counter() - gc_young["started"]
                gc_young["n"] += 1
        if info.get("generation") == 2:
            if phase == "start" and os.environ.get("XDEP_BENCH_HEAP"):  # development aid: what it scans
                kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
                kinds.subtract(heap_baseline)
                print(
                    f"  full GC at {time.time() - t0:.1f}s "
                    f"scans {kinds.total() + heap_baseline.total()} objects; "
                    f"most grown: {kinds.most_common(12)}",
                    file=err,
                    flush=True,
                )
            if phase == "start":
                gc_started[:] = [time.perf_counter()]
            elif gc_started:
                gc_full.append(time.perf_counter() - gc_started[0])
                gc_at.append(time.time())

    gc.callbacks.append(on_gc)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    t0 = time.time() + 0.5
    done_at = [t0 + off for off in offsets]
    if not real:
        _http_json("POST", f"{base}/_schedule", {"dag_ids": dag_ids, "done_at": done_at})
    window = (t0 + spec["warm"], t0 + spec["warm"] + spec["steady"])
    deadline = t0 + spec["warm"] + spec["steady"] + spec["complete"] + 2 * interval + 20.0
    if real:  # nothing completes upstream: measure the waiting, then stop
        deadline = t0 + spec["warm"] + spec["steady"] + 0.5
    stalls: list[float] = []  # how late the loop woke a 50 ms sleeper: time the loop was blocked
    stall_at: list[
        tuple[float, float, float]
    ] = []  # (seconds after t0, stall, loop CPU) of stalls over 0.2 s
    busy: list[float] = []  # loop-thread CPU seconds per monitor window

    fired: list[float | None] = [None] * n
    payloads: list[object] = [None] * n  # True, or the status of a wrong event: not the payload (kept objects
    # would be the harness's, and make full garbage collections a triggerer would not make)
    marks: dict[str, tuple[float, float]] = {}
    left = {"n": n}
    all_done: list = []  # the asyncio.Event, made inside the loop

    async def run_one(i: int, trigger) -> None:
        agen = trigger.run()
        try:
            async for event in agen:
                fired[i] = time.time()
                p = event.payload
                payloads[i] = (
                    True
                    if p is True or (isinstance(p, dict) and p.get("status") == "success")
                    else repr(p)[:200]
                )
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

    async def watch_loop() -> None:
        tick = 0.05
        while True:
            before, cpu_before = time.perf_counter(), time.thread_time()
            await asyncio.sleep(tick)
            stalls.append(max(time.perf_counter() - before - tick, 0.0))
            # the loop thread's own CPU in that window: the blocking work, whatever the machine's load
            busy.append(time.thread_time() - cpu_before)
            if stalls[-1] > 0.2:
                stall_at.append((round(time.time() - t0, 1), round(stalls[-1], 3), round(busy[-1], 3)))

    def trace_slow_callbacks(over: float = 0.03) -> None:
        """Print every loop callback that runs longer than ``over`` seconds, and whether a full GC
        ran in it."""
        from asyncio import events

        run = events.Handle._run

        def timed(handle) -> None:
            started, full_gcs = time.perf_counter(), len(gc_full)
            run(handle)
            took = time.perf_counter() - started
            if took > over:
                print(
                    f"  slow callback {took:.3f}s at {time.time() - t0:.1f}s, full GCs in it: "
                    f"{len(gc_full) - full_gcs}: {handle._callback!r:.200}",
                    file=err,
                    flush=True,
                )

        events.Handle._run = timed

    async def heap_census() -> (
        None
    ):  # development aid: what the heap holds in the middle of the steady window
        await asyncio.sleep(max((window[0] + window[1]) / 2 - time.time(), 0))

        objs = gc.get_objects()
        kinds = collections.Counter(type(o).__qualname__ for o in objs)
        kinds.subtract(heap_baseline)
        print(
            f"  heap: {len(objs)} tracked objects ({len(objs) - heap_baseline.total()} more than before t0); "
            f"most grown: {kinds.most_common(30)}",
            file=err,
            flush=True,
        )
        del objs

    async def main() -> dict:
        await asyncio.sleep(max(t0 - time.time(), 0))
        monitor = asyncio.ensure_future(watch_loop())
        if os.environ.get("XDEP_BENCH_SLOW"):  # development aid: which callbacks block the loop, and why
            trace_slow_callbacks()
        if os.environ.get("XDEP_BENCH_HEAP"):
            asyncio.ensure_future(heap_census())
        marks["start"] = (time.time(), time.process_time())
        all_done.append(asyncio.Event())
        tasks: list[asyncio.Future] = []
        sensor_deadline = (
            time.time() + 7 * 24 * 3600
        )  # what a sensor with the default timeout (7 days) passes
        loop = asyncio.get_running_loop()

        def arrive(i: int) -> None:
            """Trigger i reaches the triggerer: it is made and its run() starts (as TriggerRunner does)."""
            dag_id = dag_ids[i]
            if mode == "http-sensor":
                # a real upstream has the run already: wait for one it lacks (404, as the stub answers)
                http_run = f"absent__{REAL_RUN_ID}" if real else RUN_ID
                trigger = HttpSensorTrigger(
                    endpoint=f"/api/v2/dags/{dag_id}/dagRuns/{http_run}",
                    http_conn_id="bench_http",
                    poke_interval=interval,
                )
            else:
                trigger = RemoteDagRunTrigger(
                    remote_conn_id="bench_upstream",
                    external_dag_id=dag_id,
                    run_id=REAL_RUN_ID if real else RUN_ID,
                    poke_interval=interval,
                    timeout_at=sensor_deadline,
                )
            tasks.append(asyncio.ensure_future(run_one(i, trigger)))

        quiet = (
            contextvars.Context()
        )  # the arrivals' timers share one context (the harness's, not the triggers')
        for i in range(n):
            loop.call_later(max(t0 + starts[i] - time.time(), 0), arrive, i, context=quiet)
        marks["created"] = (time.time(), time.process_time())
        try:  # one waiter for all (asyncio.wait on N tasks would cost the harness O(N) per wake-up)
            await asyncio.wait_for(all_done[0].wait(), max(deadline - time.time(), 0.01))
        except asyncio.TimeoutError:
            pass
        pending = [t for t in tasks if not t.done()]
        cancelled = len(pending) + n - len(tasks)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]
        # the per-loop clients of SHARED_POLLING=False stay open by design (one per loop): close them
        for client in list(xdep_hook.CLIENTS.here().values()):
            await client.close()
        await asyncio.sleep(0.25)  # let aiohttp close its transports
        monitor.cancel()
        marks["end"] = (time.time(), time.process_time())
        return {
            "cancelled": cancelled,
            "errors": [repr(e)[:300] for e in errors[:5]],
            "n_errors": len(errors),
        }

    print(f"  [{mode} N={n}] running {deadline - t0:.0f}s at most ...", file=err, flush=True)
    if os.environ.get("XDEP_BENCH_PROFILE"):  # a development aid: cProfile of the event loop, to this file
        import cProfile

        profiler = cProfile.Profile()
        outcome = profiler.runcall(asyncio.run, main())
        profiler.dump_stats(f"{os.environ['XDEP_BENCH_PROFILE']}.{mode}.{n}")
    else:
        outcome = asyncio.run(main())
    stop_sampling.set()
    sampler.join()
    gc.callbacks.remove(on_gc)
    stall_info = {
        "stall_max_s": max(stalls, default=0.0),
        "stalls_over_0_2": sum(1 for x in stalls if x > 0.2),
        "stall_p99_s": percentile(stalls, 0.99),
        "stall_cpu_max_s": max(busy, default=0.0),
        "stalls_cpu_over_0_2": sum(1 for x in busy if x > 0.2),
        "gc_full": len(gc_full),
        "gc_full_max_s": max(gc_full, default=0.0),
        "gc_full_total_s": sum(gc_full),
        "gc_young": gc_young["n"],
        "gc_young_total_s": gc_young["s"],
        "stalls_over_0_2_at": stall_at[:20],  # seconds after t0
        "gc_full_at": [(round(t - t0, 1), round(d, 3)) for t, d in zip(gc_at, gc_full)],
    }
    cycles = cycle_window(cycle_samples, window[0], window[1])
    if real:
        stall_info["cycle_ends"] = [
            t for (t, c), (_, before) in zip(cycle_samples[1:], cycle_samples) if c > before
        ]
        return _real_result(
            spec,
            code,
            window,
            cycles,
            marks,
            cpu_samples,
            fired,
            outcome,
            stall_info,
            peak,
            baseline_rss,
            log_path,
        )
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
    wrong = sum(
        1
        for p in payloads
        if p is not None and p is not True and not (isinstance(p, dict) and p.get("status") == "success")
    )
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
        "cpu_per_interval_steady": cpu_window / intervals
        if cpu_window is not None and intervals > 0
        else None,
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
        "log_lines": _count_lines(log_path),
        **stall_info,
    }
    return result


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def cycle_window(samples: list[tuple[float, int]], ws: float, we: float) -> tuple[float, float, int] | None:
    """Whole shared-poll cycles in ``[ws, we)``: from the first cycle end in it to the last, and how many."""
    ends, prev = [], None
    for t, count in samples:
        if prev is not None and count > prev and ws <= t < we:
            ends.append(t)
        prev = count
    if len(ends) >= 2:
        return ends[0], ends[-1], len(ends) - 1
    return None


def _real_result(
    spec, code, window, cycles, marks, cpu_samples, fired, outcome, stall_info, peak, baseline_rss, log_path
) -> dict:
    """A case against a real Airflow: the triggerer side; the parent adds the upstream's CPU."""
    ws, we = window
    kind = "fixed"
    if spec["mode"] != "http-sensor" and cycles is not None:
        ws, we, k = cycles
        kind = f"{k} whole poll cycles"
    intervals = (we - ws) / spec["interval"]
    cpu_window = cpu_at(cpu_samples, we) - cpu_at(cpu_samples, ws)
    return {
        **spec,
        "label": LABELS[spec["mode"]],
        "code": code,
        "fired": sum(1 for f in fired if f is not None),
        **outcome,
        "window": [ws, we],
        "window_s": we - ws,
        "window_kind": kind,
        "t_start": marks["start"][0],
        "t_end": marks["end"][0],
        "cpu_s": marks["end"][1] - marks["start"][1],
        "cpu_per_interval_steady": cpu_window / intervals if intervals > 0 else None,
        "create_cpu_s": marks["created"][1] - marks["start"][1],
        "wall_s": marks["end"][0] - marks["start"][0],
        "rss_per_trigger_kib": (peak["rss"] - baseline_rss) / spec["n"] / 1024,
        "load_avg_1m": os.getloadavg()[0],
        "log_bytes": os.path.getsize(log_path),
        "log_lines": _count_lines(log_path),
        **stall_info,
    }


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
    stub = subprocess.Popen(
        [
            python,
            str(STUB),
            "--mode",
            "http" if mode == "http-sensor" else "ours",
            "--port",
            "0",
            "--max-seconds",
            str(budget + 180),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(ROOT),
    )
    try:
        port = _read_port(stub, 30.0)
        with tempfile.NamedTemporaryFile("r", suffix=".json", prefix="xdep-bench-") as out:
            spec = {**case, "mode": mode, "port": port, "seed": seed, "out": out.name}
            worker_proc = subprocess.Popen(
                [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                stdout=subprocess.DEVNULL,
                cwd=str(ROOT),
            )
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


# ---------------------------------------------------------------------------------------------
# a real Airflow 3 upstream: what the waiting costs the upstream's API server


DAG_FILE = """
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for i in range({start}, {stop}):
    with DAG(f"bench_dag_{{i}}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        EmptyOperator(task_id="work")
    globals()[dag.dag_id] = dag
"""


def real_plan(quick: bool) -> list[dict]:
    """Per N: interval and timeline against the real Airflow (no completions: the waiting is measured)."""
    # Intervals of 30-60 s (sensors default to 60 s): a one-worker api-server on SQLite and a shared
    # 2-core box serves ~1,000 HttpSensorTrigger polls per 30 s; far more at once and it stalls
    # (pool timeouts).
    # At 30 s, N=1,000 HttpSensorTrigger polls already made requests wait 30-90 s and fail with pool timeouts.
    if quick:
        return [dict(n=1000, interval=60.0, warm=65.0, steady=130.0, complete=0.0)]
    return [
        dict(n=1000, interval=60.0, warm=65.0, steady=130.0, complete=0.0),
        dict(n=2000, interval=60.0, warm=65.0, steady=130.0, complete=0.0),
    ]


def _tree_cpu(root) -> float:
    """CPU seconds of a process, its live descendants and its reaped children."""
    import psutil

    total = 0.0
    try:
        t = root.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


class RealUpstream:
    """A real Airflow 3 api-server on loopback (SQLite) with N DAGs, each with one queued run."""

    def __init__(self, home: Path):
        sys.path.insert(0, str(ROOT))
        from devtools.airflow_local import LocalAirflow

        self.af = LocalAirflow(
            home,
            Path(sys.executable).parent / "airflow",
            components=("api-server",),
            name="bench-upstream",
            extra_env={
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "600",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
            },
        )
        self.n = 0
        self.timings: dict[str, float] = {}

    def start(self) -> None:
        t = time.time()
        self.af.start(timeout=600)
        self.timings["start_s"] = time.time() - t
        import psutil

        self.proc = psutil.Process(self.af._procs["api-server"].pid)

    def grow(self, n: int) -> None:
        """Have DAGs bench_dag_0 .. n-1 parsed, each with run RUN_ID (created through the API, one at
        a time)."""
        af = self.af
        af.dags_folder.mkdir(parents=True, exist_ok=True)
        for start in range(
            self.n - self.n % 100, n, 100
        ):  # files of 100 DAGs: each parses well within timeouts
            (af.dags_folder / f"bench_dags_{start:05d}.py").write_text(
                DAG_FILE.format(start=start, stop=min(start + 100, n))
            )
        t = time.time()
        af.start_component("dag-processor", wait=False)
        try:
            while af.api("GET", "/api/v2/dags?limit=1")["total_entries"] < n:
                if time.time() - t > 900:
                    raise RuntimeError(f"the upstream parsed too few DAGs in 900 s\n{af.tail_logs()}")
                time.sleep(2)
        finally:
            af.stop_component("dag-processor")  # it would compete for CPU with what is measured
        self.timings[f"parse_{n}_s"] = time.time() - t
        t = time.time()
        have = af.api("GET", "/api/v2/dags/~/dagRuns?limit=1")[
            "total_entries"
        ]  # a kept home has some already
        for i in range(max(self.n, have), n):
            af.trigger(f"bench_dag_{i}", logical_date="2026-11-20T00:00:00+00:00", run_id=REAL_RUN_ID)
        self.timings[f"runs_{n}_s"] = time.time() - t
        self.n = n

    def cpu(self) -> float:
        return _tree_cpu(self.proc)

    def access_log_size(self) -> int:
        try:
            return (self.af.log_dir / "api-server.log").stat().st_size
        except OSError:
            return 0

    def requests_between(self, start: int, stop: int) -> int:
        """API requests in the access log between two byte offsets."""
        with open(self.af.log_dir / "api-server.log", "rb") as f:
            f.seek(start)
            chunk = f.read(max(stop - start, 0))
        return sum(
            1 for line in chunk.splitlines() if b"/api/v2/" in line and (b"GET" in line or b"POST" in line)
        )

    def idle(self, seconds: float) -> float:
        """CPU seconds per second the api-server uses while nobody asks anything."""
        c0 = self.cpu()
        time.sleep(seconds)
        return (self.cpu() - c0) / seconds

    def settle(self, idle: float, limit: float = 120.0) -> float:
        """Wait until requests left over from a case are served (CPU back near idle); return the
        seconds waited."""
        t = time.time()
        while time.time() - t < limit:
            c0 = self.cpu()
            time.sleep(3.0)
            if (self.cpu() - c0) / 3.0 <= max(3 * idle, 0.01):
                break
        return time.time() - t

    def stop(self) -> None:
        self.af.stop()


CYCLE_COST_WINDOW = (2.5, 0.5)  # seconds before and after a shared cycle's end: its request's api-server CPU


def run_real_case(up: RealUpstream, case: dict, mode: str, seed: int, idle_per_s: float) -> dict:
    """One mode against the real upstream: the worker plays the triggerer, this process samples the
    api-server."""
    python = sys.executable
    samples: list[tuple[float, float]] = []
    log_sizes: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            now = time.time()
            samples.append((now, up.cpu()))
            log_sizes.append((now, up.access_log_size()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    budget = case["warm"] + case["steady"] + 60.0
    try:
        with tempfile.NamedTemporaryFile("r", suffix=".json", prefix="xdep-bench-") as out:
            spec = {
                **case,
                "mode": mode,
                "port": up.af.port,
                "seed": seed,
                "out": out.name,
                "real": True,
                "token": up.af.token(),
            }
            worker_proc = subprocess.Popen(
                [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                stdout=subprocess.DEVNULL,
                cwd=str(ROOT),
            )
            try:
                rc = worker_proc.wait(budget + 120)
            except subprocess.TimeoutExpired:
                _stop(worker_proc)
                raise RuntimeError(f"worker {mode} N={case['n']} (real upstream) overran its time budget")
            if rc != 0:
                raise RuntimeError(f"worker {mode} N={case['n']} (real upstream) failed with exit code {rc}")
            r = json.loads(Path(out.name).read_text())
    finally:
        time.sleep(0.3)
        stop.set()
        sampler.join()
    r.pop("token", None)
    ws, we = r["window"]
    intervals = (we - ws) / r["interval"]

    def size_at(when: float) -> int:
        return next((size for t, size in log_sizes if t >= when), log_sizes[-1][1])

    r["upstream_cpu_s"] = cpu_at(samples, r["t_end"]) - cpu_at(samples, r["t_start"])
    r["upstream_cpu_per_interval"] = (cpu_at(samples, we) - cpu_at(samples, ws)) / intervals
    r["upstream_requests_per_interval"] = up.requests_between(size_at(ws), size_at(we)) / intervals
    r["upstream_requests_total"] = up.requests_between(size_at(r["t_start"]), size_at(r["t_end"]))
    # The shared poll's cost is one short burst per cycle, far below the idle CPU's noise over a whole
    # interval: measure it around each steady cycle's end (its request is answered just before), net of idle.
    ends = [t for t in r.pop("cycle_ends", []) if ws <= t <= we + 1.0]
    if mode == "ours-shared" and ends:
        before, after = CYCLE_COST_WINDOW
        nets = [
            cpu_at(samples, t + after) - cpu_at(samples, t - before) - idle_per_s * (before + after)
            for t in ends
        ]
        r["upstream_cycle_net_cpu_s"] = sum(nets) / len(nets)
        r["upstream_cycles_measured"] = len(nets)
    return r


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


def write_markdown(
    results: list[dict],
    quick: bool,
    seed: int,
    elapsed: float,
    git: tuple[str, str],
    real: list[dict] | None = None,
    real_info: dict | None = None,
    out: Path = RESULTS,
) -> str:
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
        f"workers imported it: {', '.join(sorted({r['code'] for r in results + (real or [])}))}"
        + (
            " — **the library changed during the run: cases are not comparable**"
            if len({r["code"] for r in results + (real or [])}) > 1
            else ""
        )
        + ".",
        "",
        "| N | mode | interval s | requests / interval (steady) | total requests "
        "| triggerer CPU s (whole run) | CPU s / interval (steady) | peak RSS growth KiB / trigger "
        "| detect p50 s | detect p99 s | detect max s | fired / N | run wall s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['label']} | {r['interval']:g} | {fmt(r['requests_per_interval'], 1)} "
            f"| {r['requests_total']:,} | {fmt(r['cpu_s'])} | {fmt(r['cpu_per_interval_steady'], 3)} "
            f"| {fmt(r['rss_per_trigger_kib'], 1)} | {fmt(r['detect_p50_s'])} | {fmt(r['detect_p99_s'])} "
            f"| {fmt(r['detect_max_s'])} | {r['fired']:,} / {r['n']:,} | {fmt(r['wall_s'], 0)} |"
        )
    lines += [
        "",
        "## Ratios (HttpSensorTrigger ÷ RemoteDagRunTrigger with the shared poller)",
        "",
        "| N | requests / interval ratio | CPU ratio (whole run) | CPU ratio (steady) | ours p99 detect s "
        "| p99 ≤ interval + 1 s |",
        "|---:|---:|---:|---:|---:|---|",
    ]
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
            f"| {fmt(p99)} | {'yes' if p99 is not None and p99 <= ours['interval'] + 1 else 'no'} |"
        )
    lines += [
        "",
        "## Details per case",
        "",
        "| N | mode | timeline warm / steady / completions s | steady requests by route "
        "| all requests by route | bytes on the wire (both ways) | stub CPU s | creating triggers CPU s "
        "| RSS baseline → peak MiB | triggers cancelled / errors / early | trigger log | load avg 1 min |",
        "|---:|---|---|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in results:
        steady = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_window_by_route"].items()) if v)
        allr = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_by_route"].items()))
        lines.append(
            f"| {r['n']:,} | {r['label']} | {r['warm']:g} / {r['steady']:g} "
            f"(measured {r['window_s']:.1f} s: {r['window_kind']}) / "
            f"{r['complete']:g} | {steady or '–'} | {allr} | {r['bytes_total'] / 2**20:,.1f} MiB "
            f"| {fmt(r['stub_cpu_s'])} | {fmt(r['create_cpu_s'])} "
            f"| {r['rss_baseline_mib']:.0f} → {r['rss_peak_mib']:.0f} "
            f"| {r['cancelled']} / {r['n_errors']} / {r['early']} | {r['log_bytes'] / 2**20:,.1f} MiB "
            f"| {r['load_avg_1m']:.2f} |"
        )
    lines += [
        "",
        "## Event-loop stalls and full garbage collections (triggerer)",
        "",
        "A 50 ms sleeper in the triggerer's loop records how late it wakes: the time the loop was blocked. "
        "Airflow's triggerer warns above 0.2 s.",
        "",
        "| upstream | N | mode | stall max s (wall) | stall p99 s | stalls > 0.2 s (wall) "
        "| loop CPU max s per window | windows > 0.2 s CPU | full GCs | longest full GC s (wall) "
        "| stalls > 0.2 s at (s after start, wall, CPU) | trigger log lines |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results + (real or []):
        lines.append(
            f"| {'real Airflow' if r.get('real') else 'stub'} | {r['n']:,} | {r['label']} "
            f"| {fmt(r['stall_max_s'], 3)} "
            f"| {fmt(r['stall_p99_s'], 3)} | {r['stalls_over_0_2']} | {fmt(r['stall_cpu_max_s'], 3)} "
            f"| {r['stalls_cpu_over_0_2']} | {r['gc_full']} | {fmt(r['gc_full_max_s'], 3)} "
            f"| {'; '.join(f'{a:g}: {b:.2f}/{c:.2f}' for a, b, c in r['stalls_over_0_2_at'][:6]) or '–'} "
            f"| {r['log_lines']:,} |"
        )
    if real:
        info = real_info or {}
        lines += [
            "",
            "## Upstream cost on a real Airflow (api-server CPU)",
            "",
            f"Apache Airflow {info.get('airflow', '?')} api-server (one worker, SQLite, loopback), "
            "its process and children sampled every 0.1 s; the scheduler and dag-processor are stopped "
            "while measuring, so runs stay queued and nothing completes. Setup: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in info.get("timings", {}).items())
            + ".",
            "",
            "| N | mode | interval s | api-server CPU s / interval (steady) | idle CPU s / interval "
            "| net api-server CPU s / interval (shared poll: per cycle, around it) "
            "| API requests / interval (access log) | api-server CPU s (whole case) "
            "| API requests (whole case) | triggerer CPU s (whole case) | steady window | load avg 1 min |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in real:
            net = upstream_net(r)
            cycles = f" ({r['upstream_cycles_measured']} cycles)" if r.get("upstream_cycles_measured") else ""
            lines.append(
                f"| {r['n']:,} | {r['label']} | {r['interval']:g} | {fmt(r['upstream_cpu_per_interval'], 3)} "
                f"| {fmt(r['upstream_idle_cpu_per_interval'], 3)} | {fmt(net, 3)}{cycles} "
                f"| {fmt(r['upstream_requests_per_interval'], 1)} "
                f"| {fmt(r['upstream_cpu_s'])} | {r['upstream_requests_total']:,} | {fmt(r['cpu_s'])} "
                f"| {r['window_s']:.1f} s ({r['window_kind']}) | {r['load_avg_1m']:.2f} |"
            )
        lines += [
            "",
            "| N | api-server CPU ratio (HttpSensorTrigger ÷ shared poll, steady, raw) "
            "| net of idle (the RESULT line's) | API requests ratio |",
            "|---:|---:|---:|---:|",
        ]
        for n in sorted({r["n"] for r in real}):
            by = {r["mode"]: r for r in real if r["n"] == n}
            ours, http = by.get("ours-shared"), by.get("http-sensor")
            if ours and http:
                cpu_ratio = ratio(http["upstream_cpu_per_interval"], ours["upstream_cpu_per_interval"])
                requests_ratio = ratio(
                    http["upstream_requests_per_interval"], ours["upstream_requests_per_interval"]
                )
                lines.append(
                    f"| {n:,} | {fmt(cpu_ratio, 1)} "
                    f"| {fmt(upstream_ratio(ours, http), 1)} "
                    f"| {fmt(requests_ratio, 1)} |"
                )
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    return text


def write_plot(results: list[dict], out: Path = RESULTS) -> None:
    if not results:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {
        "ours-shared": ("tab:green", "o"),
        "ours-direct": ("tab:blue", "s"),
        "http-sensor": ("tab:red", "^"),
    }
    panels = [
        ("requests_per_interval", "upstream requests per poll interval (steady state)"),
        ("cpu_s", "triggerer CPU seconds (whole run)"),
    ]
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
                ax.annotate(
                    f"{y:,.0f}" if y >= 10 else f"{y:.2g}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(dx, dy),
                    ha=ha,
                    fontsize=8,
                    color=color,
                )
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
    intervals = ", ".join(f"N={n:,}: {i:g} s" for n, i in sorted({(r["n"], r["interval"]) for r in results}))
    fig.suptitle(
        f"N deferred triggers waiting for upstream DAG runs (poll interval {intervals})", fontsize=12
    )
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def upstream_net(r: dict) -> float | None:
    """The api-server CPU s a mode costs per interval above idle: per shared cycle, or over the
    steady window."""
    if r["mode"] == "ours-shared":
        return r.get("upstream_cycle_net_cpu_s")
    return r["upstream_cpu_per_interval"] - r["upstream_idle_cpu_per_interval"]


def upstream_ratio(ours: dict | None, http: dict | None) -> float | None:
    """HttpSensorTrigger ÷ shared poll, api-server CPU per interval above its idle CPU."""
    if not ours or not http:
        return None
    ours_net, http_net = upstream_net(ours), upstream_net(http)
    if ours_net is None or http_net is None or ours_net <= 0:
        return None  # not measurable above the idle noise: no ratio is claimed
    return http_net / ours_net


def run_real(cases: list[dict], modes: list[str], seed: int) -> tuple[list[dict], dict]:
    """Every (N, mode) against one real Airflow upstream, N growing; the api-server's CPU per interval."""
    keep = os.environ.get("XDEP_BENCH_UPSTREAM_HOME")  # a development aid: reuse (and keep) this Airflow home
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="xdep-bench-airflow-"))
    up = RealUpstream(home)
    results: list[dict] = []
    info: dict = {}
    try:
        print("  [real upstream] starting Airflow 3 (api-server, SQLite) ...", flush=True)
        up.start()
        for case in sorted(cases, key=lambda c: c["n"]):
            print(f"  [real upstream] {case['n']:,} DAGs and runs ...", flush=True)
            up.grow(case["n"])
            up.settle(0.005)
            idle = up.idle(20.0)
            info[case["n"]] = {"idle_cpu_per_s": idle}
            # ours first: HttpSensorTrigger's polls can still be queued in the api-server after its case ends
            for mode in sorted(modes, key=lambda m: m != "ours-shared"):
                r = run_real_case(up, case, mode, seed, idle)
                r["settle_s"] = up.settle(idle)
                r["upstream_idle_cpu_per_interval"] = idle * r["interval"]
                results.append(r)
                print(
                    f"N={r['n']:>5} {mode:<12} [real upstream] api-server CPU/interval="
                    f"{r['upstream_cpu_per_interval']:.3f}s "
                    f"requests/interval={r['upstream_requests_per_interval']:.1f} "
                    f"triggerer cpu={r['cpu_s']:.2f}s stall_max={r['stall_max_s']:.3f}s fired={r['fired']} "
                    f"errors={r['n_errors']} {r['errors'][:1]} code={r['code']}",
                    flush=True,
                )
        info["timings"] = dict(up.timings)
        import importlib.metadata as md

        info["airflow"] = md.version("apache-airflow")
    finally:
        up.stop()
        import shutil

        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    return results, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="N deferred triggers against a stub upstream Airflow")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=1000 only, short timeline; prints the tables, writes only under .tmp/benchmarks/",
    )
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES)
    )
    parser.add_argument("--ns", default="", help="comma-separated subset of the planned N values")
    parser.add_argument(
        "--no-real", action="store_true", help="skip the cases against a real Airflow upstream"
    )
    parser.add_argument(
        "--real-only", action="store_true", help="only the cases against a real Airflow upstream"
    )
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
    if args.real_only:
        cases = []
    for case in cases:
        for mode in modes:
            r = run_case(case, mode, args.seed)
            results.append(r)
            print(
                f"N={r['n']:>5} {mode:<12} req/interval={fmt(r['requests_per_interval'], 1):>8} "
                f"total_req={r['requests_total']:>7,} cpu={r['cpu_s']:6.2f}s "
                f"rss/trigger={r['rss_per_trigger_kib']:6.1f}KiB p50={fmt(r['detect_p50_s'])}s "
                f"p99={fmt(r['detect_p99_s'])}s fired={r['fired']}/{r['n']} wall={r['wall_s']:.0f}s "
                f"code={r['code']}",
                flush=True,
            )
            print(
                f"        stall max={r['stall_max_s']:.3f}s over 0.2 s at {r['stalls_over_0_2_at']}, "
                f"full GCs at {r['gc_full_at']} (total {r['gc_full_total_s']:.2f}s), "
                f"young GCs {r['gc_young']} (total {r['gc_young_total_s']:.2f}s)",
                flush=True,
            )

    real: list[dict] = []
    real_info: dict = {}
    if not args.no_real:
        real_cases = real_plan(args.quick)
        if args.ns:
            real_cases = [c for c in real_cases if c["n"] in wanted]
        real, real_info = run_real(real_cases, [m for m in modes if m != "ours-direct"], args.seed)
    elapsed = time.time() - started
    out = QUICK_RESULTS if args.quick else RESULTS  # a quick run never overwrites the committed results
    text = write_markdown(
        results, args.quick, args.seed, elapsed, (git_start, git_state()), real, real_info, out=out
    )
    write_plot(results, out)
    if args.quick:
        print(text, flush=True)
    print(f"wrote {out / 'results.md'} and {out / 'results.png'} ({elapsed:.0f} s)", flush=True)
    if args.quick or any(r["n"] == 1000 for r in results):  # the full run states it for N=1,000 too
        by = {r["mode"]: r for r in results if r["n"] == 1000}
        ours, http = by.get("ours-shared"), by.get("http-sensor")
        rby = {r["mode"]: r for r in real if r["n"] == 1000}
        up_ratio = upstream_ratio(rby.get("ours-shared"), rby.get("http-sensor"))
        if ours and http:
            print(
                f"RESULT requests_ratio="
                f"{ratio(http['requests_per_interval'], ours['requests_per_interval']):.1f} "
                f"cpu_ratio={ratio(http['cpu_s'], ours['cpu_s']):.1f} "
                f"upstream_cpu_ratio={fmt(up_ratio, 1).replace(',', '')} "
                f"p99_detect_s={ours['detect_p99_s']:.2f} interval_s={ours['interval']:g}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
