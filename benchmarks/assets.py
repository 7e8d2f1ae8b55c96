"""Asset waits at scale on a busy upstream: our feeds vs one request per sensor per interval.

One simulated timeline, one upstream for both sides: a model of the REST listings
(``devtools.memory_upstream``) served over HTTP on loopback by its own process
(``devtools.memory_server``), so both sides pay real aiohttp requests and JSON, and the upstream's
CPU is measured in its own process.

* **ours**: ``N`` deferred ``RemoteAssetSensor`` waits (the real ``AssetProbe``s stepped by one
  shared poll cycle per interval: the real ``SharedPoller._needs``/``BatchSource``/``SharedReads``)
  plus ``W`` ``RemoteAssetEventTrigger`` watchers (the real ``open_shared_stream`` /
  ``filter_shared_stream``), reading the connection's asset events through one set of feeds as they
  do in one triggerer; a sensor that fires is replaced by the next downstream run's sensor,
  starting from the cursor its predecessor committed, as in production;
* **per-sensor polling**: the same ``N + W`` consumers each send ``GET .../assets/events?asset_id=
  &timestamp_gte=<own cursor>`` every interval (what an ``HttpSensor`` on the events endpoint does
  per wait), and advance their own cursor.

``A`` assets get one event each per interval (2 % committed late: their timestamp up to 20 s older
than their visibility; ``--late``/``--late-s`` change that) on top of ``H`` events of history.
Reported per interval: requests, CPU of this (downstream) process and of the upstream process,
detection delay (p50/p99 of the simulated time from an event becoming visible to a consumer
seeing it), and per consumer the events missed and delivered twice over the whole run.

    python benchmarks/assets.py            # N=1,000 W=100 A=100 H=100,000, 110 intervals (10,700 events)
    python benchmarks/assets.py --quick    # N=1,000 W=100 A=100 H=20,000, 30 intervals

With ``--partitions K`` every event carries one of ``K`` partition keys (an asset's key turns with
each interval) and each sensor waits for one partition of its asset (``partition_key``): the sensors
spread over ``A x K`` partitions read the same feeds, so ours costs what it costs without partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.memory_upstream import T0  # noqa: E402
from xdep_sensors.client import ClientConfig, RemoteAirflowClient  # noqa: E402
from xdep_sensors.core import poller as polling  # noqa: E402
from xdep_sensors.core.cursors import Cursor  # noqa: E402
from xdep_sensors.core.feeds import OVERLAP  # noqa: E402
from xdep_sensors.core.probes import AssetProbe, AssetWait, cursor_key  # noqa: E402
from xdep_sensors.triggers.watchers import RemoteAssetEventTrigger  # noqa: E402

INTERVAL = 5.0
# Steady state begins once a replacing sensor's start (its predecessor's cursor, less the overlap
# window) lies inside what the shared read has delivered: before that, the sensors of each asset
# catch up with a read of their own (one request per asset and interval). That is the overlap
# window after the shared read's first read, in the second interval, plus one interval of margin.
WARM_UP = math.ceil(OVERLAP.total_seconds() / INTERVAL) + 3
DEBUG = False
real_sleep = asyncio.sleep  # the stream's own sleep is patched out below (simulated time)


def uri(asset: int) -> str:
    return f"s3://bucket/asset-{asset}"


class Clock:
    """The simulated wall clock both sides and the upstream share."""

    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Tally:
    """What one side delivered: first delivery time per (consumer, event), duplicates, requests, CPU."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.first: dict[tuple[str, int], float] = {}
        self.duplicates = 0
        self.requests: list[int] = []
        self.cpu: list[float] = []
        self.upstream_cpu: list[float] = []
        self.delays: list[float] = []

    def deliver(self, consumer: str, event_id: int, event_ts, now) -> None:
        key = (consumer, event_id)
        if key in self.first:
            self.duplicates += 1
            return
        self.first[key] = 0
        self.delays.append((now - event_ts).total_seconds())
        if (now - event_ts).total_seconds() > 5 and DEBUG:
            print("late delivery", self.name, consumer, event_id, event_ts, now)


@contextlib.asynccontextmanager
async def model_server():
    """The upstream model in its own process, on loopback: ``(port, control session)``."""
    server = subprocess.Popen(
        [sys.executable, "-m", "devtools.memory_server", "--api", "v2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        port = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as control:
            yield port, control
    finally:
        server.terminate()
        server.wait(10)


# the rows both busy-upstream benchmarks report first: (label, key, format)
COST_ROWS = [
    ("requests per interval (steady)", "requests_per_interval", "{:.2f}"),
    ("requests, worst interval (steady)", "requests_max", "{:d}"),
    ("requests, first interval", "first_interval_requests", "{:d}"),
    ("downstream CPU per interval (ms)", "cpu_ms_per_interval", "{:.1f}"),
    ("upstream (model server) CPU per interval (ms)", "upstream_cpu_ms_per_interval", "{:.1f}"),
]


async def run(args: argparse.Namespace) -> dict:
    async with model_server() as (port, control):
        return await _run(args, random.Random(args.seed), Clock(), port, control)


async def _run(args, rng, clock, port, control) -> dict:
    K = args.partitions
    keys: dict[int, str | None] = {}  # event id -> its partition key

    def key_of(asset: int, n: int) -> str | None:
        return f"p{(asset + n) % K}" if K else None

    async def add(rows: list[tuple[int, object]], n: int = 0) -> list[int]:
        body = [[a, t.isoformat(), key_of(a, n)] for a, t in rows]
        async with control.post("/_events", json=body) as resp:
            ids = await resp.json()
        keys.update((i, key_of(a, n)) for i, (a, _) in zip(ids, rows))
        return ids

    async def stats() -> tuple[int, float]:
        async with control.get("/_stats") as resp:
            body = await resp.json()
        return sum(n for path, n in body["requests"].items() if not path.endswith("/version")), body["cpu"]

    history = [
        (rng.randrange(args.assets), T0 - timedelta(days=1) + timedelta(seconds=86400 * i / args.history))
        for i in range(args.history)
    ]
    for chunk in range(0, len(history), 20_000):  # history: every asset, over the day before the start
        await add(history[chunk : chunk + 20_000], chunk)
    produced: dict[int, tuple[int, object]] = {}  # event id -> (asset, visible since)
    stamped: dict[int, object] = {}  # event id -> its timestamp

    if args.debug:
        async with control.get("/_stats", params={"log": "1"}):
            pass  # start logging requests

    async def new_events(n: int) -> None:
        rows, visible = [], []
        for asset in range(args.assets):
            seen_at = clock.now - timedelta(
                seconds=rng.uniform(0, INTERVAL)
            )  # it appeared during the interval
            when = seen_at
            if (
                rng.random() < args.late
            ):  # committed late: its timestamp is up to 20 s older than its visibility
                when -= timedelta(seconds=rng.uniform(0, args.late_s))
            rows.append((asset, when))
            visible.append(seen_at)
        for event_id, (asset, when), seen_at in zip(await add(rows, n), rows, visible):
            produced[event_id] = (asset, seen_at)
            stamped[event_id] = when

    sensors_of = {s: s % args.assets for s in range(args.sensors)}
    partition_of = {s: f"p{(s // args.assets) % K}" if K else None for s in range(args.sensors)}
    watchers_of = {w: w % args.assets for w in range(args.watchers)}
    start = clock.now

    # --- ours: the shared poll of the sensors, and the watchers' shared stream ------------------
    ours = Tally("ours")
    client = RemoteAirflowClient(
        ClientConfig(f"http://127.0.0.1:{port}", password="t", api_version="v2", conn_id="bench")
    )
    poller = polling.SharedPoller(client.config, INTERVAL, on_empty=lambda: None)
    poller.client = client

    def sensor_probe(s: int, cursors: dict) -> AssetProbe:
        wait = AssetWait(
            assets=[{"uri": uri(sensors_of[s]), "name": None}], cursors=cursors, partition_key=partition_of[s]
        )
        return AssetProbe(wait)

    probes = {
        s: sensor_probe(
            s, {cursor_key(uri(sensors_of[s]), partition_of[s]): {"timestamp": start.isoformat()}}
        )
        for s in range(args.sensors)
    }
    subs = {s: polling._Subscriber(p, False) for s, p in probes.items()}  # as subscribed to the shared poll

    class Store:
        def __init__(self) -> None:
            self.data: dict = {}

        async def aget(self, key, default=None):
            return self.data.get(key, default)

        async def aset(self, key, value):
            self.data[key] = value

    watchers = []
    for w in range(args.watchers):
        t = RemoteAssetEventTrigger(
            remote_conn_id="bench", asset_uri=uri(watchers_of[w]), poll_interval=INTERVAL
        )
        t.asset_state_store = Store()
        await t.asset_state_store.aset(t._state_key, Cursor(start.isoformat()).to_dict())
        watchers.append(t)
    queues = [asyncio.Queue() for _ in watchers]

    async def batches(q: asyncio.Queue):
        while (b := await q.get()) is not None:
            yield b

    async def listen(w: int) -> None:
        async for event in watchers[w].filter_shared_stream(batches(queues[w])):
            e = event.payload["event"]
            ours.deliver(f"w{w}", e["id"], produced[e["id"]][1], clock.now)

    async def hook_client(self):
        return client

    # --- per-sensor polling: each consumer asks for its own asset's events since its cursor ---------
    theirs = Tally("per-sensor polling")
    their_cursors = {f"s{s}": (sensors_of[s], Cursor(start.isoformat())) for s in range(args.sensors)}
    their_cursors.update({f"w{w}": (watchers_of[w], Cursor(start.isoformat())) for w in range(args.watchers)})

    async def their_cycle() -> int:
        sent = 0
        for consumer, (asset, cursor) in their_cursors.items():
            since = cursor.start
            offset, found = 0, []
            while True:
                page = await client.call(
                    lambda d, o=offset: d.asset_events(asset_id=asset, since=since, offset=o),
                    lambda d, b: d.parse_asset_events(b),
                )
                sent += 1
                found += page.items
                offset += len(page.items)
                if len(page.items) < 100:
                    break
            wanted = partition_of[int(consumer[1:])] if consumer.startswith("s") else None
            new = [e for e in found if cursor.is_new(e) and (wanted is None or e.partition_key == wanted)]
            for e in new:
                theirs.deliver(consumer, e.id, produced[e.id][1], clock.now)
            if new:
                # the naive cursor: the newest consumed timestamp (+ ids there), nothing behind it
                top = max(e.timestamp for e in new)
                their_cursors[consumer] = (
                    asset,
                    Cursor(top.isoformat(), tuple(e.id for e in new if e.timestamp == top)),
                )
        return sent

    with (
        mock.patch("xdep_sensors.hooks.remote_airflow.RemoteAirflowHook.aget_client", new=hook_client),
        mock.patch("xdep_sensors.core.pacing.sleep", new=mock.AsyncMock()),  # the stream pauses via paced()
        mock.patch("xdep_sensors.core.shared_reads._clock", new=lambda: (clock.now - T0).total_seconds()),
    ):
        stream = RemoteAssetEventTrigger.open_shared_stream(watchers[0].serialize()[1])
        listeners = [asyncio.ensure_future(listen(w)) for w in range(len(watchers))]
        stalls: list[float] = []
        for cycle in range(args.intervals):
            clock.advance(INTERVAL)
            if cycle < args.intervals - 3:  # the last intervals only drain
                await new_events(cycle)
            # ours
            req0, up0 = await stats()
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            source = poller._needs([subs[s] for s in probes])
            results = await asyncio.gather(*(p.step(source) for p in probes.values()))
            for s, decision in zip(list(probes), results):
                if decision.status == "success":
                    for e in decision.result["events"]:
                        ours.deliver(f"s{s}", e["id"], produced[e["id"]][1], clock.now)
                    probes[s] = sensor_probe(
                        s, decision.result["cursors"]
                    )  # the next downstream run's sensor
                    subs[s].probe = probes[s]
            stalls.append(time.perf_counter() - t0)
            batch = await stream.__anext__()
            for q in queues:
                q.put_nowait(batch)
            while any(not q.empty() for q in queues):
                await real_sleep(0)
            for _ in range(3):
                await real_sleep(0)
            ours.cpu.append(time.process_time() - cpu0)
            req1, up1 = await stats()
            ours.requests.append(req1 - req0)
            if args.debug and cycle in (20, 21, 22):
                async with control.get("/_stats", params={"log": "1"}) as resp:
                    print("cycle", cycle, "ours:", *(await resp.json())["log"], sep="\n  ")
            ours.upstream_cpu.append(up1 - up0)
            # theirs
            cpu0 = time.process_time()
            await their_cycle()
            theirs.cpu.append(time.process_time() - cpu0)
            req2, up2 = await stats()
            theirs.requests.append(req2 - req1)
            if args.debug:
                async with control.get("/_stats", params={"log": "1"}):
                    pass  # forget their requests
            theirs.upstream_cpu.append(up2 - up1)
        for q in queues:
            q.put_nowait(None)
        await asyncio.gather(*listeners)
        await stream.aclose()
        await client.close()

    # an event stamped before the consumers' start (a late one, in the first seconds) counts for nobody
    counted = {e: a for e, (a, _) in produced.items() if stamped[e] >= start}
    expected = {
        (f"s{s}", e)
        for s in range(args.sensors)
        for e, a in counted.items()
        if a == sensors_of[s] and (not K or keys[e] == partition_of[s])
    }
    expected |= {
        (f"w{w}", e) for w in range(args.watchers) for e, a in counted.items() if a == watchers_of[w]
    }
    steady = slice(WARM_UP, args.intervals - 3)  # and before the final drain

    def summary(t: Tally) -> dict:
        got = set(t.first)
        if args.debug:
            missed = sorted(expected - got)
            print(
                t.name,
                "missed",
                missed[:10],
                [produced[e] for _, e in missed[:10]],
                "last event",
                max(produced),
                "clock",
                clock.now,
            )
        delays = sorted(t.delays)
        return {
            "requests_per_interval": statistics.mean(t.requests[steady]),
            "requests_max": max(t.requests[steady]),
            "cpu_ms_per_interval": 1000 * statistics.mean(t.cpu[steady]),
            "upstream_cpu_ms_per_interval": 1000 * statistics.mean(t.upstream_cpu[steady]),
            "first_interval_requests": t.requests[0],
            "detect_p50_s": delays[len(delays) // 2] if delays else None,
            "detect_p99_s": delays[int(len(delays) * 0.99)] if delays else None,
            "missed": len(expected - got),
            "duplicated": t.duplicates,
            "delivered": len(got & expected),
        }

    new_per_interval = args.assets
    return {
        "config": {
            "sensors": args.sensors,
            "watchers": args.watchers,
            "assets": args.assets,
            "history": args.history,
            "intervals": args.intervals,
            "interval_s": INTERVAL,
            "events": len(produced),
            "expected_deliveries": len(expected),
            "late": args.late,
            "late_s": args.late_s,
            "partitions": K,
        },
        "bound_requests_per_interval": math.ceil(new_per_interval / 100),
        "ours": summary(ours),
        "theirs": summary(theirs),
        "max_cycle_stall_s": max(stalls[1:]),
    }


def report(res: dict) -> str:
    c, o, t = res["config"], res["ours"], res["theirs"]
    rows = COST_ROWS + [
        ("detection p50 (s)", "detect_p50_s", "{:.2f}"),
        ("detection p99 (s)", "detect_p99_s", "{:.2f}"),
        ("deliveries (consumer x event)", "delivered", "{:d}"),
        ("missed", "missed", "{:d}"),
        ("delivered twice", "duplicated", "{:d}"),
    ]
    lines = [
        f"N={c['sensors']} sensors + W={c['watchers']} watchers on A={c['assets']} assets, "
        f"history {c['history']:,} events, {c['events']:,} new events over {c['intervals']} intervals "
        f"of {c['interval_s']:g} s ({c['expected_deliveries']:,} consumer deliveries expected)"
        + (
            f"; every event of one of {c['partitions']} partition keys, each sensor waiting for one "
            f"partition of its asset ({c['assets'] * c['partitions']:,} partitions)"
            if c.get("partitions")
            else ""
        ),
        "",
        "| | ours (feeds) | per-sensor polling |",
        "|---|---:|---:|",
    ]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(o[key])} | {fmt.format(t[key])} |")
    lines += [
        "",
        f"Ours: one read of the upstream's asset events per interval serves the sensors' shared poll "
        f"and the watchers' shared stream. It costs ceil(new / 100) = {res['bound_requests_per_interval']} "
        f"request(s) for the new events, plus the pages down to the deepest event that became visible late "
        f"({c['late']:.0%} of events here, up to {c['late_s']:g} s late: up to "
        f"{int(c['late_s'] * c['assets'] / INTERVAL)} events deep), less the page below the top one "
        f"when the late events found lately lay deeper (read only if it holds one).",
        f"Longest sensor poll cycle (wall time, all {c['sensors']} probes stepped in one gather): "
        f"{res['max_cycle_stall_s']:.3f} s.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--history", type=int, default=None)
    parser.add_argument("--intervals", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--late", type=float, default=0.02, help="share of events committed late (default 2 %%)"
    )
    parser.add_argument(
        "--late-s", type=float, default=20.0, help="how late at most, in seconds (default 20)"
    )
    parser.add_argument(
        "--partitions", type=int, default=0, help="partition keys per asset (default 0: no partitions)"
    )
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "assets.md")
    args = parser.parse_args()
    args.history = args.history or (20_000 if args.quick else 100_000)
    args.intervals = args.intervals or (30 if args.quick else 110)
    if args.intervals < WARM_UP + 4:
        parser.error(
            f"--intervals must be at least {WARM_UP + 4}: the first {WARM_UP} are warm-up, the last 3 "
            "only drain, and the steady state is what lies between"
        )
    logging.disable(logging.WARNING)
    global DEBUG
    DEBUG = args.debug
    res = asyncio.run(run(args))
    text = report(res)
    print(text)
    if not args.quick:
        args.out.write_text(
            "# Asset waits at scale (benchmarks/assets.py)\n\n"
            + text
            + "\n\n```json\n"
            + json.dumps(res, indent=2)
            + "\n```\n"
        )
    o, t = res["ours"], res["theirs"]
    print(
        f"RESULT assets requests_ratio={t['requests_per_interval'] / o['requests_per_interval']:.1f} "
        f"cpu_ratio={t['cpu_ms_per_interval'] / max(o['cpu_ms_per_interval'], 1e-9):.1f} "
        f"upstream_cpu_ratio="
        f"{t['upstream_cpu_ms_per_interval'] / max(o['upstream_cpu_ms_per_interval'], 1e-9):.1f} "
        f"p99_detect_s={o['detect_p99_s']:.2f} missed={o['missed']} duplicated={o['duplicated']} "
        f"interval_s={INTERVAL:g}"
    )


if __name__ == "__main__":
    main()
