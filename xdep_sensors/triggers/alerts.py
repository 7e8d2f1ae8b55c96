"""Alert-type AssetWatcher triggers (Astro alert parity): task ends, long runs, missed deadlines.

``RemoteTaskInstanceEventTrigger`` reads a listing like the watchers and shares their machinery. The
duration and deadline triggers look at what runs now, or at the clock: each has its own loop and a
small durable state, kept where the watchers keep their cursors. See ``docs/explanation/guarantees.md``.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any, cast

from airflow.triggers.base import TriggerEvent
from croniter import croniter

from xdep_sensors.client import DagRun, RemoteAirflowClient
from xdep_sensors.client.records import TaskInstance, parse_dt
from xdep_sensors.core.listings import POSITIONS, Key, ListingKind
from xdep_sensors.core.pacing import Pace, paced, sleep
from xdep_sensors.errors import XdepError
from xdep_sensors.hooks import RemoteAirflowHook
from xdep_sensors.triggers.watchers import FINISHED_RUN_STATES, _RemoteEventTrigger

log = logging.getLogger(__name__)

UTC = dt_timezone.utc
TASK_END_STATES = frozenset({"failed", "success", "skipped", "upstream_failed"})
# "Still running" for the duration alert: a reschedule-mode sensor between pokes too (its start_date
# is the first poke's).
ACTIVE_TASK_STATES = ("deferred", "running", "up_for_reschedule")
DEADLINE_GRACE = 5.0  # seconds after a deadline before judging it: a run ending just before is visible
MAX_CATCHUP = 10  # deadlines judged after a long outage; older missed ones are logged, not fired


def _dag_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"external_dag_id must be a non-empty string, got {value!r}")
    return value


def _states(value: Any, allowed: frozenset[str], name: str = "states") -> list[str]:
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple, set, frozenset))
        or not value
        or not set(value) <= allowed
    ):
        raise ValueError(f"{name} must be a non-empty list of {sorted(allowed)}, got {value!r}")
    return sorted(set(value))


def _task_ids(value: Any) -> list[str] | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(t, str) and t.strip() for t in value)
    ):
        raise ValueError(f"task_ids must be a non-empty list of task ids, got {value!r}")
    return sorted(set(value))


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"max_duration must be a positive number of seconds or a timedelta, got {value!r}")
    return float(value)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class _StatefulAlert(_RemoteEventTrigger):
    """An alert with its own loop (no listing to share) and a small durable state dict."""

    def shared_stream_key(self) -> Hashable | None:
        return None  # nothing worth sharing: each has its own DAG and thresholds

    async def load_state(self) -> dict[str, Any] | None:
        stored = await self._store().aget(self._state_key)
        return dict(stored) if stored else None

    async def save_state(self, state: dict[str, Any]) -> None:
        await self._store().aset(self._state_key, state)

    async def _start_state(self, fresh: dict[str, Any]) -> dict[str, Any]:
        state = await self.load_state()
        if state is not None:
            self.log.info("resuming %s from its stored state", self.target)
            return state
        await self.save_state(fresh)
        return fresh


# --- task instances that ended ----------------------------------------------------------------


@dataclass(frozen=True)
class EndedTask:
    """A task instance that ended, with its upstream UI link."""

    ti: TaskInstance
    url: str


class RemoteTaskInstanceEventTrigger(_RemoteEventTrigger):
    """
    Fires once per upstream task instance that ends in one of ``states`` (for ``AssetWatcher``).

    A task with retries fires once per *final* state, not per try: a try that will be retried is
    ``up_for_retry`` upstream, so only the try that exhausts the retries fires. A task instance
    cleared and run again fires again (its new try number and end date make it a new item).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param task_ids: only these upstream tasks (all tasks when neither this nor ``task_group_id``).
    :param task_group_id: only the tasks inside this upstream task group (nested groups included).
    :param states: end states that fire: ``failed`` (default), ``success``, ``skipped``, ``upstream_failed``.
    :param poll_interval: seconds between polls.
    """

    kind = "task_instances"
    listing_kind = ListingKind.ENDED_TASK_INSTANCES
    listing_states = tuple(sorted(TASK_END_STATES))  # every end state: one listing for all such watchers

    def __init__(
        self,
        *,
        remote_conn_id: str,
        external_dag_id: str,
        task_ids: list[str] | None = None,
        task_group_id: str | None = None,
        states: list[str] | None = None,
        poll_interval: float = 60.0,
    ):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        self.external_dag_id = _dag_id(external_dag_id)
        self.task_ids = _task_ids(task_ids)
        if task_group_id is not None and (not isinstance(task_group_id, str) or not task_group_id.strip()):
            raise ValueError(f"task_group_id must be a non-empty string, got {task_group_id!r}")
        if self.task_ids is not None and task_group_id is not None:
            raise ValueError("give at most one of task_ids, task_group_id")
        self.task_group_id = task_group_id
        self.states = _states(["failed"] if states is None else states, TASK_END_STATES)

    @property
    def target(self) -> str:
        return self.external_dag_id

    async def resolve(self, client: RemoteAirflowClient) -> Hashable:
        await self.check_dag(client, self.external_dag_id)
        return self.target

    @property
    def _state_key(self) -> str:
        # two such watchers on one asset (other tasks or states) must not share state
        which = ",".join(self.task_ids) if self.task_ids else f"group={self.task_group_id or ''}"
        return f"xdep_sensors:{self.kind}:{self.remote_conn_id}:{self.target}:{which}:{','.join(self.states)}"

    def _kwargs(self) -> dict[str, Any]:
        return {
            "external_dag_id": self.external_dag_id,
            "task_ids": self.task_ids,
            "task_group_id": self.task_group_id,
            "states": self.states,
        }

    def mine(self, item: EndedTask) -> bool:
        ti = item.ti
        if ti.dag_id != self.external_dag_id or ti.state not in self.states or ti.end_date is None:
            return False
        if self.task_ids is not None:
            return ti.task_id in self.task_ids
        if self.task_group_id is not None:
            return ti.task_id.startswith(f"{self.task_group_id}.")
        return True

    def position(self, item: EndedTask) -> tuple[datetime, Key]:
        return POSITIONS[ListingKind.ENDED_TASK_INSTANCES](item.ti)

    def payload(self, item: EndedTask, upstream: str) -> dict[str, Any]:
        ti = item.ti
        return {
            "upstream": upstream,
            "task_instance": {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "try_number": ti.try_number,
                "state": ti.state,
                "start_date": ti.start_date and _iso(ti.start_date),
                "end_date": ti.end_date and _iso(ti.end_date),
                "url": item.url,
            },
        }

    def adapt(self, client: RemoteAirflowClient, items: list[Any]) -> list[Any]:
        return [EndedTask(ti, client.task_url(ti)) for ti in items]


# --- runs (or tasks) running too long ----------------------------------------------------------


class RemoteDagRunDurationTrigger(_StatefulAlert):
    """
    Fires once per upstream run still running longer than ``max_duration`` after its start.

    The alert comes at the first poll after ``start_date + max_duration``, once per run (a run cleared
    and started again is a new run). With ``task_ids`` it watches those tasks instead: once per task
    instance try. Only limits crossed after the watcher first started fire; its state is durable (the
    asset state store on 3.3+, an Airflow Variable below), so a limit crossed while the triggerer was
    down fires when it is back.

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param max_duration: seconds (or a ``timedelta``) a run (task) may run before it fires.
    :param task_ids: watch these upstream tasks' durations instead of the run's.
    :param poll_interval: seconds between polls.
    """

    kind = "run_duration"

    def __init__(
        self,
        *,
        remote_conn_id: str,
        external_dag_id: str,
        max_duration: float | timedelta,
        task_ids: list[str] | None = None,
        poll_interval: float = 60.0,
    ):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        self.external_dag_id = _dag_id(external_dag_id)
        self.max_duration = _seconds(max_duration)
        self.task_ids = _task_ids(task_ids)

    @property
    def target(self) -> str:
        tasks = f":tasks={','.join(self.task_ids)}" if self.task_ids else ""
        return f"{self.external_dag_id}:{self.max_duration:g}s{tasks}"

    def _kwargs(self) -> dict[str, Any]:
        return {
            "external_dag_id": self.external_dag_id,
            "max_duration": self.max_duration,
            "task_ids": self.task_ids,
        }

    async def _running(
        self, client: RemoteAirflowClient
    ) -> list[tuple[str, datetime, DagRun | None, TaskInstance | None]]:
        """What runs now: (key, start, run, task instance) per run (or per watched task instance)."""
        dag = [self.external_dag_id]
        if self.task_ids is None:
            runs = await client.list_runs_in_states(dag, ["running"])
            return [
                (f"{r.run_id}@{_iso(r.start_date)}", r.start_date, r, None)
                for r in runs
                if r.dag_id == self.external_dag_id and r.state == "running" and r.start_date
            ]
        tis = await client.list_task_instances_in_states(dag, list(ACTIVE_TASK_STATES))
        return [
            (f"{t.run_id}/{t.task_id}/{t.map_index}@{_iso(t.start_date)}", t.start_date, None, t)
            for t in tis
            if t.dag_id == self.external_dag_id
            and t.task_id in self.task_ids
            and t.state in ACTIVE_TASK_STATES
            and t.start_date
        ]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = await self._start_state({"since": _iso(datetime.now(UTC)), "fired": []})
        since = cast(datetime, parse_dt(state["since"]))  # always stored
        fired: set[str] = set(state.get("fired") or [])
        hook = RemoteAirflowHook(self.remote_conn_id)
        limit = timedelta(seconds=self.max_duration)

        checked = False

        async def look() -> tuple[Any, ...]:
            nonlocal checked
            client = await hook.aget_client()
            if not checked:
                await self.check_dag(client, self.external_dag_id)
                checked = True
            running = await self._running(client)
            now = datetime.now(UTC)
            due = [
                (key, start, run, ti)
                for key, start, run, ti in running
                if key not in fired and start + limit <= now and start + limit >= since
            ]
            runs = {}
            for _, _, run, ti in due:
                if ti is not None and ti.run_id not in runs:
                    runs[ti.run_id] = await client.get_dag_run(ti.dag_id, ti.run_id)
            return client, running, now, due, runs

        async for client, running, now, due, runs in paced(
            look, interval=self.poll_interval, log=self.log, what=self.target
        ):
            for key, start, run, ti in sorted(due, key=lambda d: d[1]):
                run = run or runs.get(ti.run_id)
                payload: dict[str, Any] = {
                    "upstream": client.config.ui_base,
                    "run": run and {**run.to_dict(), "url": client.run_url(run.dag_id, run.run_id)},
                    "running_for": round((now - start).total_seconds(), 3),
                    "max_duration": self.max_duration,
                }
                if ti is not None:
                    payload["task_instance"] = {**ti.to_dict(), "url": client.task_url(ti)}
                if key in ((await self.stored_before_firing()).get("fired") or ()):
                    self.log.info(
                        "not alerting %s %s: its stored state says another triggerer did", self.target, key
                    )
                else:
                    yield TriggerEvent(payload)
                fired.add(key)
                await self.save_state({"since": state["since"], "fired": sorted(fired)})
            # forget what no longer runs: the state stays small
            still = {key for key, *_ in running}
            if fired - still:
                fired &= still
                await self.save_state({"since": state["since"], "fired": sorted(fired)})


# --- deadlines -----------------------------------------------------------------------------------


class RemoteDagRunDeadlineTrigger(_StatefulAlert):
    """
    At each deadline, fires once if no run of the upstream DAG finished in ``states`` since the previous one.

    Deadlines are the ticks of ``deadline`` (a 5-field cron expression in ``timezone``). The deadline
    at tick *d* is met by a run whose ``end_date`` is after the previous tick and at or before *d*;
    it is judged a few seconds after *d*, from the upstream's own end dates. Each deadline is judged
    once: the last one handled is stored durably (the asset state store on 3.3+, an Airflow Variable
    below), so a restart neither repeats one nor skips one missed meanwhile (up to the last ten).

    :param remote_conn_id: connection of type ``remote_airflow``.
    :param external_dag_id: the upstream DAG id.
    :param deadline: 5-field cron expression, e.g. ``"30 6 * * *"`` (06:30 every day).
    :param states: finished states that meet the deadline (default ``["success"]``).
    :param timezone: IANA time zone of the cron expression (default ``UTC``).
    :param poll_interval: longest sleep between looks at the clock; base of the retry backoff.
    """

    kind = "deadline"

    def __init__(
        self,
        *,
        remote_conn_id: str,
        external_dag_id: str,
        deadline: str,
        states: list[str] | None = None,
        timezone: str = "UTC",
        poll_interval: float = 60.0,
    ):
        super().__init__(remote_conn_id=remote_conn_id, poll_interval=poll_interval)
        self.external_dag_id = _dag_id(external_dag_id)
        if not isinstance(deadline, str) or len(deadline.split()) != 5 or not croniter.is_valid(deadline):
            raise ValueError(
                f"deadline must be a 5-field cron expression such as '30 6 * * *', got {deadline!r}"
            )
        self.deadline = " ".join(deadline.split())
        try:
            self._tz = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"timezone must be an IANA time zone name such as 'Europe/Amsterdam', got {timezone!r}"
            ) from None
        self.timezone = timezone
        self.states = _states(["success"] if states is None else states, FINISHED_RUN_STATES)

    @property
    def target(self) -> str:
        return f"{self.external_dag_id}:{self.deadline}@{self.timezone}:{','.join(self.states)}"

    def _kwargs(self) -> dict[str, Any]:
        return {
            "external_dag_id": self.external_dag_id,
            "deadline": self.deadline,
            "states": self.states,
            "timezone": self.timezone,
        }

    def ticks_after(self, after: datetime, until: datetime) -> list[datetime]:
        """Deadlines in (after, until], oldest first, in UTC."""
        it = croniter(self.deadline, after.astimezone(self._tz))
        out = []
        while (tick := it.get_next(datetime).astimezone(UTC)) <= until:
            out.append(tick)
        return out

    def previous_tick(self, tick: datetime) -> datetime:
        return croniter(self.deadline, tick.astimezone(self._tz)).get_prev(datetime).astimezone(UTC)

    async def judge(self, client: RemoteAirflowClient, tick: datetime) -> dict[str, Any] | None:
        """Return the payload when the deadline at ``tick`` was missed, else ``None``."""
        last = await client.last_finished_run(self.external_dag_id, self.states, before=tick)
        if last is not None and last.end_date and last.end_date > self.previous_tick(tick):
            return None
        return {
            "upstream": client.config.ui_base,
            "deadline": _iso(tick),
            "last_run": last and {**last.to_dict(), "url": client.run_url(last.dag_id, last.run_id)},
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = await self._start_state({"last_deadline": _iso(datetime.now(UTC))})
        handled = cast(datetime, parse_dt(state["last_deadline"]))  # always stored
        hook = RemoteAirflowHook(self.remote_conn_id)
        grace = timedelta(seconds=DEADLINE_GRACE)
        pace = Pace(self.poll_interval)
        while True:
            now = datetime.now(UTC)
            due = self.ticks_after(handled, now - grace)
            if len(due) > MAX_CATCHUP:
                self.log.warning(
                    "%d deadlines of %s passed while nobody watched; judging the last %d",
                    len(due),
                    self.target,
                    MAX_CATCHUP,
                )
                due = due[-MAX_CATCHUP:]
            for tick in due:
                try:
                    client = await hook.aget_client()
                    payload = await self.judge(client, tick)
                except XdepError as err:
                    await pace.back_off(err, self.log, self.target)
                    break
                pace.ok()
                if payload is not None:
                    theirs = parse_dt((await self.stored_before_firing()).get("last_deadline"))
                    if theirs is not None and theirs >= tick:
                        self.log.info(
                            "not alerting deadline %s of %s: its stored state says another triggerer "
                            "judged it",
                            _iso(tick),
                            self.external_dag_id,
                        )
                    else:
                        yield TriggerEvent(payload)
                else:
                    self.log.info("deadline %s of %s met", _iso(tick), self.external_dag_id)
                handled = tick
                await self.save_state({"last_deadline": _iso(handled)})
            else:
                upcoming = croniter(self.deadline, max(handled, now - grace).astimezone(self._tz)).get_next(
                    datetime
                )
                wake = (upcoming.astimezone(UTC) + grace - datetime.now(UTC)).total_seconds()
                await sleep(min(self.poll_interval, max(wake, 0.5)))
