"""scripts/versions_table.py: the docs' versions table is checked against this run's matrix only."""

from __future__ import annotations

import importlib.util
import json

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("versions_table", ROOT / "scripts" / "versions_table.py")
versions_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(versions_table)


def _results(tmp_path, run, proved):
    path = tmp_path / "version-matrix.json"
    path.write_text(json.dumps({"run": run, "proved": proved}))
    return path


def test_check_refuses_another_runs_results(tmp_path, capsys):
    path = _results(tmp_path, "earlier-run", {"3.3.2": {"upstream": ["task_failure_alert"]}})
    assert versions_table.main(["--check", "--run", "this-run", "--results", str(path)]) == 1
    assert "not by this one" in capsys.readouterr().err


def test_check_compares_the_page_with_this_runs_results(tmp_path, capsys):
    path = _results(tmp_path, "this-run", {"3.3.2": {"upstream": ["task_failure_alert"]}})
    # a run that proved one thing does not match the committed table, which claims much more
    assert versions_table.main(["--check", "--run", "this-run", "--results", str(path)]) == 1
    assert "differs from what the matrix proved" in capsys.readouterr().err


def test_the_table_renders_what_was_proved():
    table = versions_table.render(
        {"2.9.3": {"upstream": ["task_failure_alert"]}, "3.3.2": {"downstream": ["watcher:asset_event"]}}
    )
    assert table.splitlines()[2:] == [
        "| 2.9.3 | v1 | task-failure alert | — |",
        "| 3.3.2 | v2 | — | watcher (triggerer) |",
    ]


def test_cloud_rows_follow_their_version_and_name_the_identity():
    table = versions_table.render(
        {
            "3.3.2 via MWAA": {"upstream": ["dag_run_wait:iam:defer"]},
            "3.3.2": {"upstream": ["dag_run_wait:password:defer"]},
            "2.11.2 via MWAA": {"upstream": ["asset_wait:iam:poke"]},
            "3.3.2 via Composer": {"upstream": ["dag_run_wait:google:poke"]},
        }
    )
    assert table.splitlines()[2:] == [
        "| 2.11.2 via MWAA | v1 | asset wait (poke) | — |",
        "| 3.3.2 | v2 | DAG-run wait, JWT from username/password (deferred) | — |",
        "| 3.3.2 via Composer | v2 | DAG-run wait, Google identity (OAuth 2 token) (poke) | — |",
        "| 3.3.2 via MWAA | v2 | DAG-run wait, AWS IAM identity (SigV4) (deferred) | — |",
    ]
