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
    doctor.add_argument(
        "--sensor",
        metavar="DAG_ID.TASK_ID",
        help="with --partition-key: a RemoteAssetSensor of this deployment's DAGs whose roll-up mapper "
        "says which upstream keys of that partition have arrived and which are missing",
    )
    return parser


def sensor_mappers(sensor: str) -> dict[str, str]:
    """The encoded partition mappers of a sensor task in this deployment's DAG files (asset -> mapper)."""
    from airflow.configuration import conf

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dag_id, _, task_id = sensor.rpartition(".")
    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    dag = bag.dags.get(dag_id) if dag_id else None  # as parsed from the files: no metadata DB
    task = dag.task_dict.get(task_id) if dag is not None else None
    mappers = getattr(task, "partition_mappers", None)
    if not mappers:
        what = "no such DAG" if dag is None else "no such task" if task is None else "no partition mapper"
        raise XdepError(f"--sensor {sensor}: {what}", hint="name a RemoteAssetSensor with partition_mapper")
    return dict(mappers)


def doctor(
    conn_id: str,
    *,
    dag_id: str | None = None,
    asset_uri: str | None = None,
    asset_name: str | None = None,
    partition_key: str | None = None,
    sensor: str | None = None,
) -> int:
    """Print the diagnosis; return 0 when every check passed, 1 otherwise."""
    from xdep_sensors.core.doctor import Check, diagnose, render
    from xdep_sensors.hooks import RemoteAirflowHook
    from xdep_sensors.triggers.partitions import rollup_line, rollup_progress

    hook = RemoteAirflowHook(conn_id)
    try:
        config = hook.get_config()
        if sensor and not partition_key:
            raise XdepError("--sensor needs --partition-key (the partition of the run to diagnose)")
        mappers = sensor_mappers(sensor) if sensor else {}
    except XdepError as err:
        print(f"[FAIL] connection {conn_id}: {err}")
        return 1

    async def checks_of(client):
        checks = await diagnose(
            client, dag_id=dag_id, asset_uri=asset_uri, asset_name=asset_name, partition_key=partition_key
        )
        for label, encoded in mappers.items() if all(c.ok for c in checks) else ():
            try:
                progress = await rollup_progress(client, label, str(partition_key), encoded)
            except (XdepError, ValueError) as err:
                checks.append(Check(f"roll-up {label}", False, str(err)))
                continue
            if progress is not None:
                checks.append(Check(f"roll-up {label}", True, rollup_line(progress)))
        return checks

    checks = hook.run(checks_of, config)
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
            sensor=args.sensor,
        )
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
