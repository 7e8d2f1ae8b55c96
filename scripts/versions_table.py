"""Render the "Supported versions" table of the docs from what the version matrix proved.

The integration tests record each passing matrix check in .tmp/version-matrix.json
(tests/integration/conftest.py ``matrix_record``). This script turns that file into the table
between the markers in docs/explanation/supported-versions.md:

    python scripts/versions_table.py           # print the table
    python scripts/versions_table.py --write   # replace it in the page
    python scripts/versions_table.py --check   # exit 1 if the page claims something else
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".tmp" / "version-matrix.json"
PAGE = ROOT / "docs" / "explanation" / "supported-versions.md"
START, END = "<!-- versions-table:start -->", "<!-- versions-table:end -->"

UPSTREAM = [  # (check recorded by the tests, what the table says)
    ("dag_run_wait:password:defer", "DAG-run wait, {auth} (deferred)"),
    ("dag_run_wait:token:poke", "DAG-run wait, static token (poke)"),
    ("dag_run_wait:iam:defer", "DAG-run wait, {auth} (deferred)"),
    ("dag_run_wait:iam:poke", "DAG-run wait, {auth} (poke)"),
    ("dag_run_wait:google:defer", "DAG-run wait, {auth} (deferred)"),
    ("dag_run_wait:google:poke", "DAG-run wait, {auth} (poke)"),
    ("asset_wait:password:defer", "asset wait (deferred)"),
    ("asset_wait:google:defer", "asset wait (deferred)"),
    ("asset_wait:iam:defer", "asset wait (deferred)"),
    ("asset_wait:iam:poke", "asset wait (poke)"),
    ("task_group_filter", "task-group filter"),
    ("partition_wait:runs", "partition wait: newest run of exactly a key"),
    ("partition_wait:events", "partition wait: events of exactly a key"),
    ("partition_wait:refused", "partition wait refused at the first look, naming the version"),
    ("task_failure_alert", "task-failure alert"),
    ("task_duration_alert", "task-duration alert"),
]
DOWNSTREAM = [
    ("dag_run_sensor:defer", "DAG-run sensor deferred (triggerer)"),
    ("dag_run_sensor:poke", "DAG-run sensor poke"),
    ("asset_sensor:defer", "asset sensor deferred (triggerer)"),
    ("asset_sensor:poke", "asset sensor poke"),
    ("task_group_sensor:defer", "task-group wait"),
    ("watcher:asset_event", "watcher (triggerer)"),
    ("durable_state:variable", "durable trigger state: Variable"),
    ("durable_state:asset_state_store", "durable trigger state: asset state store"),
    ("triggerer_failover", "a killed triggerer's waits complete on the other (2 triggerers)"),
    ("triggerer_stall", "a stalled triggerer resumes: its watcher fires nothing again (2 triggerers)"),
    # several checks: the row needs all of them
    (
        (
            "worker_free:dag_run:success:0",
            "worker_free:dag_run:failed:0",
            "worker_free:dag_run:skipped:0",
            "worker_free:dag_run:auth_failed:0",
            "worker_free:asset:0",
        ),
        "worker-free sensors (success, failure, skip, wrong password): 0 worker runs",
    ),
    (
        (
            "worker_free:dag_run:success:1",
            "worker_free:dag_run:failed:1",
            "worker_free:dag_run:skipped:1",
            "worker_free:dag_run:auth_failed:1",
            "worker_free:asset:1",
        ),
        "end_from_trigger (success, failure, skip, wrong password): 1 worker run, the start",
    ),
    ("remote_dependencies:json", "Remote dependencies JSON route"),
    ("remote_dependencies:nav", "Remote dependencies page in the UI's navigation"),
    ("remote_dependencies:browser", "the page tested in a real browser"),
    ("no_credential_leak:postgres", "no credential in its PostgreSQL DB (trigger kwargs decrypted) or logs"),
]


def _proved(check: str | tuple[str, ...], checks: list[str]) -> bool:
    return all(c in checks for c in ((check,) if isinstance(check, str) else check))


MWAA = " via MWAA"  # a row whose upstream is reached as an Amazon MWAA environment (the AWS double)
COMPOSER = " via Composer"  # ... as a Cloud Composer environment (the Google doubles)


def _key(version: str) -> tuple[tuple[int, ...], str]:
    """A version's rows: the release, then the ones behind a cloud (by name) after the direct one."""
    release, _, via = version.partition(" ")
    return tuple(int(p) for p in release.split(".")), via


def _auth(version: str) -> str:
    if version.endswith(MWAA):
        return "AWS IAM identity (SigV4)"
    if version.endswith(COMPOSER):
        return "Google identity (OAuth 2 token)"
    return "basic auth" if version.startswith("2.") else "JWT from username/password"


def render(proved: dict[str, dict[str, list[str]]]) -> str:
    lines = ["| Airflow | API | proven as upstream | proven as downstream |", "|---|---|---|---|"]
    for version in sorted(proved, key=_key):
        roles = proved[version]
        auth = _auth(version)
        up = [text.format(auth=auth) for check, text in UPSTREAM if _proved(check, roles.get("upstream", []))]
        down = [text for check, text in DOWNSTREAM if _proved(check, roles.get("downstream", []))]
        api = "v1" if version.startswith("2.") else "v2"
        lines.append(f"| {version} | {api} | {'; '.join(up) or '—'} | {'; '.join(down) or '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--run", help="refuse results recorded by another test run (XDEP_TEST_RUN of `make test`)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the table in the page")
    mode.add_argument("--check", action="store_true", help="fail if the page differs from the results")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"no matrix results at {args.results}: run the integration tests first", file=sys.stderr)
        return 1
    results = json.loads(args.results.read_text())
    if args.run is not None and results.get("run") != args.run:
        print(
            f"{args.results} was recorded by test run {results.get('run')!r}, "
            f"not by this one ({args.run!r}): the matrix did not run (deselected, or stopped before its end)",
            file=sys.stderr,
        )
        return 1
    if "proved" not in results:
        print(f"{args.results} is not a results file of this test suite (no 'proved')", file=sys.stderr)
        return 1
    table = render(results["proved"])
    if not (args.write or args.check):
        print(table)
        return 0
    text = PAGE.read_text()
    head, sep, rest = text.partition(START)
    current, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        print(f"{PAGE.relative_to(ROOT)} lacks the markers {START} ... {END}", file=sys.stderr)
        return 1
    if args.check:
        if current.strip() != table.strip():
            print(
                "The 'Supported versions' table of the docs differs from what the matrix proved; run "
                "`python scripts/versions_table.py --write`:\n" + table,
                file=sys.stderr,
            )
            return 1
        print("The 'Supported versions' table of the docs matches the matrix results")
        return 0
    PAGE.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
