"""Fixtures of the unit tests (helpers are in ``tests/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.helpers import set_upstream_conn


@pytest.fixture
def upstream_password() -> str:
    """The password of connection ``upstream`` (a module that looks for it in what it stores sets its own)."""
    return "tok"


@pytest.fixture
def remote_conn(monkeypatch, upstream_password):
    """Connection ``upstream``: the mocked upstream, API v2 (``pytestmark = usefixtures("remote_conn")``
    gives it to every test of a module)."""
    set_upstream_conn(monkeypatch, upstream_password)
