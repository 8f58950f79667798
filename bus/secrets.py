"""Environment variables that hold secrets. They are read by the component that needs them, and
only there; the config loader (cli/config.py), which reads every other `SQT_*` variable as a
config key, leaves these alone, and nothing ever logs or shows their values."""

from __future__ import annotations

import re

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


# Names that say "a secret" whoever reads them (a venue's key, a webhook, a password): what the
# log mask hides beside the variables named above, never read as config (bus/log.py).
_SECRET_NAME = re.compile(r"(API_?KEY|SECRET|PASSWORD|PASSPHRASE|TOKEN|PRIVATE_?KEY|WEBHOOK)", re.IGNORECASE)
# scheme://userinfo@ : the userinfo (user:password, or a bare token) is a credential.
_URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/@?#]+@")


def looks_secret(name: str) -> bool:
    """Whether a variable's value must never be shown: a secret variable, or a secret's name."""
    return is_secret_variable(name) or bool(_SECRET_NAME.search(name))


def redact(text: str) -> str:
    """Text fit to show: every URL's credentials (`nats://user:password@host`) become `***`, in
    each server of a list (`nats://a:x@h1,nats://b:y@h2`) as anywhere in a line."""
    return _URL_CREDENTIALS.sub(r"\1***@", text) if "@" in text else text
