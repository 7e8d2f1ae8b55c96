"""RemoteAssetSensor, RemoteAssetTrigger, AssetProbe and the cursor store (no network)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, TaskDeferred
from airflow.sdk import Asset

from tests.helpers import mocked_client, upstream_mock, url
from xdep_sensors import RemoteAssetSensor
from xdep_sensors.core.probes import AssetProbe, AssetWait
from xdep_sensors.triggers import RemoteAssetTrigger
from xdep_sensors.triggers.state import CursorStore

BASE = "http://up.test:8080"
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def v2_event(i, asset_id, ts, **extra):
    return {
        "id": i,
        "asset_id": asset_id,
        "uri": f"file://a{asset_id}",
        "name": f"a{asset_id}",
        "timestamp": ts.isoformat(),
        "extra": extra,
        "source_dag_id": "p",
        "source_task_id": "t",
        "source_run_id": "r",
    }


ASSETS = {
    "assets": [
        {"id": 1, "uri": "file://a1", "name": "a1"},
        {"id": 2, "uri": "file://a2", "name": "a2"},
        {"id": 3, "uri": "file://a10", "name": "a10"},
    ],
    "total_entries": 3,
}


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({}, "exactly one of asset_uri, asset_name, assets; got none"),
            ({"asset_uri": "a", "asset_name": "b"}, "got asset_uri, asset_name"),
            ({"assets": []}, "assets must be a non-empty list"),
            ({"assets": "file://a"}, "assets must be a non-empty list"),
            ({"assets": [42]}, "neither a URI nor an Asset"),
            ({"asset_uri": ""}, "asset_uri must be a non-empty string"),
            ({"asset_uri": "a", "require": "most"}, "require must be 'all' or 'any'"),
        ],
    )
    def test_rejected_at_parse_time(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            RemoteAssetSensor(task_id="w", **kwargs)

    def test_assets_accepts_sdk_assets_and_strings(self):
        s = RemoteAssetSensor(task_id="w", assets=[Asset("file://a1"), "file://a2"], require="any")
        assert [r["uri"] for r in s.asset_refs] == [Asset("file://a1").uri, "file://a2"]


class TestProbe:
    async def test_exact_match_despite_substring_api(self):
        c = mocked_client()
        watch = AssetWait(
            assets=[{"uri": "file://a1", "name": None}], cursors={"file://a1": {"timestamp": T0.isoformat()}}
        )
        with upstream_mock() as m:
            m.get(url("/api/v2/assets"), payload=ASSETS)  # uri_pattern=file://a1 also matches file://a10
            m.get(
                url("/api/v2/assets/events"),
                payload={
                    "asset_events": [
                        v2_event(7, 3, T0 + timedelta(1)),
                        v2_event(8, 1, T0 + timedelta(2), path="/x"),
                    ],
                    "total_entries": 2,
                },
            )
            decision = await AssetProbe(watch)(c)
        assert decision.status == "success" and [e["id"] for e in decision.result["events"]] == [8]
        assert decision.result["events"][0]["extra"] == {"path": "/x"}
        assert decision.result["cursors"]["file://a1"]["seen_ids"] == [8]
        await c.close()

    async def test_all_waits_for_every_asset_and_ids_are_cached(self):
        c = mocked_client()
        cursors = {f"file://a{i}": {"timestamp": T0.isoformat()} for i in (1, 2)}
        watch = AssetWait(
            assets=[{"uri": "file://a1", "name": None}, {"uri": "file://a2", "name": None}], cursors=cursors
        )
        probe = AssetProbe(watch)
        with upstream_mock() as m:
            m.get(url("/api/v2/assets"), payload=ASSETS, repeat=True)
            # each asset is read as its own feed: first look a1 then a2, second look the same
            m.get(
                url("/api/v2/assets/events"),
                payload={"asset_events": [v2_event(1, 1, T0)], "total_entries": 1},
            )
            m.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0})
            m.get(
                url("/api/v2/assets/events"),
                payload={"asset_events": [v2_event(1, 1, T0)], "total_entries": 1},
            )
            m.get(
                url("/api/v2/assets/events"),
                payload={"asset_events": [v2_event(2, 2, T0)], "total_entries": 1},
            )
            first = await probe(c)
            second = await probe(c)
            asset_lookups = [
                dict(call.kwargs["params"])
                for k, v in m.requests.items()
                if str(k[1]).split("?")[0].endswith("/assets")
                for call in v
            ]
            event_params = [
                dict(call.kwargs["params"])
                for k, v in m.requests.items()
                if str(k[1]).split("?")[0].endswith("/assets/events")
                for call in v
            ]
        assert first.status == "waiting" and first.message.startswith("1 of 2 assets have new events")
        assert second.status == "success"
        # one listing finds both (3.2+: URI prefixes as alternatives), then the ids are cached
        assert [p.get("uri_prefix_pattern") for p in asset_lookups] == ["file://a1|file://a2"]
        assert [e["id"] for e in second.result["events"]] == [1, 2]
        assert sorted(p["asset_id"] for p in event_params) == [
            "1",
            "1",
            "2",
            "2",
        ]  # filtered upstream, per asset
        assert all("timestamp_gte" in p for p in event_params)
        await c.close()

    async def test_cursor_excludes_already_consumed_tie(self):
        c = mocked_client()
        watch = AssetWait(
            assets=[{"uri": "file://a1", "name": None}],
            cursors={"file://a1": {"timestamp": T0.isoformat(), "seen_ids": [5]}},
        )
        with upstream_mock() as m:
            m.get(url("/api/v2/assets"), payload=ASSETS)
            m.get(
                url("/api/v2/assets/events"),
                payload={"asset_events": [v2_event(5, 1, T0), v2_event(6, 1, T0)], "total_entries": 2},
            )
            decision = await AssetProbe(watch)(c)
        assert [e["id"] for e in decision.result["events"]] == [6]
        await c.close()

    async def test_missing_asset_lists_close_matches(self):
        c = mocked_client()
        watch = AssetWait(assets=[{"uri": "file://a3", "name": None}], cursors={"file://a3": {}})
        with upstream_mock() as m:
            m.get(url("/api/v2/assets"), payload={"assets": [], "total_entries": 0})
            m.get(url("/api/v2/assets"), payload=ASSETS)
            with pytest.raises(Exception, match=r"do not exist upstream.*close matches: .*file://a1"):
                await AssetProbe(watch)(c)
        await c.close()

    async def test_missing_asset_waits_without_check_existence(self):
        c = mocked_client()
        watch = AssetWait(assets=[{"uri": "file://a3", "name": None}], cursors={}, check_existence=False)
        with upstream_mock() as m:
            m.get(url("/api/v2/assets"), payload={"assets": [], "total_entries": 0})
            decision = await AssetProbe(watch)(c)
        assert decision.status == "waiting" and "not upstream yet: file://a3" in decision.message
        await c.close()


class TestCursorStore:
    def test_first_run_rerun_and_no_backwards_move(self):
        box: dict = {}
        store = CursorStore("d", "w", get=box.get, set_=box.__setitem__)
        assert store.start("run1") == {}
        store.commit("run1", {}, {"a": {"timestamp": "2026-11-20T00:00:01+00:00", "seen_ids": [1]}})
        assert store.start("run2")["a"]["seen_ids"] == [1]
        store.commit(
            "run2", store.start("run2"), {"a": {"timestamp": "2026-11-20T00:00:02+00:00", "seen_ids": [2]}}
        )
        # a cleared run1 re-runs from where run1 started, not from the newest cursor
        assert store.start("run1") == {}
        store.commit("run1", {}, {"a": {"timestamp": "2026-11-20T00:00:01+00:00", "seen_ids": [1]}})
        assert store.start("run3")["a"]["seen_ids"] == [2]  # the cursor never moved back
        assert box["xdep_sensors.state.cursor:d.w"]["runs"].keys() == {"run1", "run2"}

    def test_a_cursor_stored_by_an_earlier_version_is_read_then_written_anew(self):
        old = {"cursors": {"a": {"timestamp": "2026-11-20T00:00:01+00:00", "seen_ids": [1]}}, "runs": {}}
        box: dict = {"xdep_sensors.cursor.d.w": json.dumps(old)}
        store = CursorStore("d", "w", get=box.get, set_=box.__setitem__)
        assert store.start("run9")["a"]["seen_ids"] == [1]
        store.commit(
            "run9", store.start("run9"), {"a": {"timestamp": "2026-11-20T00:00:02+00:00", "seen_ids": [2]}}
        )
        assert box["xdep_sensors.state.cursor:d.w"]["cursors"]["a"]["seen_ids"] == [2]
        assert store.start("run10")["a"]["seen_ids"] == [2]  # the new key wins from now on


class TestSensor:
    def ctx(self, **extra):
        ti = mock.MagicMock(dag_id="d")
        return {
            "ti": ti,
            "run_id": "r1",
            "logical_date": T0,
            "data_interval_start": T0 - timedelta(hours=1),
            "dag_run": SimpleNamespace(run_after=T0),
            **extra,
        }

    def test_first_run_starts_at_data_interval_start_and_defers(self):
        s = RemoteAssetSensor(task_id="w", asset_uri="file://a1", remote_conn_id="up")
        with mock.patch.object(CursorStore, "start", return_value={}), pytest.raises(TaskDeferred) as info:
            s.execute(self.ctx())
        classpath, kwargs = info.value.trigger.serialize()
        assert classpath == "xdep_sensors.triggers.RemoteAssetTrigger"
        assert kwargs["cursors"] == {"file://a1": {"timestamp": (T0 - timedelta(hours=1)).isoformat()}}
        assert RemoteAssetTrigger(**kwargs).serialize() == (classpath, kwargs)

    def test_since_overrides_cursor(self):
        s = RemoteAssetSensor(task_id="w", asset_name="a1", since="2026-11-01T00:00:00Z")
        with pytest.raises(TaskDeferred) as info:
            s.execute(self.ctx())
        watch = info.value.trigger.watch
        assert watch.since == "2026-11-01T00:00:00+00:00" and watch.cursors == {}
        assert watch.assets == [{"uri": None, "name": "a1"}]

    def test_success_commits_cursor_and_returns_events(self):
        s = RemoteAssetSensor(task_id="w", asset_uri="file://a1")
        result = {
            "events": [{"id": 1}],
            "cursors": {"file://a1": {"timestamp": "t", "seen_ids": [1]}},
            "started_from": {},
            "url": "http://up/assets/1",
            "upstream": "http://up",
        }
        with mock.patch.object(CursorStore, "commit") as commit:
            out = s.execute_complete(self.ctx(), {"status": "success", "message": "m", "result": result})
        assert out == [{"id": 1}]
        commit.assert_called_once_with("r1", {}, result["cursors"])

    def test_failed_try_does_not_commit(self):
        s = RemoteAssetSensor(task_id="w", asset_uri="file://a1")
        with (
            mock.patch.object(CursorStore, "commit") as commit,
            pytest.raises(AirflowSensorTimeout, match="late"),
        ):
            s.execute_complete(self.ctx(), {"status": "timeout", "message": "late"})
        commit.assert_not_called()
