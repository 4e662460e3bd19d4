"""The approver-notification activity: an approval gate's webhook, POSTed once per gate.

The workflow starts it and moves on, so a webhook that is slow or down never holds a run up; Temporal
retries it (a refused POST, 4xx other than 408/429, is permanent). The URL is looked up here, in the
worker's own configuration, by composite tool and step: it may carry a token and must not reach
workflow history. Receivers get an `Idempotency-Key` header (`<run id>/<step>`) to drop the repeats
that an at-least-once delivery can cause.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from vmcp.composite.contracts import NOTIFY_APPROVERS, NotifyApproversInput
from vmcp.config.composite import ApprovalStep
from vmcp.config.models import VmcpConfig

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 10.0
_RETRYABLE_STATUS = {408, 429}


class ApproverNotifications:
    def __init__(self, config: VmcpConfig) -> None:
        self.config = config

    @activity.defn(name=NOTIFY_APPROVERS)
    async def notify_approvers(self, notice: NotifyApproversInput) -> dict[str, Any]:
        url = self.webhook_of(notice.tool, notice.step)
        body = {**asdict(notice), "web_ui": self.run_link(notice.run_id), "approve": approve_command(notice)}
        headers = {"Idempotency-Key": f"{notice.run_id}/{notice.step}"}
        try:
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as http:
                response = await http.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook of gate {notice.step!r} unreachable: {exc!r}") from None
        if response.is_success:
            logger.info("notified approvers of %s/%s (%s)", notice.run_id, notice.step, response.status_code)
            return {"status": response.status_code}
        permanent = response.is_client_error and response.status_code not in _RETRYABLE_STATUS
        raise ApplicationError(
            f"webhook of gate {notice.step!r} answered {response.status_code}",
            {"status": response.status_code, "body": response.text[:500]},
            non_retryable=permanent,
        )

    def webhook_of(self, tool: str, step: str) -> str:
        for composite in self.config.composite_tools:
            if composite.name != tool:
                continue
            gate = next((s for s in composite.steps if s.id == step), None)
            if isinstance(gate, ApprovalStep) and gate.webhook:
                return gate.webhook
        raise ApplicationError(
            f"this worker's configuration has no webhook for {tool}.{step} (is it older than the run's?)",
            non_retryable=True,
        )

    def run_link(self, run_id: str) -> str | None:
        base = self.config.temporal.web_ui_url
        if not base:
            return None
        namespace = quote(self.config.temporal.namespace, safe="")
        return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{quote(run_id, safe='')}"


def approve_command(notice: NotifyApproversInput) -> str:
    return f"vmcp approve {notice.run_id} --step {notice.step}"
