"""Seed an upstream's metadata DB with history, fast: run with the *upstream's* Python and env.

    python seed_history.py events <asset uri> <count> <seconds back> [extra json]
    python seed_history.py events_at <asset uri> <ISO timestamp> [<ISO timestamp> ...]
    python seed_history.py runs <dag id> <count> <seconds back> <state> [run id prefix] [logical date]
    python seed_history.py running <dag id> <run id> <task id>
    python seed_history.py partition_runs <dag id> <state>:<partition key> [...]   (Airflow 3.2+)

With a logical date (ISO), one run for it that starts and ends now: a backfill of an old date.
"running" marks that run and task instance running since now, as a worker would: an upstream without a
scheduler (the API-only Airflow 2 upstreams) never starts a task, and the REST API cannot set "running".

The REST API creates one asset event in ~7 ms on SQLite and cannot create finished runs without
running them; the feed tests need thousands of items, so they are written here in one
transaction through Airflow's own models (Airflow 3 and 2). Everything the tests *read* goes
through the real API server.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta


def main(argv: list[str]) -> None:
    from airflow.utils import timezone
    from airflow.utils.session import create_session

    if argv[0] == "running":
        return start_task(*argv[1:4])
    if argv[0] == "partition_runs":
        return partition_runs(argv[1], [spec.split(":", 1) for spec in argv[2:]])
    if argv[0] == "events_at":
        return events_at(argv[1], [timezone.parse(when) for when in argv[2:]])
    kind, name, count, back = argv[0], argv[1], int(argv[2]), float(argv[3])
    now = timezone.utcnow()
    step = timedelta(seconds=back / max(count, 1))
    start = now - timedelta(seconds=back)
    with create_session() as session:
        if kind == "events":
            extra = json.loads(argv[4]) if len(argv) > 4 else {}
            events = [(start + step * i, {**extra, "i": i}) for i in range(count)]
            session.add_all(event_rows(session, name, events))
        elif kind == "runs":
            from airflow.models.dagrun import DagRun
            from airflow.utils.types import DagRunType

            state, prefix = argv[4], argv[5] if len(argv) > 5 else "seeded"
            backfill = timezone.parse(argv[6]) if len(argv) > 6 else None
            for i in range(count):
                end = start + step * i
                logical = end - timedelta(minutes=1) if backfill is None else backfill
                try:
                    run = DagRun(
                        dag_id=name,
                        run_id=f"{prefix}_{i}",
                        run_type=DagRunType.MANUAL,
                        logical_date=logical,
                        run_after=logical,
                        start_date=logical if backfill is None else now,
                        state=state,
                    )
                except TypeError:  # Airflow 2
                    run = DagRun(
                        dag_id=name,
                        run_id=f"{prefix}_{i}",
                        run_type=DagRunType.MANUAL,
                        execution_date=logical,
                        start_date=logical if backfill is None else now,
                        state=state,
                    )
                run.end_date = end
                session.add(run)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    print(f"seeded {count} {kind} for {name}")


def event_rows(session, uri: str, events: list[tuple]) -> list:
    """Unsaved events of the asset ``uri``, one per ``(timestamp, extra)`` (Airflow 3 and 2 models)."""
    try:
        from airflow.models.asset import AssetEvent, AssetModel

        asset = session.query(AssetModel).filter(AssetModel.uri == uri).one()
        return [AssetEvent(asset_id=asset.id, extra=extra, timestamp=when) for when, extra in events]
    except ImportError:  # Airflow 2
        from airflow.models.dataset import DatasetEvent, DatasetModel

        dataset = session.query(DatasetModel).filter(DatasetModel.uri == uri).one()
        return [DatasetEvent(dataset_id=dataset.id, extra=extra, timestamp=when) for when, extra in events]


def events_at(uri: str, stamps: list) -> None:
    """One event of ``uri`` at each timestamp, in one transaction: an event older than ones already
    listed is one whose commit came late. Prints their ids (JSON)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = event_rows(session, uri, [(when, {"at": str(when)}) for when in stamps])
        session.add_all(rows)
        session.flush()
        print(json.dumps([row.id for row in rows]))


def partition_runs(dag_id: str, specs: list[list[str]]) -> None:
    """One finished run per ``(state, partition key)``, in order, one second apart, the last ending now
    (an API-only upstream cannot run them, and 3.2's REST API cannot give a run a key). Prints the ids."""
    from airflow.models.dagrun import DagRun
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    now = timezone.utcnow()
    ids = []
    with create_session() as session:
        for i, (state, key) in enumerate(specs):
            when = now - timedelta(seconds=len(specs) - i)
            run_id = f"partitioned__{when.isoformat()}_{i}"
            session.add(
                DagRun(
                    dag_id=dag_id,
                    run_id=run_id,
                    run_type=DagRunType.MANUAL,
                    logical_date=None,
                    run_after=when,
                    start_date=when,
                    state=state,
                    partition_key=key,
                )
            )
            ids.append(run_id)
    print(json.dumps(ids))


def start_task(dag_id: str, run_id: str, task_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import timezone
    from airflow.utils.session import create_session

    now = timezone.utcnow()
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one()
        ti = (
            session.query(TaskInstance)
            .filter(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
            .one()
        )
        run.state = "running"
        run.start_date = run.start_date or now
        ti.state, ti.start_date = "running", now
    print(f"{dag_id} {run_id} {task_id}: running since {now.isoformat()}")


if __name__ == "__main__":
    main(sys.argv[1:])
