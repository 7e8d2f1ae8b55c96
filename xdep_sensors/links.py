"""Operator extra links to the upstream UI; the sensor stores the URL in XCom when it knows it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XCom
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class _XComLink(BaseOperatorLink):
    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        """Store the link's URL for this try (nothing when unknown)."""
        if url:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)


class UpstreamRunLink(_XComLink):
    """Opens the matched run in the upstream deployment's UI."""

    name = "Upstream run"


class UpstreamAssetLink(_XComLink):
    """Opens the watched asset in the upstream deployment's UI."""

    name = "Upstream asset"
