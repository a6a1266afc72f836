"""The school's own system as a delivery channel: signed JSON POSTs (SPEC section 3).

Transport only. `bridge.school_webhooks` decides what to send and queues it; this sends one
queued body as it is, signed with the secret of the `[[webhooks]]` entry whose unit and
URL match, and classifies the answer for the delivery engine:

- 2xx: taken.
- 408, 425, 429, 5xx, timeouts and connection errors: try again later (Retry-After kept).
- Any other answer (400, 401, 404, ...): permanent; the delivery is `failed` and an
  operator can queue it again with `skolebro deliveries retry` once the receiver is fixed.

Errors and logs carry status codes and the delivery id, never the body or the URL's query.
"""

from __future__ import annotations

import json
import logging

import aiohttp

from bridge.config import Settings
from bridge.domain import Outgoing, SendOutcome, SendResult
from bridge.school_webhooks import sign

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 15.0
RETRYABLE_STATUS = {408, 425, 429}
USER_AGENT = "skolebro-webhooks/1"


class WebhookSender:
    """Sends queued webhook bodies; reads every hook's secret up front (a missing one
    is a one-line config error at start, not a failed send later)."""

    def __init__(self, settings: Settings) -> None:
        self.secrets = {
            (hook.unit_id, hook.url): settings.webhook_secret(i)
            for i, hook in enumerate(settings.webhooks)
        }
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def send(self, out: Outgoing) -> SendResult:
        try:
            unit_id = json.loads(out.body)["absence"]["unit_id"]
        except (ValueError, KeyError, TypeError):
            return SendResult(SendOutcome.PERMANENT, error="unreadable webhook body")
        secret = self.secrets.get((unit_id, out.address))
        if secret is None:  # the hook was taken out of the config since it was queued
            return SendResult(SendOutcome.PERMANENT, error="no such webhook configured")
        body = out.body.encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Skolebro-Signature": sign(secret, body),
            "X-Skolebro-Delivery": out.delivery_id,
        }
        try:
            async with self._client().post(out.address, data=body, headers=headers) as response:
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as e:
            log.info("webhook %s: %s", out.delivery_id, type(e).__name__)
            return SendResult(SendOutcome.TRANSIENT, error=type(e).__name__)
        if 200 <= status < 300:
            return SendResult(SendOutcome.SENT)
        error = f"http {status}"
        log.info("webhook %s: %s", out.delivery_id, error)
        if status in RETRYABLE_STATUS or status >= 500:
            return SendResult(SendOutcome.TRANSIENT, error=error, retry_after=retry_after)
        return SendResult(SendOutcome.PERMANENT, error=error)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _seconds(value: str | None) -> float | None:
    try:
        return min(max(float(value), 0.0), 3600.0) if value else None
    except ValueError:
        return None
