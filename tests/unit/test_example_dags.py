"""Every example DAG imports cleanly (what ``astro deploy --pytest`` would catch)."""

from __future__ import annotations

from airflow.dag_processing.dagbag import DagBag

from tests.helpers import ROOT


def test_example_dags_import_without_errors():
    bag = DagBag(str(ROOT / "example_dags"))
    assert bag.import_errors == {}
    assert {
        "bears_producer",
        "bears_report",
        "load_bears",
        "bears_bridge",
        "bears_dashboard",
        "bears_archive",
        "bears_consumer",
        "bears_remediation",
    } <= set(bag.dag_ids)
    sensor = bag.dags["bears_report"].get_task("wait_for_bears")
    assert sensor.deferrable and sensor.remote_conn_id == "upstream_airflow"


def test_provider_info_declares_the_connection_type():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "xdep-sensors" in manager.providers
    hook = manager.hooks.get("remote_airflow")
    assert hook is not None and hook.hook_class_name == "xdep_sensors.hooks.remote_airflow.RemoteAirflowHook"
    behaviour = manager.field_behaviours["remote_airflow"]
    assert behaviour["relabeling"]["host"] == "Deployment URL (MWAA: web server URL, optional)"
    assert "schema" in behaviour["hidden_fields"]
    assert "extra__remote_airflow__api_version" in manager.connection_form_widgets
