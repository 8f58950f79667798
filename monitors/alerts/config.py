"""Settings of the alerts monitor (the `[alerts]` table).

Where alerts go is a secret and comes from the environment only (SQT_SLACK_WEBHOOK_URL,
SQT_TELEGRAM_BOT_TOKEN, SQT_TELEGRAM_CHAT_ID, see `channels.py`); this table says how they go.
"""

from __future__ import annotations

import msgspec

from schemas.subjects import SubjectError, name_token


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance: str = "main"
    # The same event (same message id) is one alert, always; the same condition (a breaker
    # scope in one state, one consumer's dead letters on one subject, ...) repeating within
    # this window is one alert too, and the next one after it says how often it repeated.
    dedupe_window_ms: int = 600_000
    # A burst is folded into one message: a channel waits this long after the first alert of a
    # quiet period, then sends everything waiting (up to `digest_max` alerts) at once.
    group_ms: int = 1_000
    digest_max: int = 500  # alerts folded into one message at most
    digest_lines: int = 20  # of those, listed one per line; the rest are counted by kind
    # Token buckets per channel. Telegram refuses more than ~20 messages a minute to one chat:
    # burst + rate x 1 min must stay at or below 20. Slack allows ~1 a second per webhook.
    telegram_per_minute: float = 17.0
    telegram_burst: int = 3
    slack_per_minute: float = 60.0
    slack_burst: int = 3
    # Retries: 5xx and connection errors back off exponentially with jitter between these; a
    # 429 waits what the channel says. There is no retry count: an alert is never dropped.
    backoff_ms: int = 500
    backoff_max_ms: int = 60_000
    request_timeout_ms: int = 10_000
    telegram_api: str = "https://api.telegram.org"
    # Components that stop answering their micro-service ping ($SRV.PING).
    ping_interval_ms: int = 5_000
    ping_wait_ms: int = 1_000  # how long answers to one ping are collected
    silence_ms: int = 30_000  # one that answered and then was silent this long is alerted
    # Per-channel confirmations are kept this long (a KV bucket's TTL): an input unacked for
    # longer (one channel down for days) may reach a channel that already had it again.
    confirm_ttl_s: int = 7 * 86_400
    input_max_age_s: int = 7 * 86_400  # the alerts input stream (a copy of what it reads)
    max_ack_pending: int = 20_000  # inputs waiting for their sends; past it the server pauses delivery
    metrics_port: int = 0  # /metrics, /health, /status; 0 = off

    def __post_init__(self) -> None:
        try:
            name_token("instance", self.instance)
        except SubjectError as exc:
            raise ValueError(f"`instance`: {exc}") from None
        positive = (
            "dedupe_window_ms",
            "digest_max",
            "digest_lines",
            "telegram_burst",
            "slack_burst",
            "backoff_ms",
            "request_timeout_ms",
            "ping_interval_ms",
            "ping_wait_ms",
            "silence_ms",
            "confirm_ttl_s",
            "input_max_age_s",
            "max_ack_pending",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive")
        if self.group_ms < 0:
            raise ValueError("`group_ms` must not be negative")
        for name in ("telegram_per_minute", "slack_per_minute"):
            if not 0 < getattr(self, name) <= 6_000:
                raise ValueError(f"`{name}` must be above 0 and at most 6000")
        if self.backoff_max_ms < self.backoff_ms:
            raise ValueError("`backoff_max_ms` must be at least `backoff_ms`")
        if self.ping_wait_ms >= self.ping_interval_ms:
            raise ValueError("`ping_wait_ms` must be below `ping_interval_ms`")
        if self.silence_ms < self.ping_interval_ms:
            raise ValueError("`silence_ms` must be at least `ping_interval_ms`")
        if not self.telegram_api.startswith(("http://", "https://")):
            raise ValueError("`telegram_api` must be an http(s) URL")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("`metrics_port` must be a TCP port (0 = off)")
