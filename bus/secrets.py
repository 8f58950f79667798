"""Environment variables that hold secrets. They are read by the component that needs them, and
only there; the config loader (cli/config.py), which reads every other `SQT_*` variable as a
config key, leaves these alone, and nothing ever logs or shows their values."""

from __future__ import annotations

GATEWAY = ("SQT_GATEWAY_TOKENS", "SQT_GATEWAY_JWT_SECRET")  # gateway/auth.py
ALERTS = ("SQT_SLACK_WEBHOOK_URL", "SQT_TELEGRAM_BOT_TOKEN", "SQT_TELEGRAM_CHAT_ID")  # monitors/alerts/channels.py
SECRET_VARIABLES: tuple[str, ...] = GATEWAY + ALERTS
