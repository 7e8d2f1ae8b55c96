"""Partitioned waits (Airflow 3.2+ upstreams): a run by partition key, matched exactly, newest first."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred
from airflow.sdk import (
    Asset,
    DayWindow,
    FanOutMapper,
    FixedKeyMapper,
    IdentityMapper,
    MinimumCount,
    RollupMapper,
    StartOfDayMapper,
    StartOfWeekMapper,
    WeekWindow,
)

from tests.helpers import mocked_client, upstream_mock, url
from xdep_sensors import RemoteAssetSensor, RemoteDagRunSensor
from xdep_sensors.client.dialects import V1, V2
from xdep_sensors.core.probes import AssetProbe, AssetWait, DagRunProbe, DagRunWait, cursor_key
from xdep_sensors.errors import ConfigurationError, XdepError
from xdep_sensors.triggers import RemoteAssetTrigger
from xdep_sensors.triggers.partitions import (
    asset_probe,
    encode_mapper,
    partition_rules,
    rollup_line,
    rollup_progress,
)
from xdep_sensors.triggers.state import KEEP_PARTITIONS, CursorStore
from xdep_sensors.triggers.task_args import partition_key

T0 = datetime(2026, 12, 6, tzinfo=timezone.utc)
DAG = "hourly"


def run(run_id: str, key: str | None, state: str = "success", hours: int = 0) -> dict:
    when = (T0 + timedelta(hours=hours)).isoformat()
    return {
        "dag_run_id": run_id,
        "dag_id": DAG,
        "state": state,
        "logical_date": None,
        "run_after": when,
        "partition_key": key,
        "conf": {},
    }


def page(*runs: dict) -> dict:
    return {"dag_runs": list(runs), "total_entries": len(runs)}


def sensor(**kwargs):
    return RemoteDagRunSensor(task_id="wait", external_dag_id=DAG, remote_conn_id="upstream", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"partition_key": "eu", "run_id": "r"}, "run_id and partition_key"),
        ({"partition_key": "eu", "latest_after": "2026-01-01"}, "latest_after and partition_key"),
        ({"partition_key": "eu", "logical_date": "2026-01-01"}, "logical_date and partition_key"),
        ({"partition_key": "eu", "execution_delta": timedelta(1)}, "execution_delta and partition_key"),
        ({"partition_key": ""}, "partition_key must be a non-empty string"),
        ({"partition_key": 7}, "partition_key must be a non-empty string"),
    ],
)
def test_rejected_at_parse_time_naming_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sensor(**kwargs)


@pytest.mark.usefixtures("remote_conn")
class TestRendered:
    def watch(self, key):
        s = sensor(partition_key=key)
        ctx = {"logical_date": None, "dag_run": SimpleNamespace(run_after=T0), "ti": mock.MagicMock()}
        with pytest.raises(TaskDeferred) as info:
            s.execute(ctx)
        return info.value.trigger.watch

    def test_the_key_travels_and_nothing_else_selects(self):
        w = self.watch("2026-12-06T05:00:00")
        assert (w.partition_key, w.run_id, w.logical_date, w.latest_after) == (
            "2026-12-06T05:00:00",
            None,
            None,
            None,
        )
        assert w.selector == "partition 2026-12-06T05:00:00"

    def test_a_run_without_a_partition_is_a_clear_error(self):
        # "{{ dag_run.partition_key }}" of a run without one renders "None" (or nothing, with `or ''`)
        with pytest.raises(AirflowException, match="partition_key rendered to 'None': this run has no"):
            self.watch("None")
        with pytest.raises(AirflowException, match="partition_key rendered to ''"):
            partition_key("")


def test_request_is_a_prefix_listing_newest_first():
    request = V2().partition_runs(DAG, "eu|us_1%")
    assert request.path == "/api/v2/dags/hourly/dagRuns"
    assert dict(request.params) == {
        "partition_key_prefix_pattern": "eu|us_1%",
        "order_by": "-run_after",
        "limit": "100",
        "offset": "0",
    }


async def test_only_the_exact_key_counts_newest_first():
    # the server's prefix answers "eu-west" and "EU" runs too; the newest "eu" run is not the first listed
    with upstream_mock() as mocked:
        mocked.get(
            url(f"/api/v2/dags/{DAG}/dagRuns"),
            payload=page(run("c", "eu-west", hours=3), run("b", "eu", "running", hours=2), run("a", "eu")),
        )
        async with mocked_client() as client:
            got = await client.newest_partition_run(DAG, "eu")
    assert (got.run_id, got.partition_key, got.state) == ("b", "eu", "running")


async def test_pages_on_until_the_key_or_the_end():
    with upstream_mock() as mocked:
        listing = url(f"/api/v2/dags/{DAG}/dagRuns")
        first = [run(f"w{i}", "eu-west", hours=200 - i) for i in range(100)]
        mocked.get(listing, payload={"dag_runs": first, "total_entries": 101})
        mocked.get(listing, payload={"dag_runs": [run("a", "eu")], "total_entries": 101})
        async with mocked_client() as client:
            assert (await client.newest_partition_run(DAG, "eu")).run_id == "a"
        mocked.get(listing, payload=page(run("x", "eu-west")))
        async with mocked_client() as client:
            assert await client.newest_partition_run(DAG, "eu") is None


def test_pick_and_find():
    w = DagRunWait(DAG, partition_key="eu")
    client = V2()
    runs = [
        client.parse_dag_run(r) for r in (run("c", "EU", hours=3), run("b", "eu", hours=2), run("a", "eu"))
    ]
    assert w.pick(runs).run_id == "b"
    assert w.find(runs, covered_above=None, complete=False) == (runs[1], True)
    assert w.find(runs[:1], covered_above=None, complete=False) == (None, False)
    assert w.find(runs[:1], covered_above=None, complete=True) == (None, True)


async def test_an_older_failed_run_of_the_key_does_not_decide():
    probe = DagRunProbe(DagRunWait(DAG, partition_key="eu"))
    with upstream_mock() as mocked:
        mocked.get(url(f"/api/v2/dags/{DAG}"), payload={"dag_id": DAG, "is_paused": False}, repeat=True)
        mocked.get(
            url(f"/api/v2/dags/{DAG}/dagRuns"),
            payload=page(run("retry", "eu", "running", hours=5), run("first", "eu", "failed")),
        )
        mocked.get(
            url(f"/api/v2/dags/{DAG}/dagRuns"),
            payload=page(run("retry", "eu", "success", hours=5), run("first", "eu", "failed")),
        )
        async with mocked_client() as client:
            first = await probe(client)
            second = await probe(client)
    assert first.status == "waiting" and "run retry: running" in first.message
    assert second.status == "success"
    assert (second.result["run_id"], second.result["partition_key"]) == ("retry", "eu")


@pytest.mark.parametrize("version", ["3.1.8", "3.0.6"])
async def test_an_upstream_without_partitions_fails_at_the_first_look(version):
    probe = DagRunProbe(DagRunWait(DAG, partition_key="eu"))
    with upstream_mock(version=version):
        async with mocked_client() as client:
            with pytest.raises(ConfigurationError, match=f"runs Airflow {version}, which has no partitioned"):
                await probe(client)


async def test_an_airflow_2_upstream_fails_at_the_first_look():
    probe = DagRunProbe(DagRunWait(DAG, partition_key="eu"))
    with upstream_mock() as mocked:
        async with mocked_client("v1") as client:
            with pytest.raises(
                ConfigurationError, match="runs Airflow 2.11.2, which has no partitioned"
            ) as info:
                await probe(client)
    assert "upgrade the upstream to Airflow 3.2" in str(info.value)
    assert not [key for key in mocked.requests if "dagRuns" in str(key[1])]


# --- asset events of a partition ----------------------------------------------------------------------

ASSET = {"assets": [{"id": 1, "uri": "file://sales", "name": "sales"}], "total_entries": 1}


def event(i: int, key: str | None, minutes: int) -> dict:
    return {
        "id": i,
        "asset_id": 1,
        "uri": "file://sales",
        "name": "sales",
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "extra": {"i": i},
        "source_dag_id": "p",
        "source_task_id": "t",
        "source_run_id": f"r{i}",
        "partition_key": key,
    }


def asset_watch(key: str | None, cursors: dict | None = None) -> AssetWait:
    start = {"timestamp": T0.isoformat()}
    return AssetWait(
        assets=[{"uri": "file://sales", "name": None}],
        cursors=cursors if cursors is not None else {cursor_key("file://sales", key): start},
        partition_key=key,
    )


async def events_probe(watch: AssetWait, *events: dict, version: str = "3.3.2"):
    with upstream_mock(version=version) as mocked:
        mocked.get(url("/api/v2/assets"), payload=ASSET, repeat=True)
        mocked.get(
            url("/api/v2/assets/events"), payload={"asset_events": list(events), "total_entries": len(events)}
        )
        async with mocked_client() as client:
            return await AssetProbe(watch)(client)


async def test_only_events_of_exactly_the_key_count_and_carry_it():
    decision = await events_probe(
        asset_watch("eu"), event(1, "eu-west", 1), event(2, "EU", 2), event(3, None, 3), event(4, "eu", 4)
    )
    assert decision.status == "success"
    assert [(e["id"], e["partition_key"]) for e in decision.result["events"]] == [(4, "eu")]
    # recorded per asset and key: another key's cursor is untouched, and does not block this one
    assert list(decision.result["cursors"]) == ["file://sales #partition=eu"]


async def test_no_event_of_the_key_keeps_waiting():
    decision = await events_probe(asset_watch("eu"), event(1, "eu-west", 1), event(2, None, 2))
    assert decision.status == "waiting"


async def test_an_event_consumed_for_one_key_is_new_for_no_other_and_a_later_one_counts():
    first = await events_probe(asset_watch("eu"), event(4, "eu", 4))
    cursors = first.result["cursors"]
    again = await events_probe(asset_watch("eu", cursors), event(4, "eu", 4))
    assert again.status == "waiting"  # consumed once per task and key
    later = await events_probe(asset_watch("eu", cursors), event(4, "eu", 4), event(9, "eu", 9))
    assert [e["id"] for e in later.result["events"]] == [9]


async def test_partition_events_need_an_upstream_with_partitions():
    watch = asset_watch("eu")
    with pytest.raises(ConfigurationError, match="runs Airflow 3.1.8, whose asset events have no partition"):
        await events_probe(watch, event(4, "eu", 4), version="3.1.8")


def test_cursor_store_keeps_the_most_recent_partitions_and_every_plain_cursor():
    box: dict = {}
    store = CursorStore("d", "w", get=box.get, set_=box.__setitem__)
    ts = {"timestamp": T0.isoformat()}
    store.commit("plain", {}, {"file://sales": ts})
    for n in range(KEEP_PARTITIONS + 5):
        store.commit(f"run{n}", {}, {cursor_key("file://sales", f"k{n}"): ts})
    kept = box["xdep_sensors.state.cursor:d.w"]["cursors"]
    assert [k for k in kept if "#partition=" in k] == [
        cursor_key("file://sales", f"k{n}") for n in range(5, KEEP_PARTITIONS + 5)
    ]
    store.commit("again", {}, {cursor_key("file://sales", "k5"): ts})  # consumed again: now the most recent
    store.commit("new", {}, {cursor_key("file://sales", "new"): ts})
    kept = box["xdep_sensors.state.cursor:d.w"]["cursors"]
    assert "file://sales" in kept and len([k for k in kept if "#partition=" in k]) == KEEP_PARTITIONS
    assert cursor_key("file://sales", "k5") in kept and cursor_key("file://sales", "k6") not in kept


@pytest.mark.usefixtures("remote_conn")
def test_asset_sensor_takes_its_key_and_its_cursor_per_key():
    s = RemoteAssetSensor(
        task_id="w", asset_uri="file://sales", remote_conn_id="upstream", partition_key="2026-12-06T05"
    )
    own = SimpleNamespace(run_after=T0 + timedelta(hours=9), partition_key="2026-12-06T05", partition_date=T0)
    ti = mock.MagicMock(dag_id="d")
    with mock.patch("xdep_sensors.triggers.task_args.CursorStore") as store:
        store.return_value.start.return_value = {}
        with pytest.raises(TaskDeferred) as info:
            s.execute({"ti": ti, "run_id": "r", "logical_date": None, "dag_run": own})
    w = info.value.trigger.watch
    assert w.partition_key == "2026-12-06T05"
    # a run of this very partition starts its first look at its partition's date, not its run_after
    assert w.cursors == {"file://sales #partition=2026-12-06T05": {"timestamp": T0.isoformat()}}
    with pytest.raises(ValueError, match="partition_key must be a non-empty string"):
        RemoteAssetSensor(task_id="w", asset_uri="file://sales", partition_key="")


# --- Airflow's partition mappers ----------------------------------------------------------------------


def hour(h: int, day: int = 6) -> str:
    return f"2026-12-{day:02d}T{h:02d}:00:00"


def mapped_watch(mapper, key: str = "2026-12-06") -> AssetWait:
    encoded = encode_mapper("partition_mapper", mapper)
    return AssetWait(
        assets=[{"uri": "file://sales", "name": None}],
        cursors={cursor_key("file://sales", key): {"timestamp": T0.isoformat()}},
        partition_key=key,
        partition_mappers={"file://sales": encoded},
    )


async def mapped_probe(watch: AssetWait, *looks: list[dict]):
    """One decision per look; each look's listing is every event so far."""
    decisions = []
    with upstream_mock() as mocked:
        mocked.get(url("/api/v2/assets"), payload=ASSET, repeat=True)
        for events in looks:
            mocked.get(
                url("/api/v2/assets/events"), payload={"asset_events": events, "total_entries": len(events)}
            )
        async with mocked_client() as client:
            probe = asset_probe(watch)
            for _ in looks:
                decisions.append(await probe(client))
    return decisions


async def test_a_plain_mapper_ends_the_wait_at_the_first_event_it_maps_to_the_key():
    other_day = event(1, hour(23, day=5), 1)
    (waiting,) = await mapped_probe(mapped_watch(StartOfDayMapper()), [other_day, event(2, "eu", 2)])
    assert waiting.status == "waiting"  # another day's hour, and a key the mapper cannot map, feed nothing
    (done,) = await mapped_probe(mapped_watch(StartOfDayMapper()), [other_day, event(3, hour(5), 3)])
    assert [(e["id"], e["partition_key"]) for e in done.result["events"]] == [(3, hour(5))]
    assert list(done.result["cursors"]) == ["file://sales #partition=2026-12-06"]


async def test_a_rollup_waits_for_its_whole_window_and_says_what_is_missing():
    rollup = RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow())
    day = [event(h, hour(h), h) for h in range(24)]
    first, second = await mapped_probe(mapped_watch(rollup), day[:23] + [day[0]], day)
    assert first.status == "waiting"
    assert (
        "file://sales: 23 of 24 partitions of 2026-12-06 arrived; missing 2026-12-06T23:00:00"
        in first.message
    )
    assert second.status == "success" and "24 of 24 partitions" in second.message
    assert sorted(e["partition_key"] for e in second.result["events"]) == [hour(h) for h in range(24)]


async def test_a_minimum_count_ends_the_rollup_earlier():
    rollup = RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow(), wait_policy=MinimumCount(3))
    two, three = await mapped_probe(
        mapped_watch(rollup),
        [event(1, hour(1), 1), event(2, hour(2), 2)],
        [event(h, hour(h), h) for h in (1, 2, 3)],
    )
    assert two.status == "waiting" and "2 of 24 partitions" in two.message
    assert three.status == "success"


def test_a_key_the_mapper_cannot_decode_fails_naming_both():
    with pytest.raises(ValueError, match="partition_key 'eu' is not a key StartOfDayMapper can decode"):
        partition_rules(mapped_watch(StartOfDayMapper(), key="eu"))


@pytest.mark.usefixtures("remote_conn")
class TestMapperSensor:
    def trigger(self, key="2026-12-06", **kwargs):
        """The trigger a mapped sensor defers to, for a run without a partition of its own."""
        s = RemoteAssetSensor(
            task_id="w", asset_uri="file://sales", remote_conn_id="upstream", partition_key=key, **kwargs
        )
        run = SimpleNamespace(run_after=T0 + timedelta(days=2), partition_key=None, partition_date=None)
        with mock.patch("xdep_sensors.triggers.task_args.CursorStore") as store:
            store.return_value.start.return_value = {}
            with pytest.raises(TaskDeferred) as info:
                s.execute(
                    {"ti": mock.MagicMock(dag_id="d"), "run_id": "r", "logical_date": None, "dag_run": run}
                )
        return info.value.trigger

    def watch(self, key="2026-12-06", **kwargs):
        return self.trigger(key, **kwargs).watch

    def test_the_first_look_starts_at_the_partitions_own_date(self):
        w = self.watch(partition_mapper=RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow()))
        assert w.cursors == {"file://sales #partition=2026-12-06": {"timestamp": T0.isoformat()}}
        encoded = json.loads(w.partition_mappers["file://sales"])
        assert encoded["__type"] == "airflow.partition_mappers.base.RollupMapper"

    def test_the_trigger_survives_airflows_own_serialization_of_its_kwargs(self):
        from airflow.serialization.serialized_objects import BaseSerialization

        mapper = RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow())
        _, kwargs = self.trigger(partition_mapper=mapper).serialize()
        stored = BaseSerialization.deserialize(BaseSerialization.serialize(kwargs))  # the trigger table
        assert stored == kwargs
        assert partition_rules(RemoteAssetTrigger(**stored).watch)["file://sales"].rollup

    def test_an_undecodable_key_fails_when_the_task_starts(self):
        with pytest.raises(AirflowException, match="partition_key 'eu' is not a key StartOfDayMapper"):
            self.watch(key="eu", partition_mapper=StartOfDayMapper())

    def test_per_asset_configuration_as_partitioned_asset_timetable(self):
        s = RemoteAssetSensor(
            task_id="w",
            assets=["file://sales", "file://stock"],
            partition_key="2026-12-06",
            partition_mapper=StartOfDayMapper(),
            partition_mapper_config={Asset("file://stock"): IdentityMapper()},
        )
        assert {k: json.loads(v)["__type"].rsplit(".", 1)[1] for k, v in s.partition_mappers.items()} == {
            "file://sales": "StartOfDayMapper",
            "file://stock": "IdentityMapper",
        }

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            (
                {"partition_mapper": StartOfDayMapper()},
                "partition_mapper and partition_mapper_config need partition_key",
            ),
            (
                {"partition_key": "k", "partition_mapper": "daily"},
                "partition_mapper for file://sales must be an airflow.sdk partition mapper",
            ),
            (
                {"partition_key": "k", "partition_mapper_config": {"file://other": IdentityMapper()}},
                "names 'file://other', which this sensor does not watch",
            ),
        ],
    )
    def test_rejected_at_parse_time(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            RemoteAssetSensor(task_id="w", asset_uri="file://sales", **kwargs)


# --- the bridge: local outlet events with the upstream keys ---------------------------------------------


def bridged(events: list[dict], own_key: str | None = None, version=(3, 3, 2), **kwargs):
    """What a partition sensor with a local outlet emits (as the task runner serializes it)."""
    from airflow.sdk.execution_time.context import OutletEventAccessors
    from airflow.sdk.execution_time.task_runner import _serialize_outlet_events

    s = RemoteAssetSensor(
        task_id="w", asset_uri="file://sales", partition_key="k", outlets=[Asset("local://sales")], **kwargs
    )
    assert [type(o).__name__ for o in s.outlets] == ["Asset"]  # no alias: its events would take the run's key
    outlets = OutletEventAccessors()
    context = {
        "outlet_events": outlets,
        "run_id": "r",
        "ti": mock.MagicMock(),
        "dag_run": SimpleNamespace(partition_key=own_key),
    }
    result = {"events": events, "started_from": {}, "cursors": {}, "upstream": "http://up"}
    with (
        mock.patch("xdep_sensors.sensors.asset.airflow_version", return_value=version),
        mock.patch.object(RemoteAssetSensor, "_cursor_store") as store,
    ):
        s.on_success(context, result)
    return list(_serialize_outlet_events(outlets)), store.return_value.commit


def upstream_event(i: int, key: str) -> dict:
    return {
        "id": i,
        "uri": "file://sales",
        "timestamp": T0.isoformat(),
        "extra": {"i": i},
        "source_dag_id": "p",
        "source_run_id": f"r{i}",
        "partition_key": key,
    }


def test_one_upstream_event_becomes_one_local_event_with_its_key_and_extra():
    emitted, commit = bridged([upstream_event(1, hour(5))])
    assert emitted == [
        {
            "dest_asset_key": {"name": "local://sales", "uri": "local://sales/"},
            "extra": {
                "i": 1,
                "xdep_upstream": {
                    "url": "http://up",
                    "event_id": 1,
                    "uri": "file://sales",
                    "timestamp": T0.isoformat(),
                    "source_dag_id": "p",
                    "source_run_id": "r1",
                    "partition_key": hour(5),
                },
            },
            "partition_key": hour(5),
        }
    ]
    commit.assert_called_once()


def test_a_window_of_upstream_events_becomes_one_local_event_per_key():
    emitted, _ = bridged([upstream_event(h, hour(h)) for h in range(3)])
    assert sorted(e["partition_key"] for e in emitted) == [hour(h) for h in range(3)]
    by_key = emitted[0]["extra"]["xdep_upstream_partitions"]
    assert {k: [x["i"] for x in v] for k, v in by_key.items()} == {hour(h): [h] for h in range(3)}


def test_on_airflow_3_2_only_the_runs_own_key_can_be_bridged_and_nothing_is_lost_otherwise():
    emitted, commit = bridged([upstream_event(1, "eu")], own_key="eu", version=(3, 2, 2))
    assert [e.get("partition_key") for e in emitted] == [None]  # Airflow 3.2 stamps the run's own key
    with pytest.raises(AirflowException, match="cannot bridge upstream partition\\(s\\) us .* mislabelled"):
        bridged([upstream_event(1, "us")], own_key="eu", version=(3, 2, 2))


def test_below_airflow_3_2_outlets_with_a_partition_key_fail_at_parse_time():
    with mock.patch("xdep_sensors.sensors.asset.airflow_version", return_value=(3, 1, 8)):
        with pytest.raises(ValueError, match="outlets with partition_key: local asset events carry"):
            RemoteAssetSensor(
                task_id="w", asset_uri="file://sales", partition_key="k", outlets=[Asset("local://sales")]
            )


# --- the doctor -------------------------------------------------------------------------------------------


async def doctor(version: str = "3.3.2", api: str = "v2", **kwargs):
    from xdep_sensors.core.doctor import diagnose, render

    with upstream_mock(version=version) as mocked:
        mocked.get(url(f"/api/{api}/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
        mocked.get(url(f"/api/{api}/assets/events"), payload={"asset_events": [], "total_entries": 0})
        mocked.get(url(f"/api/{api}/datasets/events"), payload={"dataset_events": [], "total_entries": 0})
        mocked.get(url(f"/api/v2/dags/{DAG}"), payload={"dag_id": DAG, "is_paused": False})
        mocked.get(
            url(f"/api/v2/dags/{DAG}/dagRuns"),
            payload=page(run("b", "eu-west", hours=2), run("a", "eu", "running")),
        )
        mocked.get(url("/api/v2/assets"), payload=ASSET)
        mocked.get(
            url("/api/v2/assets/events"),
            payload={"asset_events": [event(2, "eu-west", 2), event(1, "eu", 1)], "total_entries": 2},
        )
        async with mocked_client(api) as client:
            return render(await diagnose(client, partition_key="eu", **kwargs))


async def test_the_doctor_shows_the_newest_run_and_event_of_exactly_the_partition():
    report = await doctor(dag_id=DAG, asset_uri="file://sales")
    assert f"[ok] dag {DAG}: exists; newest run of partition eu: a: running" in report
    when = event(1, "eu", 1)["timestamp"]
    assert f"[ok] asset file://sales: exists (id 1); latest event of partition eu {when}" in report


async def test_the_doctor_says_an_upstream_has_no_partitions():
    report = await doctor(version="3.1.8", dag_id=DAG)
    assert "[FAIL] partition eu: the upstream runs Airflow 3.1.8, which has no partitioned runs" in report
    assert "fix: wait without partition_key there, or upgrade the upstream to Airflow 3.2" in report


async def test_a_fan_out_mapper_feeds_each_day_of_an_upstream_week():
    # one weekly upstream partition fans out to the seven days of its week (Airflow's FanOutMapper)
    week = FanOutMapper(upstream_mapper=StartOfWeekMapper(), window=WeekWindow())
    upstream_week = "2026-11-30T00:00:00"  # a Monday
    (done,) = await mapped_probe(mapped_watch(week, key="2026-12-03"), [event(1, upstream_week, 1)])
    assert [e["partition_key"] for e in done.result["events"]] == [upstream_week]
    (other,) = await mapped_probe(mapped_watch(week, key="2026-12-08"), [event(1, upstream_week, 1)])
    assert other.status == "waiting"  # the next week's Tuesday


async def test_a_fixed_key_mapper_feeds_its_one_key_from_any_upstream_key():
    (done,) = await mapped_probe(mapped_watch(FixedKeyMapper("all"), key="all"), [event(1, "eu", 1)])
    assert done.status == "success"


# --- the Remote dependencies page ------------------------------------------------------------------------


def test_the_page_shows_the_partition_a_wait_is_on():
    import pendulum
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from xdep_sensors.plugins import page as ui
    from xdep_sensors.plugins.dependencies import sensor_dependencies

    with DAG("down", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        RemoteDagRunSensor(task_id="run", remote_conn_id="a", external_dag_id="hourly", partition_key="eu")
        RemoteAssetSensor(
            task_id="day",
            remote_conn_id="a",
            asset_uri="file://sales",
            partition_key="{{ dag_run.partition_key }}",
            partition_mapper=RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow()),
        )
    items = {i["task_id"]: i for i in sensor_dependencies([("down", DagSerialization.to_dict(dag))])}
    assert items["run"]["upstream"]["partition_key"] == "eu"
    assert "partition <code>eu</code>" in ui._target(items["run"]["upstream"])
    assert "partition <code>{{ dag_run.partition_key }}</code>" in ui._target(items["day"]["upstream"])


def test_runs_and_events_carry_their_key_in_every_payload():
    """XCom, trigger events, watcher and alert payloads are ``to_dict()`` of these records."""
    d = V2()
    assert d.parse_dag_run(run("a", "eu")).to_dict()["partition_key"] == "eu"
    page_ = d.parse_asset_events({"asset_events": [event(1, "eu", 1)], "total_entries": 1})
    assert page_.items[0].to_dict()["partition_key"] == "eu"
    v1_run = {k: v for k, v in run("a", None).items() if k != "partition_key"}
    assert V1().parse_dag_run({**v1_run, "execution_date": T0.isoformat()}).partition_key is None


# --- a roll-up's progress: the doctor and the page ------------------------------------------------------

DAILY = RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow())


def mock_day(mocked, hours: list[int], day: int = 6) -> None:
    """The sales asset with events for these hours of the day (and one of another day)."""
    mocked.get(url("/api/v2/assets"), payload=ASSET, repeat=True)
    events = [event(h, hour(h, day=day), h) for h in hours] + [event(99, hour(1, day=day - 1), 0)]
    mocked.get(url("/api/v2/assets/events"), payload={"asset_events": events, "total_entries": len(events)})
    mocked.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": len(events)})


async def test_rollup_progress_names_the_keys_missing_from_the_window():
    with upstream_mock() as mocked:
        mock_day(mocked, list(range(20)) + [3])
        async with mocked_client() as client:
            progress = await rollup_progress(client, "file://sales", "2026-12-06", encode_mapper("m", DAILY))
            plain = await rollup_progress(
                client, "file://sales", "2026-12-06", encode_mapper("m", StartOfDayMapper())
            )
    assert (progress["expected"], progress["arrived"], progress["missing_count"]) == (24, 20, 4)
    assert progress["read_since"] == T0.isoformat()  # the day's own date: not the whole history
    assert rollup_line(progress) == (
        "20 of 24 partitions of 2026-12-06 arrived upstream; missing 2026-12-06T20:00:00, "
        "2026-12-06T21:00:00, 2026-12-06T22:00:00, 2026-12-06T23:00:00"
    )
    assert plain is None  # not a roll-up: nothing to count


async def test_the_page_shows_a_rollups_progress_for_each_wait_in_flight(monkeypatch):
    from xdep_sensors.hooks import RemoteAirflowHook
    from xdep_sensors.plugins import dependencies
    from xdep_sensors.plugins import page as ui

    monkeypatch.setattr(dependencies, "_connection_config", lambda conn_id: None)
    with upstream_mock() as mocked:
        mock_day(mocked, list(range(10)))
        client = mocked_client()
        monkeypatch.setattr(RemoteAirflowHook, "client_for", staticmethod(lambda config: client))
        facts = dependencies.UpstreamFacts()

        async def no_read(conn_id, dags, assets):
            return {"reachable": True, "version": "3.3.2", "dags": {}, "assets": {}}

        monkeypatch.setattr(facts, "get", no_read)
        wait = {
            "run_id": "r",
            "state": "deferred",
            "since": T0.isoformat(),
            "target": {"asset_uri": "file://sales", "partition_key": "2026-12-06"},
            "_mappers": ("2026-12-06", {"file://sales": encode_mapper("m", DAILY)}),
        }
        item = {
            "kind": "asset_sensor",
            "dag_id": "d",
            "task_id": "t",
            "remote_conn_id": "a",
            "mode": "deferrable",
            "upstream": {"asset_uri": "file://sales"},
            "in_flight": [wait],
        }
        body = await dependencies.compose({"sensors": [item], "watchers": []}, facts, now=T0)
        await client.close()
    (got,) = body["dependencies"][0]["in_flight"]
    assert "_mappers" not in got and got["partitions"][0]["arrived"] == 10
    assert "10 of 24 partitions of 2026-12-06 arrived upstream" in ui._waits(body["dependencies"][0])


@pytest.mark.usefixtures("remote_conn")
def test_the_doctor_says_what_a_sensors_rollup_has_and_lacks(monkeypatch, capsys):
    import importlib

    cli = importlib.import_module("xdep_sensors.cli.main")
    monkeypatch.setattr(cli, "sensor_mappers", lambda sensor: {"file://sales": encode_mapper("m", DAILY)})
    with upstream_mock() as mocked:
        mocked.get(url("/api/v2/dags/~/dagRuns"), payload={"dag_runs": [], "total_entries": 0})
        mocked.get(url("/api/v2/assets/events"), payload={"asset_events": [], "total_entries": 0})
        mock_day(mocked, list(range(23)))
        code = cli.main(
            ["doctor", "--conn-id", "upstream", "--sensor", "d.t", "--partition-key", "2026-12-06"]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    line = "23 of 24 partitions of 2026-12-06 arrived upstream; missing 2026-12-06T23:00:00"
    assert f"[ok] roll-up file://sales: {line}" in out
    assert cli.main(["doctor", "--conn-id", "upstream", "--sensor", "d.t"]) == 1
    assert "--sensor needs --partition-key" in capsys.readouterr().out


def test_the_doctor_finds_a_sensors_mappers_in_the_dag_files(tmp_path, monkeypatch):
    import importlib

    cli = importlib.import_module("xdep_sensors.cli.main")
    (tmp_path / "report.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG, DayWindow, RollupMapper, StartOfDayMapper\n"
        "from xdep_sensors import RemoteAssetSensor\n"
        "with DAG('report', schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC')):\n"
        "    RemoteAssetSensor(task_id='day', asset_uri='file://sales', partition_key='{{ ds }}',\n"
        "        partition_mapper=RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow()))\n"
        "    RemoteAssetSensor(task_id='plain', asset_uri='file://sales')\n"
    )
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path))
    (label,) = cli.sensor_mappers("report.day")
    assert label == "file://sales"
    for sensor, why in (
        ("report.plain", "no partition mapper"),
        ("report.x", "no such task"),
        ("nope.day", "no such DAG"),
    ):
        with pytest.raises(XdepError, match=why):
            cli.sensor_mappers(sensor)
