"""Test-wide setup: an isolated downstream AIRFLOW_HOME, and the aioresponses/aiohttp 3.14 shim."""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The test process is the *downstream* deployment: give it its own home before Airflow is imported.
if "XDEP_TEST_HOME" not in os.environ:
    os.environ["XDEP_TEST_HOME"] = tempfile.mkdtemp(prefix="xdep-downstream-")
_home = Path(os.environ["XDEP_TEST_HOME"])
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "tests" / "integration" / "downstream_dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

import aiohttp  # noqa: E402
import aioresponses.core  # noqa: E402


class _ShimResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass ``stream_writer``, which aiohttp >= 3.14 requires."""

    def __init__(self, *args, stream_writer=None, **kwargs):
        if stream_writer is None:
            stream_writer = types.SimpleNamespace(output_size=0)
        super().__init__(*args, stream_writer=stream_writer, **kwargs)


aioresponses.core.ClientResponse = _ShimResponse
