"""``xdep-sensors doctor``: check a connection end to end, as a sensor would use it."""

from __future__ import annotations

import argparse
import sys

from xdep_sensors.errors import XdepError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xdep-sensors", description="Cross-deployment sensors for Airflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser(
        "doctor",
        help="diagnose a remote_airflow connection (URL, TLS, version, auth, permissions, a DAG or asset)",
    )
    doctor.add_argument(
        "--conn-id", default="remote_airflow_default", help="connection id (type remote_airflow)"
    )
    doctor.add_argument("--dag-id", help="also check this upstream DAG and show its latest run")
    asset = doctor.add_mutually_exclusive_group()
    asset.add_argument("--asset-uri", help="also check this upstream asset and show its latest event")
    asset.add_argument("--asset-name", help="same, by asset name (Airflow 3 upstreams)")
    doctor.add_argument(
        "--partition-key",
        help="with --dag-id or an asset: show the newest run or event of exactly this partition (3.2+)",
    )
    return parser


def doctor(
    conn_id: str,
    *,
    dag_id: str | None = None,
    asset_uri: str | None = None,
    asset_name: str | None = None,
    partition_key: str | None = None,
) -> int:
    """Print the diagnosis; return 0 when every check passed, 1 otherwise."""
    from xdep_sensors.core.doctor import diagnose, render
    from xdep_sensors.hooks import RemoteAirflowHook

    hook = RemoteAirflowHook(conn_id)
    try:
        config = hook.get_config()
    except XdepError as err:
        print(f"[FAIL] connection {conn_id}: {err}")
        return 1
    checks = hook.run(
        lambda c: diagnose(
            c, dag_id=dag_id, asset_uri=asset_uri, asset_name=asset_name, partition_key=partition_key
        ),
        config,
    )
    print(f"xdep-sensors doctor: connection {conn_id}")
    print(render(checks))
    failed = [c for c in checks if not c.ok]
    print("all checks passed" if not failed else f"{len(failed)} problem(s) found")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor(
            args.conn_id,
            dag_id=args.dag_id,
            asset_uri=args.asset_uri,
            asset_name=args.asset_name,
            partition_key=args.partition_key,
        )
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
