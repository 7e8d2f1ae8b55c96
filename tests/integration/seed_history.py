"""Seed an upstream's metadata DB with history, fast: run with the *upstream's* Python and env.

    python seed_history.py events <asset uri> <count> <seconds back> [extra json]
    python seed_history.py runs <dag id> <count> <seconds back> <state> [run id prefix] [logical date]

With a logical date (ISO), one run for it that starts and ends now: a backfill of an old date.

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

    kind, name, count, back = argv[0], argv[1], int(argv[2]), float(argv[3])
    now = timezone.utcnow()
    step = timedelta(seconds=back / max(count, 1))
    start = now - timedelta(seconds=back)
    with create_session() as session:
        if kind == "events":
            extra = json.loads(argv[4]) if len(argv) > 4 else {}
            try:
                from airflow.models.asset import AssetEvent, AssetModel

                asset = session.query(AssetModel).filter(AssetModel.uri == name).one()
                rows = [AssetEvent(asset_id=asset.id, extra={**extra, "i": i}, timestamp=start + step * i)
                        for i in range(count)]
            except ImportError:  # Airflow 2
                from airflow.models.dataset import DatasetEvent, DatasetModel

                dataset = session.query(DatasetModel).filter(DatasetModel.uri == name).one()
                rows = [DatasetEvent(dataset_id=dataset.id, extra={**extra, "i": i}, timestamp=start + step * i)
                        for i in range(count)]
            session.add_all(rows)
        elif kind == "runs":
            from airflow.models.dagrun import DagRun
            from airflow.utils.types import DagRunType

            state, prefix = argv[4], argv[5] if len(argv) > 5 else "seeded"
            backfill = timezone.parse(argv[6]) if len(argv) > 6 else None
            for i in range(count):
                end = start + step * i
                logical = end - timedelta(minutes=1) if backfill is None else backfill
                try:
                    run = DagRun(dag_id=name, run_id=f"{prefix}_{i}", run_type=DagRunType.MANUAL,
                                 logical_date=logical, run_after=logical,
                                 start_date=logical if backfill is None else now, state=state)
                except TypeError:  # Airflow 2
                    run = DagRun(dag_id=name, run_id=f"{prefix}_{i}", run_type=DagRunType.MANUAL,
                                 execution_date=logical, start_date=logical if backfill is None else now,
                                 state=state)
                run.end_date = end
                session.add(run)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    print(f"seeded {count} {kind} for {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
