"""Upstreams on Cloud Composer: every request carries a Google access token of the connection's identity.

The Google side is local doubles (devtools/google_doubles.py): a token endpoint that verifies each
service-account grant's signature and issues short-lived tokens, and a front per upstream that lets
through only the tokens it issued, before the real upstreams (Airflow 3.3 and 2.11). The library
reaches them through real Airflow Google connections (key files), the Google provider's
``GoogleBaseHook`` and google-auth. The downstream runs here (``dag.test()``, triggers in process).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.integration.conftest import NEWCOMER, READER, Composer
from tests.integration.test_asset_sensor_live import clear_cursor, events_of, produce_later
from tests.integration.test_dag_run_sensor_live import run_downstream
from tests.integration.test_mwaa_live import waits_share_one_poll
from tests.leakscan import hits, scan_files

pytestmark = pytest.mark.integration

LABEL = {"v2": "3.3.2 via Composer", "v1": "2.11.2 via Composer"}  # the versions table's rows


@pytest.fixture(params=["v2", "v1"])
def api(request) -> str:
    return request.param


def secrets(composer: Composer) -> list[bytes]:
    """The keys' private halves (their base64 body lines) and every access token issued."""
    pems = [k["private_key"] for k in composer.keys.values()]
    lines = [line for pem in pems for line in pem.splitlines() if line and not line.startswith("-----")]
    return [line.encode() for line in lines] + [t.encode() for t in composer.tokens.issued()]


def doctor(capsys, conn_id: str, *args: str) -> tuple[int, str]:
    from xdep_sensors.cli.main import main

    code = main(["doctor", "--conn-id", conn_id, *args])
    return code, capsys.readouterr().out


def test_doctor_through_composer(composer, api, capsys):
    code, out = doctor(capsys, composer.conn_id(api), "--dag-id", "xdep_test_producer")
    assert code == 0, out
    assert "auth: Google connection 'gcp_reader'" in out and f"REST API {api}" in out
    assert "dag xdep_test_producer: exists" in out
    assert composer.fronts[api].count(status=200, email=READER) > 0  # it went through the front


@pytest.mark.parametrize(
    ("who", "words"),
    [
        ("revoked", ["Google refused the key of Google connection 'gcp_revoked' (invalid_grant)", "new key"]),
        ("bad_scope", ["no token with the cloud-platform scope", "cloud-platform"]),
        ("newcomer", ["roles/composer.user", "register it as Viewer"]),
    ],
)
def test_doctor_names_each_google_fault_with_the_fix(composer, api, capsys, who, words):
    code, out = doctor(capsys, f"{composer.conn_id(api)}_{who}")
    assert code == 1, out
    assert all(w in out for w in words), out
    assert hits("doctor", out.encode(), secrets(composer)) == []


@pytest.mark.parametrize("variant", ["defer", "poke"])
def test_dag_run_sensor(composer, api, downstream_db, out_file, variant, matrix_record):
    upstream = composer.upstreams[api]
    run_id = upstream.trigger(conf={"sleep": 3}, logical_date=datetime.now(timezone.utc))
    conf = {"conn": composer.conn_id(api), "run_id": run_id, "out": str(out_file)}
    assert run_downstream(f"xdep_ds_by_id_{variant}", conf) == "success"
    result = json.loads(out_file.read_text())
    assert (result["run_id"], result["state"]) == (run_id, "success")
    assert result["url"].startswith(composer.fronts[api].base_url)  # the web server: the connection's host
    matrix_record(LABEL[api], "upstream", f"dag_run_wait:google:{variant}")


def test_task_group_and_asset_sensor(composer, api, downstream_db, out_file, matrix_record):
    upstream, conn = composer.upstreams[api], composer.conn_id(api)
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    assert run_downstream("xdep_ds_group_defer", {"conn": conn, "run_id": run_id, "out": str(out_file)}) == (
        "success"
    )
    assert json.loads(out_file.read_text())["tasks"] == {"grp.a": "success", "grp.b": "success"}
    matrix_record(LABEL[api], "upstream", "task_group_filter")
    clear_cursor("xdep_ds_asset_uri_defer")
    box = produce_later(upstream, extra={"via": "composer"})
    assert run_downstream("xdep_ds_asset_uri_defer", {"conn": conn, "out": str(out_file)}) == "success"
    box["timer"].join()
    (event,) = events_of(out_file)
    assert event["extra"] == {"via": "composer"} and event["source_run_id"] == box["run_id"]
    matrix_record(LABEL[api], "upstream", "asset_wait:google:defer")


def test_a_wait_outlives_several_short_lived_tokens(composer, downstream_db, out_file, monkeypatch):
    """Tokens of 4 s, a wait of about 15 s: renewed before each expires, never refused."""
    upstream = composer.upstreams["v2"]
    monkeypatch.setattr(composer.tokens, "lifetime", 4.0)
    grants, refused = composer.tokens.grants(READER), composer.fronts["v2"].unauthorized
    run_id = upstream.trigger(conf={"sleep": 15}, logical_date=datetime.now(timezone.utc))
    conf = {"conn": composer.conn_id("v2"), "run_id": run_id, "out": str(out_file)}
    assert run_downstream("xdep_ds_by_id_defer", conf) == "success"
    assert composer.tokens.grants(READER) - grants >= 3  # several tokens: one per ~3 s of waiting
    assert composer.fronts["v2"].unauthorized == refused  # none expired in flight


def test_a_token_endpoint_that_is_down_for_a_while_does_not_fail_the_wait(composer, downstream_db, out_file):
    """Down for 6 requests (google-auth tries 3 times per renewal): the renewal fails twice, the wait
    backs off by the one rule and succeeds."""
    upstream = composer.upstreams["v2"]
    run_id = upstream.trigger(conf={}, logical_date=datetime.now(timezone.utc))
    composer.tokens.lifetime = 0.5  # every look needs a new token
    try:
        composer.tokens.down(6)
        conf = {"conn": composer.conn_id("v2"), "run_id": run_id, "out": str(out_file)}
        assert run_downstream("xdep_ds_by_id_defer", conf) == "success"
    finally:
        composer.tokens.lifetime = 3600.0
    assert [c.outcome for c in composer.tokens.calls].count("internal_failure") >= 6


def test_many_waits_share_one_poll(composer, monkeypatch):
    waits_share_one_poll(
        monkeypatch,
        composer.upstreams["v2"],
        composer.conn_id("v2"),
        lambda: composer.fronts["v2"].count(email=READER),
    )


def test_no_key_or_token_anywhere(composer, downstream_db, out_file, capfd):
    """After the paths above (and a failed wait of an unregistered identity): no private key line and
    no access token in what was printed, in the downstream's files (its DB: XCom, trigger kwargs,
    rendered fields; logs) or in the errors."""
    from xdep_sensors import RemoteAirflowHook
    from xdep_sensors.errors import XdepError

    conf = {"conn": f"{composer.conn_id('v2')}_newcomer", "run_id": "x", "out": str(out_file)}
    assert run_downstream("xdep_ds_by_id_defer", conf) == "failed"
    assert composer.fronts["v2"].count(email=NEWCOMER) > 0
    found = secrets(composer)
    assert hits("printed", "".join(capfd.readouterr()).encode(), found) == []
    assert scan_files(Path(os.environ["AIRFLOW_HOME"]), found) == []
    with pytest.raises(XdepError) as info:
        RemoteAirflowHook(conf["conn"]).run(lambda c: c.get_dag("xdep_test_producer"))
    assert hits("error", (str(info.value) + repr(info.value)).encode(), found) == []
