"""Test-wide setup: an isolated downstream AIRFLOW_HOME, and the aioresponses/aiohttp 3.14 shim."""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

import aiohttp
import aioresponses.core
import pytest

from tests.helpers import ROOT, close_loop_clients


def pytest_configure(config):
    """The test process is the *downstream* deployment: give it its own home before Airflow is imported.

    pytest calls this before it imports a test module (``pythonpath`` in pyproject.toml puts the
    repository on ``sys.path``); the conftest files, imported before it, import no Airflow.
    """
    if "airflow" in sys.modules:
        raise pytest.UsageError("Airflow was imported before the tests set AIRFLOW_HOME (tests/conftest.py)")
    if "XDEP_TEST_HOME" not in os.environ:
        os.environ["XDEP_TEST_HOME"] = tempfile.mkdtemp(prefix="xdep-downstream-")
    os.environ["AIRFLOW_HOME"] = str(Path(os.environ["XDEP_TEST_HOME"]))
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "tests" / "integration" / "downstream_dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


class _ShimResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass ``stream_writer``, which aiohttp >= 3.14 requires."""

    def __init__(self, *args, stream_writer=None, **kwargs):
        if stream_writer is None:
            stream_writer = types.SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=stream_writer, **kwargs)


aioresponses.core.ClientResponse = _ShimResponse


@pytest.fixture(autouse=True)
async def _close_shared_clients():
    """After each test, close the HTTP clients its event loop shared (``RemoteAirflowHook.client_for``).

    A triggerer's loop and its clients live as long as the process; a test's loop ends with the test,
    and a client left open is only found by the garbage collector (aiohttp's "Unclosed client session").
    """
    yield
    await close_loop_clients()
