"""DAG-run waits on a busy upstream: the shared poll's change feeds vs one request per wait per interval.

The DAG-run case of the busy-upstream benchmark (``benchmarks/assets.py`` is the asset case). One
simulated timeline, one upstream for both sides: the model of the REST listings
(``devtools.memory_upstream``) served over HTTP on loopback by its own process.

* The upstream: ``D`` DAGs with ``H`` finished runs each of history; every DAG starts a run every
  ten intervals (staggered: about ``D / 10`` runs start and as many succeed per interval), each
  running for two intervals.
* ``N`` deferred ``RemoteDagRunSensor`` waits, each for the next run of its DAG by logical date; a
  wait that fires is replaced by the next downstream run's wait (for the DAG's next run). One wait in
  ten holds an *old bound*: a logical date days before the history, a run that does not exist until
  it is backfilled some intervals later (then it starts now and succeeds in the next interval).
* **ours**: the real ``DagRunProbe``s stepped by the real shared poll cycle (``SharedPoller._needs``,
  ``BatchSource.prefetch``, ``SharedPoller._step_all``: first looks, then the change feeds);
* **per-wait polling**: each wait sends ``GET /api/v2/dags/{dag_id}/dagRuns?logical_date_gte=&
  logical_date_lte=&limit=1`` every interval (what an ``HttpSensor`` on the runs endpoint does).

Reported per interval: requests, CPU of this (downstream) process and of the upstream process, and
the detection delay (simulated time from a run's success to its wait firing); over the whole run,
runs whose wait never fired and waits that fired twice.

    python benchmarks/busy_runs.py            # N=1,000 D=100 H=60 (6,000 runs of history), 60 intervals
    python benchmarks/busy_runs.py --quick    # N=1,000 D=100 H=60, 30 intervals
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets import COST_ROWS, model_server  # noqa: E402  (the asset case: same model, same cost rows)

from xdep_sensors.client import ClientConfig, RemoteAirflowClient  # noqa: E402
from xdep_sensors.core import poller as polling  # noqa: E402
from xdep_sensors.core.probes import DagRunProbe, DagRunWait  # noqa: E402

INTERVAL = 5.0
PERIOD = 10  # intervals between two runs of one DAG
RUNS_FOR = 2  # intervals a run runs


def iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


async def run(args: argparse.Namespace) -> dict:
    async with model_server() as (port, control):
        return await _run(args, port, control)


async def _run(args, port, control) -> dict:
    # simulated time starts at this host's now: the change feeds start from first looks made by its clock
    start = datetime.now(timezone.utc).replace(microsecond=0)
    now = start

    async def put(rows: list[tuple]) -> None:
        for chunk in range(0, len(rows), 5000):
            async with control.post(
                "/_runs",
                json=[
                    [d, r, s, iso(lg), iso(st), iso(en)] for d, r, s, lg, st, en in rows[chunk : chunk + 5000]
                ],
            ) as resp:
                await resp.read()

    async def stats() -> tuple[int, float]:
        async with control.get("/_stats") as resp:
            body = await resp.json()
        return sum(n for path, n in body["requests"].items() if not path.endswith("/version")), body["cpu"]

    dags = [f"team_{d}_load" for d in range(args.dags)]
    history = []
    for d, dag in enumerate(dags):  # every 5 minutes before the start
        for k in range(args.history):
            logical = start - timedelta(minutes=5 * (args.history - k))
            history.append(
                (
                    dag,
                    f"scheduled__{logical.isoformat()}",
                    "success",
                    logical,
                    logical,
                    logical + timedelta(minutes=2),
                )
            )
    await put(history)
    if args.debug:
        async with control.get("/_stats", params={"log": "1"}):
            pass  # start logging requests

    def scheduled(d: int, k: int) -> datetime:
        """The logical date (and start) of DAG d's k-th run from the start."""
        return start + timedelta(seconds=INTERVAL * ((d % PERIOD) + PERIOD * k + 1))

    ended: dict[tuple[str, str], datetime] = {}  # (dag, logical iso) -> when its run succeeded
    backfill_start: dict[int, list[tuple[str, datetime]]] = {}  # interval -> runs backfilled then
    backfill_end: dict[int, list[tuple[str, datetime]]] = {}  # interval -> backfilled runs that succeed then
    waited_for: dict[str, set[tuple[int, tuple[str, str]]]] = {"ours": set(), "theirs": set()}  # (wait, run)
    serial = [0]

    class Wait:
        """One downstream wait: for its DAG's next scheduled run, or (one in ten) a run backfilled later."""

        def __init__(self, w: int, side: str | None = None) -> None:
            self.d = w % args.dags
            self.dag = dags[self.d]
            if (
                args.old and w % args.old == 0
            ):  # an old bound: days before the history; backfilled a few intervals on
                serial[0] += 1
                self.logical = start - timedelta(days=3, minutes=w, seconds=serial[0])
                backfill_start.setdefault(cycle + 3 + w % 7, []).append((self.dag, self.logical))
            else:
                k = max(
                    0, int(((now - start).total_seconds() / INTERVAL - (self.d % PERIOD) - 1) // PERIOD) + 1
                )
                self.logical = scheduled(self.d, k)
            self.key = (self.dag, self.logical.isoformat())
            for s in [side] if side else ["ours", "theirs"]:
                waited_for[s].add((w, self.key))

    cycle = 0
    first = {w: Wait(w) for w in range(args.waits)}
    waits = {"ours": dict(first), "theirs": dict(first)}
    fired: dict[str, dict[tuple, float]] = {"ours": {}, "theirs": {}}
    twice = {"ours": 0, "theirs": 0}
    requests: dict[str, list[int]] = {"ours": [], "theirs": []}
    cpu: dict[str, list[float]] = {"ours": [], "theirs": []}
    upstream_cpu: dict[str, list[float]] = {"ours": [], "theirs": []}

    client = RemoteAirflowClient(
        ClientConfig(f"http://127.0.0.1:{port}", password="t", api_version="v2", conn_id="bench")
    )
    poller = polling.SharedPoller(client.config, INTERVAL, on_empty=lambda: None)
    poller.client = client

    def probe_of(wait: Wait) -> DagRunProbe:
        return DagRunProbe(DagRunWait(external_dag_id=wait.dag, logical_date=wait.logical.isoformat()))

    subs = {w: polling._Subscriber(probe_of(wait)) for w, wait in first.items()}

    def fire(side: str, w: int) -> None:
        wait = waits[side][w]
        if (w, wait.key) in fired[side]:
            twice[side] += 1
        else:
            fired[side][(w, wait.key)] = (
                (now - ended[wait.key]).total_seconds() if wait.key in ended else float("nan")
            )
        waits[side][w] = Wait(w, side)  # the next downstream run's wait

    for cycle in range(args.intervals):
        now = start + timedelta(seconds=INTERVAL * (cycle + 1))
        rows = []
        if cycle < args.intervals - 3:  # the last intervals only drain
            for d, dag in enumerate(dags):
                k = int(((now - start).total_seconds() / INTERVAL - (d % PERIOD) - 1) // PERIOD)
                for logical in (scheduled(d, k), scheduled(d, k - RUNS_FOR // PERIOD)):
                    if logical == now:  # it starts
                        rows.append(
                            (dag, f"scheduled__{logical.isoformat()}", "running", logical, logical, None)
                        )
                for kk in (k, k - 1):
                    logical = scheduled(d, kk)
                    if kk >= 0 and logical + timedelta(seconds=INTERVAL * RUNS_FOR) == now:  # it succeeds
                        rows.append(
                            (dag, f"scheduled__{logical.isoformat()}", "success", logical, logical, now)
                        )
                        ended[(dag, logical.isoformat())] = now
            for dag, logical in backfill_start.pop(
                cycle, []
            ):  # a backfill starts now, succeeds next interval
                rows.append((dag, f"backfill__{logical.isoformat()}", "running", logical, now, None))
                backfill_end.setdefault(cycle + 1, []).append((dag, logical))
            for dag, logical in backfill_end.pop(cycle, []):
                rows.append(
                    (
                        dag,
                        f"backfill__{logical.isoformat()}",
                        "success",
                        logical,
                        now - timedelta(seconds=INTERVAL),
                        now,
                    )
                )
                ended[(dag, logical.isoformat())] = now
        await put(rows)

        # ours: one cycle of the shared poll
        req0, up0 = await stats()
        cpu0 = time.process_time()
        order = list(subs)
        source = poller._needs([subs[w] for w in order])
        await source.prefetch()
        results = await poller._step_all([subs[w] for w in order], source)
        del source
        for w, decision in zip(order, results):
            if isinstance(decision, Exception):
                raise decision
            if decision.status == "success":
                fire("ours", w)
                subs[w].probe = probe_of(waits["ours"][w])
        cpu["ours"].append(time.process_time() - cpu0)
        req1, up1 = await stats()
        if args.debug and cycle in (20, 21):
            async with control.get("/_stats", params={"log": "1"}) as resp:
                print(
                    "cycle", cycle, "ours:", *(str(r)[:300] for r in (await resp.json())["log"]), sep="\n  "
                )
        requests["ours"].append(req1 - req0)
        upstream_cpu["ours"].append(up1 - up0)

        # per-wait polling
        cpu0 = time.process_time()
        for w, wait in list(waits["theirs"].items()):
            runs = await client.list_dag_runs(wait.dag, logical_date=wait.logical, limit=1)
            if runs and runs[0].state == "success":
                fire("theirs", w)
        cpu["theirs"].append(time.process_time() - cpu0)
        req2, up2 = await stats()
        requests["theirs"].append(req2 - req1)
        if args.debug:
            async with control.get("/_stats", params={"log": "1"}):
                pass  # forget their requests
        upstream_cpu["theirs"].append(up2 - up1)
    await client.close()

    # steady state: after the first minute (first looks) and before the final drain
    steady = slice(min(12, args.intervals // 2), args.intervals - 3)
    due = {key for key, when in ended.items() if when <= now - timedelta(seconds=2 * INTERVAL)}

    def summary(side: str) -> dict:
        delays = sorted(v for v in fired[side].values() if v == v)
        return {
            "requests_per_interval": statistics.mean(requests[side][steady]),
            "requests_max": max(requests[side][steady]),
            "first_interval_requests": requests[side][0],
            "cpu_ms_per_interval": 1000 * statistics.mean(cpu[side][steady]),
            "upstream_cpu_ms_per_interval": 1000 * statistics.mean(upstream_cpu[side][steady]),
            "detect_p50_s": delays[len(delays) // 2] if delays else None,
            "detect_p99_s": delays[int(len(delays) * 0.99)] if delays else None,
            "fired": len(fired[side]),
            "missed": len({(w, k) for w, k in waited_for[side] if k in due} - set(fired[side])),
            "fired_twice": twice[side],
        }

    return {
        "config": {
            "waits": args.waits,
            "dags": args.dags,
            "history_runs": args.dags * args.history,
            "old": args.old,
            "intervals": args.intervals,
            "interval_s": INTERVAL,
        },
        "ours": summary("ours"),
        "theirs": summary("theirs"),
    }


def report(res: dict) -> str:
    c, o, t = res["config"], res["ours"], res["theirs"]
    rows = COST_ROWS + [
        ("detection p50 (s)", "detect_p50_s", "{:.1f}"),
        ("detection p99 (s)", "detect_p99_s", "{:.1f}"),
        ("waits fired", "fired", "{:d}"),
        ("runs succeeded, wait never fired", "missed", "{:d}"),
        ("fired twice", "fired_twice", "{:d}"),
    ]
    lines = [
        f"N={c['waits']} DAG-run waits on D={c['dags']} DAGs, {c['history_runs']:,} runs of history, "
        f"one run per DAG every {PERIOD} intervals, "
        + (
            f"one wait in {c['old']} holding a bound days before the history (its run backfilled 3-9 "
            f"intervals later; then the next downstream run's wait holds another)"
            if c["old"]
            else "no old bounds"
        )
        + f"; {c['intervals']} intervals of {c['interval_s']:g} s. Runs end at the model's poll instants: "
        "a detection delay of 0 s is the first poll after the success.",
        "",
        "| | ours (shared poll, change feeds) | per-wait polling |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(o[key])} | {fmt.format(t[key])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--dags", type=int, default=100)
    parser.add_argument("--history", type=int, default=60, help="finished runs per DAG before the start")
    parser.add_argument(
        "--old", type=int, default=10, help="one wait in this many holds an old bound (0: none)"
    )
    parser.add_argument("--intervals", type=int, default=None)
    parser.add_argument("--debug", action="store_true", help="list ours' requests in two steady intervals")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "busy_runs.md")
    args = parser.parse_args()
    args.intervals = args.intervals or (30 if args.quick else 60)
    logging.disable(logging.WARNING)
    res = asyncio.run(run(args))
    text = report(res)
    print(text)
    if not args.quick:
        args.out.write_text(
            "# DAG-run waits on a busy upstream (benchmarks/busy_runs.py)\n\n"
            + text
            + "\n\n```json\n"
            + json.dumps(res, indent=2)
            + "\n```\n"
        )
    o, t = res["ours"], res["theirs"]
    print(
        f"RESULT busy_runs requests_ratio={t['requests_per_interval'] / o['requests_per_interval']:.1f} "
        f"ours_requests_per_interval={o['requests_per_interval']:.1f} "
        f"p99_detect_s={o['detect_p99_s']:.1f} missed={o['missed']} fired_twice={o['fired_twice']} "
        f"interval_s={INTERVAL:g}"
    )


if __name__ == "__main__":
    main()
