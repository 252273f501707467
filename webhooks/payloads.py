"""What a delivery sends: the body (standard or Slack-compatible) and its signature headers
(Standard Webhooks 1.0)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from feedback.models import OutboxEvent

from .models import SECRET_PREFIX, Webhook

ALERT_EVENTS = {"alert.fired", "alert.resolved"}


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">``, keyed with the secret's
    base64-decoded bytes after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "Redress-Webhooks/1.0",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def body(*, webhook: Webhook, event: OutboxEvent) -> bytes:
    """The same bytes on every attempt: the timestamp is the event's, not the attempt's."""
    if webhook.format == Webhook.Format.SLACK:
        document: dict[str, Any] = slack_message(event.type, event.data, project=event.project_id)
    else:
        document = {
            "type": event.type,
            "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
            "data": event.data,
        }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _alert_text(event_type: str, data: dict[str, Any]) -> str:
    fired = event_type == "alert.fired"
    name = data.get("name") or f"rule {data.get('rule') or data.get('id')}"
    metric = data.get("metric", "?")
    value = data.get("value")
    interval = data.get("interval") or [data.get("ci_low"), data.get("ci_high")]
    head = ":rotating_light: Alert firing" if fired else ":white_check_mark: Alert resolved"
    shown = f"{value:.4g}" if isinstance(value, int | float) else str(value)
    text = f"{head}: *{name}* — {metric} = {shown}"
    if interval and None not in interval:
        text += f" (95% CI {interval[0]:.4g} to {interval[1]:.4g})"
    if data.get("volume") is not None:
        text += f", n = {data['volume']}"
    return text


def slack_message(event_type: str, data: dict[str, Any], *, project: int | None = None) -> dict:
    """A Slack incoming-webhook message: ``{"text", "blocks"}``. Alert events get the rule,
    metric, value, interval, volume and window; every other event a one-line summary."""
    if event_type in ALERT_EVENTS:
        text = _alert_text(event_type, data)
        fields = [
            {"type": "mrkdwn", "text": f"*{key.replace('_', ' ').title()}*\n{data[key]}"}
            for key in ("metric", "value", "volume", "window", "window_start", "window_end")
            if data.get(key) is not None
        ]
        blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if fields:
            blocks.append({"type": "section", "fields": fields[:10]})
        if data.get("url"):
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"<{data['url']}|Open in Redress>"}]})
        return {"text": text, "blocks": blocks}
    summary = ", ".join(
        f"{key}={value}" for key, value in data.items() if not isinstance(value, dict | list)
    )
    text = f"Redress: `{event_type}`" + (f" — {summary}" if summary else "")
    return {"text": text, "blocks": [{"type": "section",
                                      "text": {"type": "mrkdwn", "text": text}}]}
