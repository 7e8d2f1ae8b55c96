"""Every example in the README and the docs runs, and the README's links land on a page of the site.

Python examples are complete DAG files: each is parsed by Airflow's ``DagBag`` (Airflow 3.3 here; a
block titled "Airflow 2" by the Airflow 2 in ``.venv-airflow2``), so a wrong parameter, a removed
name or a DAG that is never built fails here. Shell examples are checked against what they call:
the CLI's parser, the Makefile's targets, the connection JSON. The site itself is built strictly by
``make docs`` (broken internal links and anchors fail there).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import yaml
from markdown.extensions.toc import slugify

from tests.helpers import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
DOCS_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]


@dataclass
class Block:
    page: Path
    index: int
    lang: str
    title: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.index}"


def blocks(lang: str) -> list[Block]:
    found = []
    for page in PAGES:
        for index, match in enumerate(FENCE.finditer(page.read_text())):
            if match.group(1) == lang:
                code = SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), match.group(3))
                found.append(Block(page, index, lang, match.group(2), code))
    return found


def parse_dag_files(folder: Path, python: Path | None = None) -> dict:
    """``DagBag`` over each file of ``folder``: import errors and, per file, the DAG ids it built."""
    script = (  # one DagBag per file: the same DAG may be shown on two pages
        "import json, pathlib, sys\n"
        "try:\n    from airflow.dag_processing.dagbag import DagBag\n"  # Airflow 3
        "except ImportError:\n    from airflow.models import DagBag\n"  # Airflow 2
        "errors, files = {}, {}\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.py')):\n"
        "    try:\n        bag = DagBag(str(path), include_examples=False)\n"
        "    except TypeError:\n        bag = DagBag(str(path))\n"
        "    errors.update(bag.import_errors)\n"
        "    files[str(path)] = sorted(bag.dag_ids)\n"
        "print(json.dumps({'errors': errors, 'dags': files}))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    if python is not None:  # a separate Airflow install: its own throw-away home
        env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
        env.update(AIRFLOW_HOME=str(folder.parent / "airflow-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    out = subprocess.run(
        [str(python or sys.executable), "-c", script, str(folder)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class TestPythonExamples:
    def test_every_example_is_a_dag_file_that_airflow_parses(self, tmp_path):
        examples = blocks("python")
        assert len(examples) >= 20, "the docs lost their examples"
        by_version: dict[str, dict[str, Block]] = {"3": {}, "2": {}}
        for block in examples:
            version = "2" if "Airflow 2" in block.title else "3"
            folder = tmp_path / f"airflow{version}" / "dags"
            folder.mkdir(parents=True, exist_ok=True)
            file = folder / f"{block.page.stem}_{block.index}.py"
            file.write_text(block.code)
            by_version[version][str(file)] = block
        airflow2 = ROOT / ".venv-airflow2" / "bin" / "python"
        assert airflow2.exists(), "run `make bootstrap`: the Airflow 2 examples are parsed by .venv-airflow2"
        for version, files in by_version.items():
            result = parse_dag_files(
                tmp_path / f"airflow{version}" / "dags", airflow2 if version == "2" else None
            )
            errors = {files[f].name: e.strip().splitlines()[-1] for f, e in result["errors"].items()}
            assert errors == {}, errors
            no_dag = [block.name for file, block in files.items() if not result["dags"].get(file)]
            assert no_dag == [], f"examples that build no DAG: {no_dag}"

    def test_a_wrong_parameter_in_an_example_fails_the_parse(self, tmp_path):
        """The check above can fail: the README's sensor with two run selectors is an import error."""
        readme_sensor = next(
            b for b in blocks("python") if b.page.name == "README.md" and "RemoteDagRunSensor(" in b.code
        )
        broken = readme_sensor.code.replace(
            'external_dag_id="bears_producer"',
            'external_dag_id="bears_producer", run_id="a", logical_date="b"',
        )
        assert broken != readme_sensor.code
        (tmp_path / "dags").mkdir()
        (tmp_path / "dags" / "broken.py").write_text(broken)
        errors = parse_dag_files(tmp_path / "dags")["errors"]
        assert [e.strip().splitlines()[-1] for e in errors.values()] == [
            "ValueError: give at most one of run_id, logical_date, execution_delta, logical_date_fn, "
            "latest_after, partition_key; got run_id and logical_date"
        ]


COMMANDS = ("xdep-sensors ", "python -m xdep_sensors ", "make ")


def shell_lines(block: Block) -> list[list[str]]:
    """Our commands in a shell block (the CLI's, make's), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block.code)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.startswith(COMMANDS)]


class TestShellExamples:
    def test_cli_examples_parse(self):
        from xdep_sensors.cli.main import _parser

        calls = []
        for block in blocks("bash"):
            for words in shell_lines(block):
                if words[:1] == ["xdep-sensors"] or words[:3] == ["python", "-m", "xdep_sensors"]:
                    args = words[1:] if words[0] == "xdep-sensors" else words[3:]
                    _parser().parse_args(args)  # SystemExit (a failure) on a wrong option
                    calls.append(block.name)
        assert len(calls) >= 3
        with pytest.raises(SystemExit):  # what a wrong example would do
            _parser().parse_args(["doctor", "--asset-uri", "a", "--asset-name", "b"])

    def test_make_targets_exist(self):
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        used = {words[1] for block in blocks("bash") for words in shell_lines(block) if words[:1] == ["make"]}
        assert {"demo", "test"} <= used <= targets

    def test_connection_json_examples_are_remote_airflow_connections(self):
        from airflow.models.connection import Connection

        found = []
        for block in blocks("bash"):
            for value in re.findall(r"'(\{.*?\})'", block.code, re.S):
                conn = Connection.from_json(value, conn_id="example")
                assert conn.conn_type == "remote_airflow", block.name
                if conn.extra_dejson.get("auth") == "aws_mwaa":  # the AWS identity is the credential
                    from xdep_sensors.hooks.remote_airflow import config_from_connection

                    config = config_from_connection(conn, conn.extra_dejson)
                    assert config.mwaa_environment and not conn.password, block.name
                elif conn.extra_dejson.get("auth") == "google":  # the Google identity is the credential
                    from xdep_sensors.hooks.remote_airflow import config_from_connection

                    config = config_from_connection(conn, conn.extra_dejson)
                    assert config.base_url and config.gcp_conn_id and not conn.password, block.name
                else:
                    assert conn.host and conn.password, block.name
                found.append(block.name)
        assert len(found) >= 4


def headings(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slugify(m.group(1).strip(), "-") for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def page_for(url: str) -> tuple[Path, str]:
    """The docs source page (and anchor) a published URL of the site points to."""
    assert url.startswith(DOCS_URL), url
    path, _, anchor = url[len(DOCS_URL) :].partition("#")
    path = path.strip("/")
    page = DOCS / "index.md" if not path else DOCS / f"{path}.md"
    return page, anchor


class TestReadmeLinks:
    """The README is the package index's page too: its links must be absolute and land on the site."""

    def test_every_link_is_absolute(self):
        links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
        assert links and [link for link in links if not link.startswith("https://")] == []

    def test_docs_links_land_on_a_page_and_anchor(self):
        text = (ROOT / "README.md").read_text()
        urls = set(re.findall(r"\]\((https://[^)]+)\)", text)) | set(
            re.findall(r"(?<!\()(https://\S+?)\*\*", text)
        )
        urls |= set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"].values())
        checked = 0
        for url in sorted(u for u in urls if u.startswith(DOCS_URL)):
            page, anchor = page_for(url)
            assert page.exists(), f"{url}: no page {page.relative_to(ROOT)}"
            assert not anchor or anchor in headings(page), f"{url}: no heading #{anchor} in {page.name}"
            checked += 1
        assert checked >= 10

    def test_the_site_is_published_where_the_package_says(self):
        config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
        assert config["site_url"] == DOCS_URL

    def test_a_link_to_a_missing_anchor_is_caught(self):
        page, anchor = page_for(f"{DOCS_URL}getting-started/#no-such-heading")
        assert page.exists() and anchor not in headings(page)
        with pytest.raises(AssertionError):
            page_for("https://example.com/getting-started/")
