"""Start and stop real Airflow deployments on loopback for integration tests and demos.

SQLite by default; PostgreSQL (``database_url``, see devtools/postgres.py) and several triggerers
(``triggerers``: each its own hostname, 127.0.0.<n>, so the ``job`` table tells them apart) give a
deployment the shape of a production one. ``auth="fab"`` gives an Airflow 3 deployment the FAB auth
manager (Airflow 2 always has it): roles with per-DAG permissions (:meth:`LocalAirflow.set_role`).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable

_FAB = "airflow.providers.fab.auth_manager.api.auth.backend"
_FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


ROOT = Path(__file__).resolve().parents[1]
# A Viewer user on every Airflow 3 deployment whose password is recognisable: the leak scans look for it
# (and for the JWTs it is exchanged for) in everything a downstream that used it keeps.
CANARY_USER = "canary"
CANARY_PASSWORD = "Canary-Passw0rd-xdep-7c2d91"


def component_hostname() -> str:
    """``[core] hostname_callable`` of a deployment's triggerers: each has its own (``XDEP_HOSTNAME``)."""
    return os.environ["XDEP_HOSTNAME"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> tuple[int, int, str, str] | None:
    """Return (ppid, pgid, start time, state) of a process from /proc, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), fields[19], fields[0]


def _descendants(root: int) -> list[tuple[int, int, str]]:
    """List (pid, pgid, start time) of every live descendant of root (Linux /proc; empty elsewhere)."""
    children: dict[int, list[tuple[int, int, str]]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _proc_stat(int(entry.name))
        if stat:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1], stat[2]))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += [k[0] for k in kids]
    return found


class LocalAirflow:
    """One Airflow deployment (Airflow 3 or 2) running as local processes against SQLite."""

    def __init__(
        self,
        home: Path,
        airflow_bin: Path | str,
        *,
        major: int = 3,
        dags_folder: Path | None = None,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        components: tuple[str, ...] | None = None,
        name: str = "airflow",
        database_url: str | None = None,
        triggerers: int = 1,
        auth: str = "simple",
    ) -> None:
        if major not in (2, 3):
            raise ValueError(f"unsupported Airflow major version {major}")
        if auth not in ("simple", "fab"):
            raise ValueError(f"unsupported auth manager {auth!r}: 'simple' or 'fab'")
        self.auth = "fab" if major == 2 else auth  # Airflow 2: always FAB
        self.home = Path(home).resolve()
        self.airflow_bin = str(Path(airflow_bin).absolute())
        self.major, self.name = major, name
        self.dags_folder = Path(dags_folder).resolve() if dags_folder else self.home / "dags"
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        default = ("api-server", "scheduler", "dag-processor") if major == 3 else ("webserver", "scheduler")
        self.components: tuple[str, ...] = tuple(components or default)
        self.triggerers = triggerers
        if triggerers > 1 and "triggerer" in self.components:
            self.components += tuple(f"triggerer-{n}" for n in range(2, triggerers + 1))
        self.database_url = database_url
        self.log_dir = self.home / "logs"
        self._api = "/api/v2" if major == 3 else "/api/v1"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # (dag id, run id) of runs wait_run cleared after Airflow's stale defer-exit race: a try more
        self.cleared_runs: set[tuple[str, str]] = set()
        self._tokens: dict[tuple[str, str], str] = {}
        self._atexit = False
        self._trigger_ports: dict[str, str] = {}
        self.env = self._build_env(extra_env or {})

    def _build_env(self, extra: dict[str, str]) -> dict[str, str]:
        """Return os.environ (minus inherited AIRFLOW_* settings) + the loopback recipe + extra."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env["PATH"] = str(Path(self.airflow_bin).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        h = self.home
        env.update(
            {
                "AIRFLOW_HOME": str(h),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h}/airflow.db",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            }
        )
        if self.major == 3:
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(self.port),
                    "AIRFLOW__API__BASE_URL": self.base_url,
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                    "AIRFLOW__API_AUTH__JWT_SECRET": f"xdep-test-jwt-secret-{self.name}-0123456789abcdef",
                    "AIRFLOW__API__SECRET_KEY": f"xdep-test-secret-key-{self.name}",
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                    # a task's calls to the api-server (default: 5 s, 5 tries) fail it when a loaded machine
                    # answers late, as the first task start of a fresh api-server does there (3.1.1+)
                    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                }
            )
            if self.auth == "fab":
                env.update(
                    {
                        "AIRFLOW__CORE__AUTH_MANAGER": _FAB_AUTH_MANAGER,
                        # the api-server keeps a user (and its roles' permissions) for [fab] cache_ttl
                        # seconds (30): a role set_role changed would still apply to its users meanwhile
                        "AIRFLOW__FAB__CACHE_TTL": "0",
                    }
                )
            else:
                env.update(
                    {
                        "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
                        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": (
                            f"admin:admin,viewer:viewer,{CANARY_USER}:viewer"
                        ),
                        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(h / "passwords.json"),
                    }
                )
        else:
            env.update(
                {
                    "AIRFLOW__API__AUTH_BACKENDS": f"{_FAB}.basic_auth,{_FAB}.session",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                    "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(self.port),
                    "AIRFLOW__WEBSERVER__BASE_URL": self.base_url,
                    "AIRFLOW__WEBSERVER__WORKERS": "1",
                    "AIRFLOW__WEBSERVER__SECRET_KEY": f"xdep-test-secret-key-{self.name}",
                    "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
                    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
                    # SQLite normally forces SequentialExecutor (~4 s per task); LocalExecutor is ~4x faster
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "_AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK": "1",
                    # SQLite has no row locks: a task's "mini scheduler" can set the next task back to
                    # scheduled after the scheduler queued it, which then runs twice and fails its run
                    "AIRFLOW__SCHEDULER__SCHEDULE_AFTER_TASK_EXECUTION": "False",
                }
            )
        if self.database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database_url
        if (
            self.triggerers > 1
        ):  # a triggerer that stops heartbeating loses its triggers to another within ~15 s
            env.update(
                {
                    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                }
            )
        env.update(extra)
        return env

    def triggerer_names(self) -> list[str]:
        return [c for c in self.components if c == "triggerer" or c.startswith("triggerer-")]

    def triggerer_hostname(self, component: str) -> str:
        """The hostname a triggerer writes in the ``job`` table (127.0.0.<n> when there are several)."""
        return f"127.0.0.{1 if component == 'triggerer' else int(component.rsplit('-', 1)[1])}"

    def _component_env(self, name: str) -> dict[str, str]:
        if self.triggerers < 2 or name not in self.triggerer_names():
            return self.env
        if name not in self._trigger_ports:
            self._trigger_ports[name] = str(free_port())
        return {
            **self.env,
            "XDEP_HOSTNAME": self.triggerer_hostname(name),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devtools.airflow_local.component_hostname",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": self._trigger_ports[name],
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), self.env.get("PYTHONPATH")) if p),
        }

    def start(self, timeout: float = 180) -> LocalAirflow:
        """Migrate the DB, start every component, wait for the API and create the users (admin/admin with
        Admin, viewer/viewer and CANARY_USER with Viewer)."""
        deadline = time.monotonic() + timeout
        for d in (self.home, self.log_dir, self.dags_folder):
            d.mkdir(parents=True, exist_ok=True)
        if self.auth == "simple":
            (self.home / "passwords.json").write_text(
                json.dumps({"admin": "admin", "viewer": "viewer", CANARY_USER: CANARY_PASSWORD})
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError as e:
                raise RuntimeError(f"{self.name}: port {self.port} is not free: {e}") from None
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        self._cli_or_fail("db", "migrate", timeout=max(deadline - time.monotonic(), 1))
        if self.auth == "fab":
            # Airflow 2: the Admin role exists right after migrate, Viewer only after the webserver ran.
            # FAB on Airflow 3: the command creates every stock role (~6 s), before any component can race
            # it to (the api-server syncs them, the dag-processor adds each DAG's resource)
            self._cli_or_fail(
                "users",
                "create",
                "--username",
                "admin",
                "--password",
                "admin",
                "--role",
                "Admin",
                "--firstname",
                "admin",
                "--lastname",
                "admin",
                "--email",
                "admin@example.com",
                timeout=max(deadline - time.monotonic(), 120),
            )  # the start's deadline, as above
        for comp in self.components:
            self.start_component(comp, wait=False)
        try:
            self._wait_ready(deadline)
            if self.major == 2:
                self.set_user("viewer", "viewer", ["Viewer"])
            elif self.auth == "fab":
                self.set_user("viewer", "viewer", ["Viewer"])
                self.set_user(CANARY_USER, CANARY_PASSWORD, ["Viewer"])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate every component's process group (SIGTERM, then SIGKILL after ~15 s); idempotent."""
        self._terminate(list(self._procs))
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False

    def start_component(self, name: str, wait: bool = True, timeout: float = 120) -> None:
        """Start one component in its own session; wait for readiness if it serves the API."""
        if name in self._procs and self._procs[name].poll() is None:
            raise RuntimeError(f"{self.name}: component {name} is already running")
        command = "triggerer" if name in self.triggerer_names() else name
        args = [name, "--port", str(self.port)] if name in ("api-server", "webserver") else [command]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self._procs[name] = subprocess.Popen(
                [self.airflow_bin, *args],
                env=self._component_env(name),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and name in ("api-server", "webserver"):
            self._wait_ready(time.monotonic() + timeout)

    def revive(self) -> list[str]:
        """Start again every component that exited on its own (not stopped, killed or paused by a test);
        return their names. An Airflow scheduler ends its process on an error it does not retry, e.g.
        SQLite's "database is locked" under load: the deployment's other users (every later test) would
        otherwise see runs that never start. Each revival is said on stderr with the component's log."""
        dead = [n for n, p in self._procs.items() if p.poll() is not None]
        for name in dead:
            code = self._procs.pop(name).returncode
            log = self.log_dir / f"{name}.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
            print(
                f"{self.name}: {name} had exited ({code}); starting it again. Its log ended:\n{tail}",
                file=sys.stderr,
            )
            self.start_component(name)
        return dead

    def stop_component(self, name: str) -> None:
        """Stop one component (its whole process group and any escaped descendants)."""
        self._terminate([name])

    def worker_runs(self, dag_id: str, run_id: str, task_id: str, attempt: int | None = None) -> int:
        """How many times a worker ran a task instance (a resume included), in every try or in try
        ``attempt``: each run parses the DAG file first, and says so in the try's log (``attempt=<n>.log``;
        a triggerer writes files of its own)."""
        folder = self.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sum(
            path.read_text(errors="replace").count("Filling up the DagBag from")
            for path in folder.glob(f"attempt={'*' if attempt is None else attempt}.log")
            if ".log.trigger." not in path.name
        )

    def kill_component(self, name: str) -> None:
        """SIGKILL one component's process group at once, as a crash or an OOM kill would (no clean-up)."""
        proc = self._procs.pop(name)
        escaped = [d for d in _descendants(proc.pid) if d[1] != proc.pid]
        _signal_group(proc.pid, signal.SIGKILL)
        _kill_escaped(escaped)
        proc.wait(timeout=30)

    def pause_component(self, name: str, leader_only: bool = False) -> None:
        """SIGSTOP one component's process group (or only its leader, the process started): it stops
        with its state in memory, as on a host starved of CPU; :meth:`resume_component` lets it go on.
        A triggerer's leader is its supervisor (heartbeats, the metadata DB): paused alone, it stalls as
        on a metadata DB that does not answer, while its trigger runner subprocess goes on."""
        pid = self._procs[name].pid
        if leader_only:
            os.kill(pid, signal.SIGSTOP)
        else:
            _signal_group(pid, signal.SIGSTOP)

    def resume_component(self, name: str) -> None:
        """SIGCONT a paused component's process group."""
        _signal_group(self._procs[name].pid, signal.SIGCONT)

    def _terminate(self, names: list[str], grace: float = 15) -> None:
        """SIGTERM the groups of the given components, wait up to grace seconds, then SIGKILL leftovers."""
        procs = [self._procs.pop(n) for n in names if n in self._procs]
        escaped = {d for p in procs for d in _descendants(p.pid) if d[1] not in {q.pid for q in procs}}
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)
            _signal_group(p.pid, signal.SIGCONT)  # a paused group handles its SIGTERM only once it runs
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for p in procs:
                p.poll()
            if not any(_group_alive(p.pid) for p in procs):
                break
            time.sleep(0.2)
        for p in procs:
            _signal_group(p.pid, signal.SIGKILL)
        _kill_escaped(escaped)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed leaders always exit
                pass

    def _wait_ready(self, deadline: float) -> None:
        """Poll the version endpoint until it answers; fail fast if a component dies."""
        url = f"{self.base_url}{self._api}/version"
        while True:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{self.name}: component(s) {dead} exited during start\n{self.tail_logs()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {url} did not answer in time\n{self.tail_logs()}")
            time.sleep(0.5)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `airflow <args>` with this deployment's environment and capture text output."""
        return subprocess.run(
            [self.airflow_bin, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def _cli_or_fail(self, *args: str, timeout: float) -> None:
        """Run a CLI command; raise RuntimeError with its output on failure."""
        res = self.cli(*args, check=False, timeout=timeout)
        if res.returncode:
            raise RuntimeError(
                f"{self.name}: airflow {' '.join(args)} failed ({res.returncode})\n"
                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            )

    def token(self, user: str = "admin", password: str = "admin") -> str:
        """Return (and cache) an Airflow 3 JWT from POST /auth/token."""
        if (user, password) not in self._tokens:
            body = self._request(
                "POST", "/auth/token", {"username": user, "password": password}, {}, expect=(200, 201)
            )
            self._tokens[(user, password)] = body["access_token"]
        return self._tokens[(user, password)]

    def _fab_path(self, kind: str, name: str | None = None) -> str:
        """The FAB REST path of roles or users (or of one of them)."""
        base = f"/auth/fab/v1/{kind}" if self.major == 3 else f"/api/v1/{kind}"
        return base if name is None else f"{base}/{urllib.parse.quote(name, safe='')}"

    def set_role(self, name: str, permissions: list[tuple[str, str]], timeout: float = 120) -> None:
        """Create or replace role ``name`` to hold exactly these (action, resource) pairs, e.g.
        ("can_read", "DAG:xdep_test_producer"), ("can_read", "DAG Runs"); as admin over REST (FAB only).

        A ``DAG:<id>`` resource exists only once the DAG was parsed: until then (at most timeout seconds)
        a pair naming it is refused (400) and asked again. Airflow 3: PATCH replaces a role's pairs.
        Airflow 2: PATCH only adds, so a role that has to lose any is deleted, created again and given
        back to its users."""
        if self.auth != "fab":
            raise RuntimeError(f"{self.name}: roles need auth='fab'")
        pairs = sorted(set(permissions))
        body = {
            "name": name,
            "actions": [{"action": {"name": a}, "resource": {"name": r}} for a, r in pairs],
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._put_role(name, pairs, body)
            except RuntimeError as e:
                text = str(e)
                unparsed = "HTTP 400" in text and "specified resource" in text and "DAG:" in text
                if not unparsed or time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def _put_role(self, name: str, pairs: list[tuple[str, str]], body: dict[str, Any]) -> None:
        role = self.api("GET", self._fab_path("roles", name), expect=(200, 404))
        if not role or "name" not in role:
            self.api("POST", self._fab_path("roles"), body)
            return
        # Airflow 3 replaces the pairs; Airflow 2 adds the missing ones (checking every pair first)
        self.api("PATCH", self._fab_path("roles", name), body)
        held = {(p["action"]["name"], p["resource"]["name"]) for p in role["actions"]}
        if self.major == 2 and held - set(pairs):
            holders = [u for u in self._users() if name in {r["name"] for r in u["roles"]}]
            self.api("DELETE", self._fab_path("roles", name), expect=(204,))
            self.api("POST", self._fab_path("roles"), body)
            for user in holders:
                self._patch_user(user, [r["name"] for r in user["roles"]])

    def _users(self) -> list[dict[str, Any]]:
        """Every FAB user (as REST lists them)."""
        users: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", f"{self._fab_path('users')}?limit=100&offset={len(users)}")
            users += page["users"]
            if not page["users"] or len(users) >= page["total_entries"]:
                return users

    def set_user(self, username: str, password: str, roles: list[str]) -> None:
        """Create user ``username`` with these roles (FAB), or give an existing one these roles and
        password; as admin over REST."""
        if self.auth != "fab":
            raise RuntimeError(f"{self.name}: users need auth='fab'")
        user = self.api("GET", self._fab_path("users", username), expect=(200, 404))
        if user and "username" in user:
            self._patch_user(user, roles, password)
            return
        body = {
            "username": username,
            "password": password,
            "first_name": username,
            "last_name": username,
            "email": f"{username}@example.com",
            "roles": [{"name": r} for r in roles],
        }
        self.api("POST", self._fab_path("users"), body)

    def _patch_user(self, user: dict[str, Any], roles: list[str], password: str | None = None) -> None:
        fields = ("username", "email", "first_name", "last_name")
        body: dict[str, Any] = {f: user[f] for f in fields} | {"roles": [{"name": r} for r in roles]}
        mask = "roles"
        if password is not None:
            body["password"], mask = password, "roles,password"
        self.api("PATCH", f"{self._fab_path('users', user['username'])}?update_mask={mask}", body)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "admin",
        password: str = "admin",
        token: str | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> Any:
        """Make an authenticated JSON REST call; return the decoded body (None if empty)."""
        if self.major == 2:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            return self._request(method, path, body, {"Authorization": f"Basic {basic}"}, expect)
        return self._request(
            method, path, body, {"Authorization": f"Bearer {token or self.token(user, password)}"}, expect
        )

    def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str], expect: tuple[int, ...]
    ) -> Any:
        """Send one JSON request; raise RuntimeError unless the status is in expect."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(6):
            req = urllib.request.Request(
                f"{self.base_url}{path}",
                data=data,
                method=method.upper(),
                headers={"Accept": "application/json", "Content-Type": "application/json", **headers},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as e:
                status, raw = e.code, e.read()
            except OSError as e:
                # a loaded machine can answer after the timeout (an Airflow 3 api-server's first task start
                # holds it for tens of seconds there): a read is safe to ask again
                timed_out = isinstance(e, TimeoutError) or isinstance(
                    getattr(e, "reason", None), TimeoutError
                )
                if method.upper() == "GET" and timed_out and attempt < 5:
                    continue
                raise
            # SQLite lets one writer in at a time: with the scheduler writing, a request's commit can
            # time out ("database is locked", answered as a 500 "Database error", rolled back). Again.
            if status == 500 and b"Database error" in raw and status not in expect and attempt < 5:
                time.sleep(1 + attempt)
                continue
            break
        if status not in expect:
            raise RuntimeError(f"{self.name}: {method} {path} -> HTTP {status}: {raw[:2000]!r}")
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            return raw.decode(errors="replace")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the DAG has been parsed into the DB, then make sure it is unpaused."""
        path = f"{self._api}/dags/{urllib.parse.quote(dag_id, safe='')}"
        deadline = time.monotonic() + timeout
        while (dag := self.api("GET", path, expect=(200, 404))) is None or "dag_id" not in dag:
            if time.monotonic() > deadline:
                errors = self.api("GET", f"{self._api}/importErrors", expect=(200, 404))
                raise RuntimeError(
                    f"{self.name}: DAG {dag_id} not parsed within {timeout}s; "
                    f"import errors: {errors}\n{self.tail_logs()}"
                )
            time.sleep(1)
        if dag.get("is_paused"):
            self.api(
                "PATCH", path + ("?update_mask=is_paused" if self.major == 2 else ""), {"is_paused": False}
            )

    def trigger(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        logical_date: Any = None,
        run_id: str | None = None,
        partition_key: str | None = None,
    ) -> str:
        """Trigger a DAG run via REST and return its run id (its deployment revived first);
        ``partition_key``: a DAG of a partitioned timetable, Airflow 3.3+."""
        self.revive()
        if logical_date is not None and not isinstance(logical_date, str):
            if getattr(logical_date, "tzinfo", None) is None:
                raise ValueError("logical_date must be timezone-aware")
            logical_date = logical_date.isoformat()
        body: dict[str, Any] = {"conf": conf or {}}
        if self.major == 3 or logical_date is not None:
            body["logical_date"] = logical_date
        if run_id:
            body["dag_run_id"] = run_id
        if partition_key is not None:
            body["partition_key"] = partition_key
        path = f"{self._api}/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
        return self.api("POST", path, body)["dag_run_id"]

    def wait_run(
        self, dag_id: str, run_id: str, states: tuple[str, ...] = ("success", "failed"), timeout: float = 180
    ) -> str:
        """Poll a DAG run until its state is one of states; return that state.

        One Airflow 3 race is not the run's doing: a deferred task whose trigger fires within seconds can be
        failed by the scheduler draining the executor's stale "success" from the worker's defer exit after
        the resumed attempt started (apache/airflow#72716, open). The scheduler records it as a "state
        mismatch" event for that task instance. A run that failed only so has those task instances cleared
        and is waited for again (at most twice, and only by a wait that accepts success), saying so on
        stderr; any other failure is returned."""
        path = (
            f"{self._api}/dags/{urllib.parse.quote(dag_id, safe='')}"
            f"/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        )
        deadline = time.monotonic() + timeout
        handled: set[tuple[str, int]] = set()
        for clears in range(3):
            while (state := self.api("GET", path)["state"]) not in states:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name}: run {dag_id}/{run_id} still {state!r} after {timeout}s\n"
                        f"{self.tail_logs()}"
                    )
                self.revive()
                time.sleep(0.5)
            hoped = state == "failed" and "success" in states
            raced = self._state_mismatches(dag_id, run_id) - handled if hoped else set()
            if not raced or clears == 2:
                return state
            print(
                f"{self.name}: {dag_id}/{run_id} failed by Airflow's stale defer-exit race "
                f"(apache/airflow#72716) on {sorted(raced)}; clearing and waiting again",
                file=sys.stderr,
            )
            handled |= raced
            self.cleared_runs.add((dag_id, run_id))
            self.api(
                "POST",
                f"{self._api}/dags/{urllib.parse.quote(dag_id, safe='')}/clearTaskInstances",
                {
                    "dry_run": False,
                    "dag_run_id": run_id,
                    "only_failed": True,
                    "reset_dag_runs": True,
                    "task_ids": sorted({task for task, _ in raced}),
                },
            )
            deadline = time.monotonic() + timeout
        raise AssertionError("unreachable")

    def _state_mismatches(self, dag_id: str, run_id: str) -> set[tuple[str, int]]:
        """(task id, try number) of each task instance of the run the scheduler failed for a state
        mismatch."""
        if self.major == 2:  # Airflow 2 words and records it differently; no Airflow 2 test DAG defers
            return set()
        query = urllib.parse.urlencode(
            {"dag_id": dag_id, "run_id": run_id, "event": "state mismatch", "limit": 100}
        )
        return {
            (e["task_id"], e["try_number"])
            for e in self.api("GET", f"{self._api}/eventLogs?{query}")["event_logs"]
        }

    def tail_logs(self, n: int = 40) -> str:
        """Return the last n lines of each component log, for error messages."""
        out = []
        for comp in dict.fromkeys((*self.components, *self._procs)):
            log = self.log_dir / f"{comp}.log"
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-n:]
                out.append(f"--- {self.name} {comp}.log (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(out)


def _kill_escaped(escaped: Iterable[tuple[int, int, str]]) -> None:
    """SIGKILL descendants that left a component's group (task processes call setpgid/setsid), each only
    if it is still the process seen then (same start time), and its own group if it leads one."""
    for pid, pgid, started in escaped:
        stat = _proc_stat(pid)
        if stat and stat[2] == started:
            if pgid == pid:
                _signal_group(pgid, signal.SIGKILL)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _signal_group(pgid: int, sig: int) -> None:
    """Send sig to a process group, ignoring groups that are already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Return whether any non-zombie process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc/self/stat").exists():
        return True
    return any(
        (st := _proc_stat(int(e.name))) and st[1] == pgid and st[3] != "Z"
        for e in Path("/proc").glob("[0-9]*")
    )
