"""The Airflow plugin shipped with xdep-sensors: the Remote dependencies page (``xdep_sensors.ui``).

Registered through the ``airflow.plugins`` entry point (the provider info's ``plugins`` key is read
only with ``[core] lazy_discover_providers = False``); the app is built on first use.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from xdep_sensors.version_compat import airflow_version

URL_PREFIX = "/xdep-sensors"
PAGE = f"{URL_PREFIX}/dependencies"


class XdepSensorsPlugin(AirflowPlugin):
    """Mounts the Remote dependencies page and, on Airflow 3.1+, adds it to the UI's Browse menu."""

    name = "xdep_sensors"

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from xdep_sensors.plugins.page import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Remote dependencies"}]

    @property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        if airflow_version() < (
            3,
            1,
        ):  # 3.0 has no plugin views: the page is at its URL, the JSON takes a token
            return []
        return [
            {
                "name": "Remote dependencies",
                "href": PAGE,
                "destination": "nav",
                "category": "browse",
                "url_route": "xdep-sensors",
            }
        ]
