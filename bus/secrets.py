"""Environment variables that hold secrets. They are read by the component that needs them, and
only there; the config loader (cli/config.py), which reads every other `SQT_*` variable as a
config key, leaves these alone, and nothing ever logs or shows their values."""

from __future__ import annotations

GATEWAY = ("SQT_GATEWAY_TOKENS", "SQT_GATEWAY_JWT_SECRET")  # gateway/auth.py
ALERTS = ("SQT_SLACK_WEBHOOK_URL", "SQT_TELEGRAM_BOT_TOKEN", "SQT_TELEGRAM_CHAT_ID")  # monitors/alerts/channels.py
NATS = ("SQT_NATS_PASSWORD",)  # bus/auth.py; and SQT_NATS_PASSWORD_<ROLE> (the server's, from `sqt auth init`)
SECRET_VARIABLES: tuple[str, ...] = GATEWAY + ALERTS + NATS
# Venue keys (venues/ccxt/exchange.py): SQT_<VENUE>[_<ACCOUNT>]_API_KEY, _SECRET, _PASSWORD.
CREDENTIAL_SUFFIXES = ("_API_KEY", "_SECRET", "_PASSWORD")


def is_secret_variable(name: str) -> bool:
    return (
        name in SECRET_VARIABLES
        or name.startswith("SQT_NATS_PASSWORD_")
        or (name.startswith("SQT_") and name.endswith(CREDENTIAL_SUFFIXES))
    )


def uses_secret(component: str, name: str) -> bool:
    """Whether `component` (sim, executor, gateway...) reads the secret variable `name`: `sqt up`
    gives each child only its own (venue keys to executors and publishers, channel tokens to
    the alerts, tokens to the gateway; NATS passwords to nobody, it gets its own login)."""
    if name in GATEWAY:
        return component == "gateway"
    if name in ALERTS:
        return component == "alerts"
    if name in NATS or name.startswith("SQT_NATS_PASSWORD_"):
        return False
    return component in ("executor", "publisher", "reconciler")  # a venue's keys
