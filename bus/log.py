"""Logging for every component: one line per record, key=value context, secrets masked.

Secrets come from the environment; a filter masks their values wherever they would appear
in a log line, so a careless f-string cannot leak an API key into a log file.
"""

from __future__ import annotations

import logging
import os
import re
import sys

_SECRET_NAME = re.compile(r"(API_?KEY|SECRET|PASSWORD|PASSPHRASE|TOKEN|PRIVATE_?KEY)", re.IGNORECASE)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


class SecretMask(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            text = record.getMessage()
            masked = text
            for secret in self._secrets:
                masked = masked.replace(secret, "***")
            if masked != text:
                record.msg, record.args = masked, None
        return True


def setup(component: str, level: str | None = None) -> None:
    """Configure the root logger once per process."""
    level_name = (level or os.environ.get("SQT_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-5s {component} %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secret_values()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    # nats-py logs every reconnect attempt at ERROR with a traceback; we log them ourselves.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
