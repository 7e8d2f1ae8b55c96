"""Provider metadata read by Airflow's providers manager (connection type, form, modules, links)."""

from __future__ import annotations

from xdep_sensors.version import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "xdep-sensors",
        "name": "Cross-deployment sensors (xdep_sensors)",
        "description": "Wait in one Airflow deployment for DAG runs and asset events of another, by pulling "
        "its REST API; no token is stored upstream.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Remote Airflow",
                "external-doc-url": "https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "Remote Airflow", "python-modules": ["xdep_sensors.hooks.remote_airflow"]}
        ],
        "sensors": [
            {
                "integration-name": "Remote Airflow",
                "python-modules": ["xdep_sensors.sensors.dag_run", "xdep_sensors.sensors.asset"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Remote Airflow",
                "python-modules": [
                    "xdep_sensors.triggers.waits",
                    "xdep_sensors.triggers.watchers",
                    "xdep_sensors.triggers.alerts",
                ],
            }
        ],
        "extra-links": [
            "xdep_sensors.links.UpstreamRunLink",
            "xdep_sensors.links.UpstreamAssetLink",
        ],
        "connection-types": [
            {
                "hook-class-name": "xdep_sensors.hooks.remote_airflow.RemoteAirflowHook",
                "hook-name": "Remote Airflow deployment",
                "connection-type": "remote_airflow",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "Deployment URL (MWAA: web server URL, optional)",
                        "login": "Username (leave empty with an API token)",
                        "password": "API token or password",
                    },
                    "placeholders": {
                        "host": "https://<id>.astronomer.run/<slug> or http://airflow.internal:8080",
                        "login": "only for username/password auth",
                        "password": (
                            "read-only API token (Astro Deployment/Workspace token) or the user's password"
                        ),
                    },
                },
                "conn-fields": {
                    "auth": {
                        "label": "Authentication",
                        "description": (
                            "Empty: the token or login/password fields. aws_mwaa: an Amazon MWAA "
                            "environment through InvokeRestApi, signed with the AWS connection's identity "
                            "(needs xdep-sensors[amazon]; the host, optional, is its web server URL, "
                            "for links). google: a Cloud Composer web server (the host) with the Google "
                            "connection's access tokens (needs xdep-sensors[google])."
                        ),
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["", "aws_mwaa", "google", None],
                            "default": "",
                        },
                    },
                    "mwaa_environment": {
                        "label": "MWAA environment name",
                        "description": "With auth aws_mwaa: the environment's name.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "aws_conn_id": {
                        "label": "AWS connection id",
                        "description": (
                            "With auth aws_mwaa: the Airflow AWS connection whose identity signs the calls "
                            "(default aws_default; without keys, the default credential chain)."
                        ),
                        "schema": {"type": ["string", "null"], "default": "aws_default"},
                    },
                    "gcp_conn_id": {
                        "label": "Google connection id",
                        "description": (
                            "With auth google: the Airflow Google connection whose identity's access tokens "
                            "the calls carry (default google_cloud_default)."
                        ),
                        "schema": {"type": ["string", "null"], "default": "google_cloud_default"},
                    },
                    "api_version": {
                        "label": "REST API version",
                        "description": "auto (probe once), v2 (Airflow 3) or v1 (Airflow 2.9-2.11).",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["auto", "v2", "v1", None],
                            "default": "auto",
                        },
                    },
                    "verify": {
                        "label": "TLS verification",
                        "description": "true (default), false, or the path of a CA bundle.",
                        "schema": {"type": ["string", "null"], "default": "true"},
                    },
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Per-request timeout.",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "ui_url": {
                        "label": "Upstream UI URL",
                        "description": (
                            "Base URL for links to the upstream UI, when it differs from the Deployment URL."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_name": {
                        "label": "Client name",
                        "description": (
                            "This deployment's name, sent in the User-Agent so the upstream team sees who "
                            "polls (default: the XDEP_SENSORS_CLIENT_NAME environment variable)."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
