"""MkDocs hooks (mkdocs.yml ``hooks:``): parts of the site generated from the code, so they cannot drift.

- ``<!-- cli-help -->`` in a page becomes the ``--help`` of the ``xdep-sensors`` parser and of each of
  its subcommands, taken from ``xdep_sensors.cli``.
- The benchmark plot is published from where the benchmark writes it (``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PLOTS = {"explanation/results.png": ROOT / "benchmarks" / "results" / "results.png"}


def cli_help() -> str:
    from xdep_sensors.cli import _parser

    os.environ.setdefault("COLUMNS", "100")  # argparse wraps at the terminal's width
    parser = _parser()
    parts = [("xdep-sensors --help", parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parts += [(f"xdep-sensors {name} --help", sub.format_help()) for name, sub in action.choices.items()]
    return "\n".join(f"```text\n$ {command}\n{text.rstrip()}\n```\n" for command, text in parts)


def on_page_markdown(markdown: str, **_: object) -> str:
    return markdown.replace("<!-- cli-help -->", cli_help()) if "<!-- cli-help -->" in markdown else markdown


def on_files(files, config):
    for uri, path in PLOTS.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
