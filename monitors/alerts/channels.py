"""Slack and Telegram: where the secrets come from, what a request looks like, and what an
answer means. Nothing here logs: callers log `Channel.redact(...)` of whatever they print, so
a webhook URL or a bot token (both are credentials) never reaches a log, a metric or a status.

    SQT_SLACK_WEBHOOK_URL    https://hooks.slack.com/services/...   (a Slack incoming webhook)
    SQT_TELEGRAM_BOT_TOKEN   123456:ABC...                          (with SQT_TELEGRAM_CHAT_ID)
    SQT_TELEGRAM_CHAT_ID     -1001234567890
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import aiohttp

from bus.secrets import ALERTS

SECRET_VARIABLES = ALERTS  # cli/config.py must not read them as config keys (bus/secrets.py)
SLACK_URL, TELEGRAM_TOKEN, TELEGRAM_CHAT = ALERTS

ChannelName = Literal["slack", "telegram"]
Result = Literal["ok", "rate_limited", "transient", "permanent"]
MAX_RETRY_AFTER_S = 3_600.0  # a channel asking for more is asked again after an hour
_BODY_KEPT = 65_536
REDACTED = "<redacted>"


class ChannelConfigError(ValueError):
    """A channel's environment is wrong (names the variable, never its value)."""


class Outcome(NamedTuple):
    result: Result
    status: int = 0  # HTTP status; 0 when no answer came
    retry_after: float = 0.0  # seconds, for rate_limited
    detail: str = ""  # what went wrong, already redacted by the caller's channel


@dataclass(frozen=True)
class Channel:
    name: ChannelName
    url: str
    chat_id: str = ""  # Telegram only
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # a channel printed by accident shows no secret
        return f"Channel({self.name})"

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def body(self, text: str) -> dict[str, Any]:
        if self.name == "slack":
            return {"text": text}
        return {"chat_id": self.chat_id, "text": text, "disable_web_page_preview": True}

    async def send(self, session: aiohttp.ClientSession, text: str, timeout_s: float) -> Outcome:
        try:
            async with session.post(self.url, json=self.body(text), timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                data = await resp.content.read(_BODY_KEPT)
                outcome = judge(self.name, resp.status, resp.headers, data)
        except asyncio.TimeoutError:
            return Outcome("transient", detail=f"no answer within {timeout_s:g} s")
        except aiohttp.ClientError as exc:  # connection refused, reset, DNS, TLS, a broken answer
            return Outcome("transient", detail=self.redact(f"{type(exc).__name__}: {exc}")[:300])
        return outcome._replace(detail=self.redact(outcome.detail)[:300])


def from_env(environ: Mapping[str, str], telegram_api: str) -> list[Channel]:
    """The configured channels (none is fine: alerts are then only logged)."""
    channels: list[Channel] = []
    slack = environ.get(SLACK_URL, "").strip()
    if slack:
        if not slack.startswith(("https://", "http://")):
            raise ChannelConfigError(f"{SLACK_URL} is not an http(s) URL")
        path = slack.split("://", 1)[1].partition("/")[2]
        channels.append(Channel("slack", slack, secrets=(slack, path)))
    token = environ.get(TELEGRAM_TOKEN, "").strip()
    chat = environ.get(TELEGRAM_CHAT, "").strip()
    if token or chat:
        if not (token and chat):
            missing = TELEGRAM_CHAT if token else TELEGRAM_TOKEN
            raise ChannelConfigError(f"Telegram needs both {TELEGRAM_TOKEN} and {TELEGRAM_CHAT}; {missing} is not set")
        if any(c.isspace() or c in "/?#" for c in token):
            raise ChannelConfigError(f"{TELEGRAM_TOKEN} is not a bot token")
        url = f"{telegram_api.rstrip('/')}/bot{token}/sendMessage"
        channels.append(Channel("telegram", url, chat_id=chat, secrets=(token, chat)))
    return channels


def judge(channel: ChannelName, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """What an HTTP answer means for the alert: sent, wait as told, retry, or a refusal."""
    doc: Any = None
    try:
        doc = json.loads(body) if body[:1] in (b"{", b"[") else None
    except ValueError:
        doc = None
    said = _said(channel, doc, body)
    if status == 429:
        return Outcome("rate_limited", status, _retry_after(headers, doc), f"429 {said}")
    if 500 <= status < 600:
        return Outcome("transient", status, detail=f"{status} {said}")
    if 200 <= status < 300:
        if channel == "telegram" and isinstance(doc, dict) and doc.get("ok") is False:
            return Outcome("permanent", status, detail=f"{status} {said}")
        return Outcome("ok", status)
    # 400 bad payload, 401/403 a revoked token or a bot removed from its chat, 404/410 a deleted
    # webhook: retrying at once cannot help, but an operator can fix it (the alert waits).
    return Outcome("permanent", status, detail=f"{status} {said}")


def _said(channel: ChannelName, doc: Any, body: bytes) -> str:
    if channel == "telegram" and isinstance(doc, dict):
        return str(doc.get("description", ""))[:200]
    return body[:200].decode("utf-8", "replace")


def _retry_after(headers: Mapping[str, str], doc: Any) -> float:
    """Telegram's `parameters.retry_after`, else the `Retry-After` header (seconds or a date)."""
    value: Any = None
    if isinstance(doc, dict) and isinstance(doc.get("parameters"), dict):
        value = doc["parameters"].get("retry_after")
    if value is None:
        value = headers.get("Retry-After")
    seconds = 1.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = 1.0
    if seconds != seconds:  # NaN
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
