"""The Remote dependencies page: a FastAPI app the Airflow API server mounts at ``/xdep-sensors``.

Both routes need an authenticated Airflow user (``GetUserDep``) and show only DAGs that user may read.
Imported by the API server only. See ``docs/guides/remote-dependencies.md``.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from xdep_sensors.plugins.dependencies import UpstreamFacts, asset_labels, compose, read_deployment

PREFIX = "/xdep-sensors"
FACTS = UpstreamFacts()

app = FastAPI(title="xdep-sensors: Remote dependencies", docs_url=None, redoc_url=None, openapi_url=None)


def readable_dag_ids(user: Any) -> set[str]:
    """The DAG ids this user may read, per the deployment's auth manager."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _read(user: Any) -> dict[str, Any]:
    from airflow.utils.session import create_session

    dag_ids = readable_dag_ids(user)
    with create_session() as session:
        return read_deployment(dag_ids, session)


def matches(item: dict[str, Any], q: str) -> bool:
    """Whether a dependency mentions ``q`` (case-insensitive) in its ids, connection or target."""
    if not q:
        return True
    hay = " ".join(
        str(item.get(k, "")) for k in ("dag_id", "task_id", "remote_conn_id", "kind", "status", "trigger")
    )
    hay += (
        " "
        + str(item.get("upstream"))
        + " "
        + str(item.get("assets", ""))
        + " "
        + str(item.get("schedules", ""))
    )
    return q.lower() in hay.lower()


async def dependencies_json(user: Any, q: str = "") -> dict[str, Any]:
    body = await compose(await run_in_threadpool(_read, user), FACTS)
    body["dependencies"] = [item for item in body["dependencies"] if matches(item, q)]
    return body


@app.get("/api/dependencies")
async def api_dependencies(user: GetUserDep, q: str = Query("", max_length=200)) -> dict[str, Any]:
    """Every remote dependency declared in this deployment that the user may read, with its live state."""
    return await dependencies_json(user, q)


@app.get("/dependencies", response_class=HTMLResponse)
async def page(request: Request, user: GetUserDep, q: str = Query("", max_length=200)) -> HTMLResponse:
    body = await dependencies_json(user, q)
    root = request.scope.get("root_path", "")
    airflow_root = root[: -len(PREFIX)] if root.endswith(PREFIX) else ""
    return HTMLResponse(render(body, q=q, airflow_root=airflow_root))


# --- the page ----------------------------------------------------------------------------------------

STATUS_COLOURS = {
    "ok": "#008000",
    "waiting": "#9370db",
    "failed": "#d00000",
    "unreachable": "#ff8c00",
    "auth failed": "#ff8c00",
    "upstream error": "#ff8c00",
    "cannot see DAG": "#ff8c00",
    "cannot see producer": "#ff8c00",
    "idle": "#808080",
}
STATUS_TEXT = {
    "ok": "last wait succeeded",
    "waiting": "waiting now",
    "failed": "last wait failed",
    "unreachable": "upstream unreachable",
    "auth failed": "the upstream refuses the connection's credentials",
    "upstream error": "the upstream answers with an error",
    "cannot see DAG": "the connection's user cannot read the upstream DAG (or it does not exist)",
    "cannot see producer": "the connection's user may not read a producing DAG: its events are hidden",
    "idle": "no wait yet",
}

CSS = """
:root { color-scheme: light dark; --fg: #1a202c; --muted: #4a5568; --line: #e2e8f0; --bg: #fff; \
--card: #f7fafc;
        --link: #017cee; }
@media (prefers-color-scheme: dark) { :root { --fg: #e2e8f0; --muted: #a0aec0; --line: #2d3748; --bg: #1a202c;
        --card: #171923; --link: #63b3ed; } }
body { font-family: Inter, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; font-size: 14px;
       color: var(--fg); background: var(--bg); margin: 0; padding: 16px 24px; }
h1 { font-size: 20px; font-weight: 600; margin: 0 0 4px; }
h2 { font-size: 16px; font-weight: 600; margin: 24px 0 4px; }
p.lead, .health, .muted { color: var(--muted); }
a { color: var(--link); text-decoration: none; } a:hover { text-decoration: underline; }
form { margin: 12px 0; } input[type=search] { padding: 6px 10px; width: 320px; border: 1px solid var(--line);
       border-radius: 6px; background: var(--bg); color: var(--fg); }
button { padding: 6px 12px; border-radius: 6px; border: 1px solid var(--line); background: var(--card);
         color: var(--fg); cursor: pointer; }
table { border-collapse: collapse; width: 100%; margin-top: 6px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; \
letter-spacing: .03em; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; \
white-space: nowrap; }
.dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 6px; }
code { font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _link(href: str | None, text: str, top: bool = False) -> str:
    if not href:
        return _e(text)
    return f'<a href="{_e(href)}"{" target=_top" if top else ""}>{_e(text)}</a>'


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def _target(up: dict[str, Any]) -> str:
    parts = []
    if up.get("external_dag_id"):
        parts.append(f"DAG <code>{_e(up['external_dag_id'])}</code>")
    for key, label in (
        ("task_ids", "tasks"),
        ("task_group_id", "task group"),
        ("run_id", "run"),
        ("logical_date", "logical date"),
        ("latest_after", "latest after"),
        ("partition_key", "partition"),
    ):
        if up.get(key):
            value = ", ".join(map(str, up[key])) if isinstance(up[key], list) else up[key]
            parts.append(f"{label} <code>{_e(value)}</code>")
    refs = asset_labels(up)
    if refs:
        parts.append("asset " + ", ".join(f"<code>{_e(r)}</code>" for r in refs))
    if up.get("require") and up["require"] != "all":
        parts.append(f"require {_e(up['require'])}")
    return "; ".join(parts) or '<span class="muted">(templated)</span>'


def _now(item: dict[str, Any]) -> str:
    now = item.get("upstream_now") or {}
    if "error" in now:
        return f'<span class="muted">{_e(now["error"])}</span>'
    if "latest_run" in now:
        run = now["latest_run"]
        success = now.get("last_success")
        text = f"latest run {_link(now.get('url'), run['run_id'])} {_e(run['state'])}"
        if success:
            text += f"; last success {_e(_ago(now.get('lag_s')))}"
        return text
    if "latest_event" in now:
        event = _link(now.get("url"), "#" + str(now["latest_event"]["event_id"]))
        return f"latest event {event} {_e(_ago(now.get('lag_s')))}"
    return f'<span class="muted">{_e(now.get("note", ""))}</span>'


def _waits(item: dict[str, Any]) -> str:
    rows = []
    for wait in item.get("in_flight") or []:
        target = _target(wait["target"]) if wait.get("target") else ""
        for progress in wait.get("partitions") or []:  # a roll-up's window, as the upstream shows it
            line = progress.get("line") or progress.get("error", "")
            target += f"<br>{_e(progress.get('asset', ''))}: {_e(line)}"
        rows.append(
            f"{_e(wait['state'])} since {_e((wait.get('since') or '')[:19].replace('T', ' '))} "
            f"<span class=muted>(run {_e(wait['run_id'])})</span>" + (f"<br>{target}" if target else "")
        )
    recent = item.get("recent") or []
    if recent:
        status = {"success": "ok", "skipped": "idle"}
        rows.append(
            "recent: "
            + " ".join(
                f'<span class="dot" title="{_e(r["run_id"])}: {_e(r["state"])}" style="background:'
                f'{STATUS_COLOURS[status.get(r["state"], "failed")]}">'
                f"</span>"
                for r in recent
            )
        )
    return "<br>".join(rows)


def _row(item: dict[str, Any], airflow_root: str) -> str:
    state = item.get("status", "idle")
    badge = (
        f'<span class="badge" style="background:{STATUS_COLOURS.get(state, "#808080")}" '
        f'title="{_e(STATUS_TEXT.get(state, state))}">{_e(state)}</span>'
    )
    if item["kind"] == "watcher":
        dags = ", ".join(
            _link(f"{airflow_root}/dags/{quote(d, safe='')}", d, top=True) for d in item["schedules"]
        )
        assets = ", ".join(f"<code>{_e(a['uri'])}</code>" for a in item["assets"])
        who = f"{_e(item['trigger'])} &rarr; {assets}<br><span class=muted>schedules</span> {dags or '—'}"
    else:
        dag = _link(f"{airflow_root}/dags/{quote(item['dag_id'], safe='')}", item["dag_id"], top=True)
        who = f"{dag} <span class=muted>/</span> <code>{_e(item['task_id'])}</code>"
    kind = {"dag_run_sensor": "DAG-run sensor", "asset_sensor": "asset sensor", "watcher": "watcher"}[
        item["kind"]
    ]
    return (
        f'<tr data-status="{_e(state)}"><td>{badge}</td><td>{who}</td><td>{_e(kind)}<br>'
        f"<span class=muted>{_e(item.get('mode', ''))}</span></td><td>{_target(item['upstream'])}</td>"
        f"<td>{_now(item)}</td><td>{_waits(item)}</td></tr>"
    )


def _health(conn_id: str, up: dict[str, Any]) -> str:
    href = up.get("ui") or up.get("host") or ""
    where = _link(href if href.startswith(("http://", "https://")) else None, up.get("host") or "(no host)")
    if up.get("error"):
        reach = "reachable" if up.get("reachable") else "not reachable"
        return (
            f'<span class="dot" style="background:{STATUS_COLOURS["unreachable"]}"></span>'
            f"{where}: {reach}: {_e(up['error'])}"
        )
    auth = {True: "authenticated", False: "authentication failed", None: "authentication not checked"}[
        up.get("authenticated")
    ]
    return (
        f'<span class="dot" style="background:{STATUS_COLOURS["ok"]}"></span>{where}: reachable, '
        f"Airflow {_e(up.get('version'))} (API {_e(up.get('api'))}), {auth}; "
        f"checked {_e((up.get('checked_at') or '')[11:19])} UTC"
    )


def render(body: dict[str, Any], *, q: str = "", airflow_root: str = "") -> str:
    """The page: a health line and a table per upstream connection."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in body["dependencies"]:
        groups.setdefault(item["remote_conn_id"], []).append(item)
    sections = []
    for conn_id in sorted(groups):
        up = body["upstreams"].get(conn_id, {})
        rows = "".join(_row(item, airflow_root) for item in groups[conn_id])
        sections.append(
            f'<section data-conn="{_e(conn_id)}"><h2>Upstream <code>{_e(conn_id)}</code></h2>'
            f'<div class="health">{_health(conn_id, up)}</div>'
            "<table><thead><tr><th>state</th><th>downstream</th><th>kind</th><th>waits on</th>"
            f"<th>upstream now</th><th>waits</th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    count = len(body["dependencies"])
    empty = "" if sections else '<p class="muted">No remote dependency matches.</p>'
    generated = (
        datetime.fromisoformat(body["generated_at"]).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Remote dependencies</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><h1>Remote dependencies</h1>
<p class="lead">What this deployment's DAGs wait on in other deployments (xdep-sensors): \
{count} dependenc{"y" if count == 1 else "ies"}
across {len(groups)} upstream connection{"" if len(groups) == 1 else "s"}; upstreams read at most \
every 30 s. {generated} UTC.</p>
<form method="get"><input type="search" name="q" value="{_e(q)}" \
placeholder="Filter: DAG, task, asset, connection, state">
<button type="submit">Filter</button></form>
{empty}{"".join(sections)}
</body></html>"""
