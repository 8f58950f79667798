"""Logging for every component: one line per record, secrets masked.

Two formats, chosen by `setup(fmt=...)`, else the environment's SQT_LOG_FORMAT, else "text":

- "text": `<time> <LEVEL> <component> <logger>: <message>`, for a person at a terminal;
- "json": one JSON object per line, for a log collector:
  `time` (ISO-8601 UTC, milliseconds), `level`, `component` ("grid" of "grid:btc"), `instance`
  ("btc", or null), `logger`, `event` (the message), `ids` (the ids a line is about: the
  `key=value` tokens of the message whose key is in ID_KEYS, plus `extra={"ids": {...}}`), and
  `exc` (the traceback) when there is one.

Secrets come from the environment (`secret_values()`); the formatter masks their values, and any
credentials in a URL (`nats://user:pass@host`), in the whole line it writes: the message, its
arguments, the traceback, the ids. A careless f-string cannot leak an API key into a log file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bus.secrets import looks_secret, redact

FORMATS = ("text", "json")
_MIN_SECRET = 6  # shorter values (a "1", a "true") would mask half of every line
_MIN_PART = 8  # one token of a list such as SQT_GATEWAY_TOKENS (`name=role:token,...`)
MASK = "***"

# The ids a line can be about, as the code writes them in a message (`client_id=abc`).
ID_KEYS = frozenset(
    {
        "account",
        "client_id",
        "client_order_id",
        "cmd_id",
        "consumer",
        "durable",
        "fill_id",
        "instance",
        "order_id",
        "revision",
        "scope",
        "seq",
        "stream",
        "subject",
        "symbol",
        "trade_id",
        "venue",
    }
)
_ID_TOKEN = re.compile(r"(?<![\w.])(" + "|".join(sorted(ID_KEYS)) + r""")=("[^"]*"|'[^']*'|[^\s,;()\[\]{}"']+)""")


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment's secret variables, longest first.

    A variable is secret by its name (API_KEY, SECRET, PASSWORD, TOKEN, ... anywhere in it) or by
    bus/secrets.py. A list of `name=role:token` entries also gives each token on its own, so a
    line naming one token is masked too.
    """
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not looks_secret(name):
            continue
        if len(value) >= _MIN_SECRET:
            found.add(value)
        for part in re.split(r"[,;]", value):
            token = re.split(r"[=:]", part)[-1]
            for piece in (part, token):
                if len(piece) >= _MIN_PART:
                    found.add(piece)
    return sorted(found, key=lambda s: (-len(s), s))


class Masker:
    """Replaces each secret value, and a URL's credentials, by ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)  # a secret inside another: the longer first
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        return redact(text)


def split_component(component: str) -> tuple[str, str | None]:
    """ "grid:btc" -> ("grid", "btc"); "sqt-up" -> ("sqt-up", None)."""
    name, sep, instance = component.partition(":")
    return name, (instance if sep else None)


def ids_in(message: str) -> dict[str, str]:
    """The `key=value` tokens of a message whose key is an id key (ID_KEYS); the first of each wins."""
    ids: dict[str, str] = {}
    for key, value in _ID_TOKEN.findall(message):
        if value[:1] in "\"'" and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.rstrip(".:")  # the end of a sentence or of "client_id=x: why"
        ids.setdefault(key, value)
    return ids


def utc_time(record: logging.LogRecord) -> str:
    """ISO-8601 UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _masked(value: Any, mask: Masker) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(k)): _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, mask) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask(str(value))


class TextFormatter(logging.Formatter):
    """Today's line: `<time> <LEVEL> <component> <logger>: <message>` (a traceback on the lines after)."""

    def __init__(self, component: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-5s {component} %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, component: str, mask: Masker | None = None) -> None:
        super().__init__()
        self.component, self.instance = split_component(component)
        self._mask = mask or Masker([])

    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        ids: dict[str, Any] = ids_in(event)
        given = getattr(record, "ids", None)
        if isinstance(given, Mapping):
            ids.update({str(k): v for k, v in given.items()})
        line: dict[str, Any] = {
            "time": utc_time(record),
            "level": record.levelname,
            "component": self.component,
            "instance": self.instance,
            "logger": record.name,
            "event": event,
            "ids": ids,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Each field masked before encoding (JSON escapes would hide a secret from a mask of the
        # line); the line masked once more below, by MaskingFormatter.
        return json.dumps(_masked(line, self._mask), ensure_ascii=False, default=str)


class MaskingFormatter(logging.Formatter):
    """Another formatter's whole output, secrets masked: message, arguments, traceback, ids."""

    def __init__(self, inner: logging.Formatter, mask: Masker, *, json_lines: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self._mask = mask
        self._json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        masked = self._mask(text)
        if masked != text and self._json_lines:
            # Only a secret straddling two fields gets here; the line still has to parse.
            return json.dumps(
                {
                    "time": utc_time(record),
                    "level": record.levelname,
                    "component": getattr(self.inner, "component", None),
                    "instance": getattr(self.inner, "instance", None),
                    "logger": record.name,
                    "event": "(a log line withheld: it held a secret)",
                    "ids": {},
                }
            )
        return masked


def log_format(fmt: str | None = None) -> str:
    """The format asked for (else SQT_LOG_FORMAT, else "text"); ValueError for anything else."""
    chosen = fmt if fmt is not None else os.environ.get("SQT_LOG_FORMAT") or "text"
    normalized = chosen.strip().lower()
    if normalized not in FORMATS:
        raise ValueError(f"`log_format` must be one of {', '.join(FORMATS)}, not {chosen!r}")
    return normalized


def formatter(component: str, fmt: str = "text", secrets: Iterable[str] | None = None) -> logging.Formatter:
    """The masking formatter setup() puts on its handler."""
    fmt = log_format(fmt)
    mask = Masker(secret_values() if secrets is None else secrets)
    inner: logging.Formatter = JsonFormatter(component, mask) if fmt == "json" else TextFormatter(component)
    return MaskingFormatter(inner, mask, json_lines=fmt == "json")


def setup(component: str, level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once per process."""
    chosen = log_format(fmt)  # before anything changes: a bad value leaves logging as it was
    level_name = (level or os.environ.get("SQT_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(component, chosen))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    if chosen == "json":
        logging.captureWarnings(True)  # a Python warning is a JSON line too, not a bare stderr line
    # nats-py logs every reconnect attempt at ERROR with a traceback; we log them ourselves.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
