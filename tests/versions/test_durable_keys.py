"""Pure parts of xdep_sensors.durable (the real-triggerer proof is
tests/integration/test_versions_downstream.py)."""

from __future__ import annotations

import asyncio

import pytest

from xdep_sensors.triggers.state import VARIABLE_PREFIX, TriggerState, variable_key


class TestVariableKey:
    def test_short_keys_keep_their_name(self):
        assert variable_key("asset_event:up:dag-1.x") == VARIABLE_PREFIX + "asset_event:up:dag-1.x"

    def test_asset_uris_become_url_safe_and_stay_distinct(self):
        # the Task SDK puts the key in a URL path unescaped; Airflow 3.0.6 answers 404 to a "/" there
        a, b = variable_key("assets:up:file://include/bears"), variable_key("assets:up:file:__include_bears")
        assert a.startswith(VARIABLE_PREFIX + "assets:up:file:__include_bears~")
        assert "/" not in a and a != b

    def test_long_keys_fit_a_variable_and_stay_distinct(self):
        a, b = "k" * 400 + "a", "k" * 400 + "b"
        assert len(variable_key(a)) == 250 and len(variable_key(b)) == 250
        assert variable_key(a) != variable_key(b)


class TestTriggerState:
    def test_a_trigger_without_a_store_uses_variables(self):
        class Plain:  # like every trigger on Airflow < 3.3: no asset_state_store attribute at all
            pass

        assert TriggerState.for_trigger(Plain()).backend == "variable"

    def test_values_must_be_objects(self):
        with pytest.raises(TypeError, match="dicts"):
            asyncio.run(TriggerState().aset("k", [1, 2]))  # type: ignore[arg-type]
