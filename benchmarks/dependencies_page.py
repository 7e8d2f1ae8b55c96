"""The Remote dependencies page at 1,000 dependencies: time to serve it, the upstream cached.

A real Airflow 3.3.2 downstream (PostgreSQL, API server + dag-processor) whose DAGs declare 1,000
sensor tasks (benchmarks/page_dags: 100 DAGs x 10 sensors on two connections) and a real 3.3.2
upstream (SQLite, API only). After one warm-up request (which reads the upstream once per
connection; later ones within 30 s use that read), ``--requests`` requests of each, one at a time:

* ``GET /xdep-sensors/api/dependencies`` (the JSON) and ``GET /xdep-sensors/dependencies`` (the page);
* side by side, Airflow's own ``GET /api/v2/dags?limit=100`` (one page of the DAG list the UI shows
  first), the API server's everyday cost on the same deployment.

Reported: p50 / p95 / max seconds of each, the page's p50 as a ratio to Airflow's DAG list, and the
upstream requests the timed requests caused (the upstream API server's access log: one read per
connection and 30 s, whatever the number of requests).

    python benchmarks/dependencies_page.py --quick   # 20 requests each; ends with a RESULT line
    python benchmarks/dependencies_page.py           # 50 requests each; writes results/dependencies_page.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools import postgres  # noqa: E402
from devtools.airflow_local import LocalAirflow  # noqa: E402

AIRFLOW = ROOT / ".venv" / "bin" / "airflow"


def timed_get(base: str, path: str, token: str) -> tuple[float, int, int]:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        status = response.status
    return time.perf_counter() - t0, status, len(body)


def upstream_requests(up: LocalAirflow) -> int:
    log = up.log_dir / "api-server.log"
    return sum(
        '"GET /api/v2/' in line or '"POST /api/v2/' in line
        for line in log.read_text(errors="replace").splitlines()
    )


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 requests each, no results file")
    parser.add_argument("--requests", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.requests or (20 if args.quick else 50)
    tmp = Path(tempfile.mkdtemp(prefix="xdep-bench-page-"))
    up = LocalAirflow(
        tmp / "up",
        AIRFLOW,
        major=3,
        dags_folder=ROOT / "tests" / "integration" / "upstream_dags",
        name="bench-page-up",
    )
    down = None
    try:
        up.start(timeout=300)
        up.wait_for_dag("xdep_test_producer", timeout=180)
        for comp in ("scheduler", "dag-processor"):
            up.stop_component(comp)
        remote = json.dumps(
            {"conn_type": "remote_airflow", "host": up.base_url, "login": "viewer", "password": "viewer"}
        )
        down = LocalAirflow(
            tmp / "down",
            AIRFLOW,
            major=3,
            dags_folder=Path(__file__).parent / "page_dags",
            name="bench-page-down",
            components=("api-server", "dag-processor"),
            database_url=postgres.fresh_database("xdep_bench_page"),
            extra_env={"AIRFLOW_CONN_UP": remote, "AIRFLOW_CONN_UP2": remote, "PYTHONPATH": str(ROOT)},
        )
        down.start(timeout=300)
        token = down.token("admin", "admin")
        deadline = time.monotonic() + 600
        while True:  # every DAG serialized
            total = down.api("GET", "/api/v2/dags?limit=1&tags=xdep-bench")["total_entries"]
            if total >= 100:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {total} DAGs serialized")
            time.sleep(5)
        body = down.api("GET", "/xdep-sensors/api/dependencies")  # warm-up: reads the upstream
        count = len(body["dependencies"])
        before = upstream_requests(up)
        results = {}
        for name, path in (
            ("JSON", "/xdep-sensors/api/dependencies"),
            ("page", "/xdep-sensors/dependencies"),
            ("Airflow DAG list (100)", "/api/v2/dags?limit=100"),
        ):
            times = []
            for _ in range(n):
                took, status, size = timed_get(down.base_url, path, token)
                assert status == 200
                times.append(took)
            results[name] = {**stats(times), "bytes": size}
            print(name, json.dumps(results[name]), flush=True)
        caused = upstream_requests(up) - before
    finally:
        if down is not None:
            down.stop()
        up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = results["page"]["p50"] / results["Airflow DAG list (100)"]["p50"]
    lines = [
        "# The Remote dependencies page at 1,000 dependencies (benchmarks/dependencies_page.py)\n",
        f"Airflow 3.3.2 downstream (PostgreSQL), {count} dependencies, upstream cached; {n} requests each.\n",
        "| request | p50 s | p95 s | max s | bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} | {v['max']:.3f} | {v['bytes']} |"
        for k, v in results.items()
    ]
    lines += ["", f"Upstream requests caused by the timed requests: {caused}.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        out = Path(__file__).parent / "results" / "dependencies_page.md"
        out.write_text(text)
        print(f"wrote {out}")
    print(
        f"RESULT dependencies={count} json_p50_s={results['JSON']['p50']:.3f} "
        f"page_p50_s={results['page']['p50']:.3f} page_p95_s={results['page']['p95']:.3f} "
        f"airflow_dag_list_p50_s={results['Airflow DAG list (100)']['p50']:.3f} "
        f"page_to_dag_list_ratio={ratio:.2f} upstream_requests={caused}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
