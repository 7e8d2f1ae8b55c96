"""Downstream DAGs of the FAB deployment (tests/integration/test_permissions_live.py), which is its own
upstream: each connection's user has a per-DAG role there.

- ``xdep_perm_wait_a`` / ``xdep_perm_wait_b``: deferred waits through connections ``perm_a`` and
  ``perm_b`` (another host name for the same server), for the page's per-viewer filtering;
- ``xdep_perm_hidden``: a deferred wait through ``perm_blind``, whose user may read other DAGs but not
  ``xdep_test_producer``: it fails in the triggerer, saying so, and ends the task there
  (``end_from_trigger``: no resumed attempt, so no Airflow defer-exit race, apache/airflow#72716).
"""

from __future__ import annotations

from airflow.sdk import dag

from xdep_sensors import RemoteDagRunSensor


def _wait(dag_id: str, conn: str, **more):
    @dag(dag_id=dag_id, schedule=None, catchup=False, tags=["xdep-perm"])
    def waits():
        RemoteDagRunSensor(
            task_id="wait",
            remote_conn_id=conn,
            external_dag_id="xdep_test_producer",
            run_id="{{ dag_run.conf['run_id'] }}",
            deferrable=True,
            poke_interval=2,
            timeout=600,
            **more,
        )

    return waits()


_wait("xdep_perm_wait_a", "perm_a")
_wait("xdep_perm_wait_b", "perm_b")
_wait("xdep_perm_hidden", "perm_blind", end_from_trigger=True)
