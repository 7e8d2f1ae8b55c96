"""MkDocs hooks (mkdocs.yml ``hooks:``): parts of the site generated from the code, so they cannot drift.

- ``<!-- cli-help -->`` in a page becomes the ``--help`` of the ``xdep-sensors`` parser and of each of
  its subcommands, taken from ``xdep_sensors.cli``.
- ``<!-- include: FILE -->`` becomes FILE (a table a run generated, e.g. ``benchmarks/results/*.md``)
  with its headings moved under the heading that includes it.
- The benchmark plot is published from where the benchmark writes it (``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PLOTS = {"explanation/results.png": ROOT / "benchmarks" / "results" / "results.png"}


def cli_help() -> str:
    from xdep_sensors.cli.main import _parser

    os.environ.setdefault("COLUMNS", "100")  # argparse wraps at the terminal's width
    parser = _parser()
    parts = [("xdep-sensors --help", parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parts += [
                (f"xdep-sensors {name} --help", sub.format_help()) for name, sub in action.choices.items()
            ]
    return "\n".join(f"```text\n$ {command}\n{text.rstrip()}\n```\n" for command, text in parts)


INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.M)
HEADING = re.compile(r"^(#{1,6}) ", re.M)


def include(markdown: str) -> str:
    """Each include directive, replaced by its file, headings one level below the enclosing one."""
    out, pos = [], 0
    for match in INCLUDE.finditer(markdown):
        before = markdown[pos : match.start()]
        enclosing = [len(m.group(1)) for m in HEADING.finditer(markdown[: match.start()])]
        shift = enclosing[-1] if enclosing else 1
        text = (ROOT / match.group(1)).read_text()
        out += [before, HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", text)]
        pos = match.end()
    return "".join(out) + markdown[pos:]


def on_page_markdown(markdown: str, **_: object) -> str:
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", cli_help())
    return include(markdown)


def on_files(files, config):
    for uri, path in PLOTS.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
