"""What a deployment holds from release 0.1.0 keeps loading: trigger rows, serialized DAGs, entry points.

``stored_forms/release_0_1_0.json`` was written by release 0.1.0 itself (its triggers' ``serialize()``
and Airflow's ``DagSerialization.to_dict`` of a DAG with both sensors, started in the triggerer, and a
watched asset; the durable state key each watcher and alert had); nothing in it is hand-written.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
from airflow._shared.module_loading import import_string  # what the triggerer loads a stored classpath with
from airflow.serialization.serialized_objects import DagSerialization

import xdep_sensors.triggers
from xdep_sensors.plugins.dependencies import sensor_dependencies

STORED = json.loads((Path(__file__).parent / "stored_forms" / "release_0_1_0.json").read_text())


def _classpaths(obj: Any) -> list[str]:
    """Every trigger classpath a serialized DAG names (``trigger_cls``, watchers' ``classpath``)."""
    if isinstance(obj, dict):
        found = [v for k, v in obj.items() if k in ("trigger_cls", "classpath") and isinstance(v, str)]
        return found + [c for v in obj.values() for c in _classpaths(v)]
    if isinstance(obj, list):
        return [c for v in obj for c in _classpaths(v)]
    return []


class TestTriggerRows:
    @pytest.mark.parametrize(
        ("classpath", "kwargs"), STORED["triggers"], ids=[r[0] for r in STORED["triggers"]]
    )
    def test_a_stored_trigger_loads_and_serializes_under_its_public_classpath(self, classpath, kwargs):
        trigger = import_string(classpath)(
            **kwargs
        )  # what the triggerer does with a row of the trigger table
        new_classpath, new_kwargs = trigger.serialize()
        assert new_classpath == f"xdep_sensors.triggers.{classpath.rsplit('.', 1)[1]}"
        assert new_kwargs == kwargs
        assert import_string(new_classpath) is type(trigger)

    @pytest.mark.parametrize(("classpath", "key"), sorted(STORED["state_keys"].items()))
    def test_a_stored_trigger_keeps_its_durable_state_key(self, classpath, key):
        """The key 0.1.0 kept a watcher's or alert's cursor under: a re-registered trigger resumes there."""
        kwargs = dict(STORED["triggers"])[classpath]
        assert import_string(classpath)(**kwargs)._state_key == key

    def test_every_public_trigger_serializes_under_xdep_sensors_triggers(self):
        rows = {row[0].rsplit(".", 1)[1] for row in STORED["triggers"]}
        public = {name for name in xdep_sensors.triggers.__all__ if name.startswith("Remote")}
        assert rows == public  # the stored sample covers every trigger
        for name in public:
            cls = getattr(xdep_sensors.triggers, name)
            from xdep_sensors.triggers.classpath import classpath

            assert classpath(cls) == f"xdep_sensors.triggers.{name}"


class TestSerializedDags:
    def test_every_classpath_a_stored_dag_names_imports(self):
        paths = sorted({c for dag in STORED["serialized_dags"] for c in _classpaths(dag)})
        assert paths == [
            "xdep_sensors.triggers.RemoteAssetTrigger",
            "xdep_sensors.triggers.RemoteDagRunTrigger",
            "xdep_sensors.watchers.RemoteAssetEventTrigger",
        ]
        for path in paths:
            assert import_string(path).__name__ == path.rsplit(".", 1)[1]

    def test_the_stored_dags_deserialize(self):
        dags = [DagSerialization.from_dict(data) for data in STORED["serialized_dags"]]
        tasks = {t.task_id: t for t in dags[0].tasks}
        assert tasks["wait_run"].start_trigger_args.trigger_cls == "xdep_sensors.triggers.RemoteDagRunTrigger"
        assert {t.task_type for t in tasks.values()} == {"RemoteDagRunSensor", "RemoteAssetSensor"}

    def test_the_page_reads_the_stored_sensors(self):
        data = STORED["serialized_dags"][0]
        found = sensor_dependencies([(data["dag"]["dag_id"], data)])
        assert sorted((d["task_id"], d["kind"]) for d in found) == [
            ("wait_asset", "asset_sensor"),
            ("wait_run", "dag_run_sensor"),
        ]

    def test_the_page_reads_the_old_task_module_without_the_new_field(self):
        """Serialized before ``xdep_dependency`` existed: the page matches ``_task_module`` (old or new)."""
        data = json.loads(json.dumps(STORED["serialized_dags"][0]))
        for task in data["dag"]["tasks"]:
            task["__var"].pop("xdep_dependency", None)
        for module in ("xdep_sensors.sensors", "xdep_sensors.sensors.dag_run"):
            for task in data["dag"]["tasks"]:
                task["__var"]["_task_module"] = module
            assert len(sensor_dependencies([("consumer", data)])) == 2


class TestOldModulePaths:
    @pytest.mark.parametrize(
        ("module", "names"),
        [
            ("xdep_sensors.hook", ["RemoteAirflowHook"]),
            ("xdep_sensors.sensors", ["RemoteDagRunSensor", "RemoteAssetSensor"]),
            (
                "xdep_sensors.triggers",
                [
                    "RemoteDagRunTrigger",
                    "RemoteAssetTrigger",
                    "RemoteAssetEventTrigger",
                    "RemoteDagRunEventTrigger",
                    "RemoteTaskInstanceEventTrigger",
                    "RemoteDagRunDurationTrigger",
                    "RemoteDagRunDeadlineTrigger",
                ],
            ),
            ("xdep_sensors.watchers", ["RemoteAssetEventTrigger", "RemoteDagRunEventTrigger"]),
            (
                "xdep_sensors.alerts",
                [
                    "RemoteTaskInstanceEventTrigger",
                    "RemoteDagRunDurationTrigger",
                    "RemoteDagRunDeadlineTrigger",
                ],
            ),
            ("xdep_sensors.durable", ["TriggerState", "CursorStore", "Cursor"]),
            ("xdep_sensors.links", ["UpstreamRunLink", "UpstreamAssetLink"]),
            ("xdep_sensors.plugin", ["XdepSensorsPlugin"]),
            ("xdep_sensors", ["RemoteAirflowHook", "RemoteDagRunSensor", "RemoteAssetSensor", "__version__"]),
        ],
    )
    def test_names_keep_importing(self, module, names):
        loaded = importlib.import_module(module)
        for name in names:
            assert getattr(loaded, name) is not None


class TestEntryPoints:
    def _entry_point(self, group: str, name: str) -> importlib.metadata.EntryPoint:
        (found,) = [
            ep
            for ep in importlib.metadata.entry_points(group=group)
            if ep.name == name and ep.value.startswith("xdep_sensors")
        ]
        return found

    def test_provider_info_names_importable_modules_and_classes(self):
        info = self._entry_point("apache_airflow_provider", "provider_info").load()()
        modules = [
            m
            for key in ("hooks", "sensors", "triggers")
            for group in info[key]
            for m in group["python-modules"]
        ]
        for module in modules:
            importlib.import_module(module)
        classes = info["extra-links"] + [c["hook-class-name"] for c in info["connection-types"]]
        for path in classes:
            import_string(path)
        assert [c["connection-type"] for c in info["connection-types"]] == ["remote_airflow"]

    def test_the_plugin_and_the_script_load(self):
        plugin = self._entry_point("airflow.plugins", "xdep_sensors").load()
        assert plugin.name == "xdep_sensors"
        main = self._entry_point("console_scripts", "xdep-sensors").load()
        assert callable(main) and main.__module__ == "xdep_sensors.cli.main"
