"""Building the one ccxt exchange object a (venue, account) process shares for every call.

ccxt's own rate limiter stays on (`enableRateLimit`): it spaces requests by the venue's weights,
and our executor's limit sits on top. Keys come from the environment only and are handed to ccxt
and nothing else; they are not kept on any object of ours.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import ccxt.async_support
import ccxt.pro

from venues.ccxt.config import CcxtVenueConfig

log = logging.getLogger("venue.ccxt")
_AUTHORITY = re.compile(r"^(https?|wss?)://[^/]+")


def credential_names(venue: str, account: str) -> dict[str, str]:
    """ccxt credential field -> the environment variable it is read from."""
    stem = f"SQT_{venue.upper()}" + ("" if account == "main" else f"_{account.upper()}")
    return {"apiKey": f"{stem}_API_KEY", "secret": f"{stem}_SECRET", "password": f"{stem}_PASSWORD"}


def credentials(venue: str, account: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    return {field: env[var] for field, var in credential_names(venue, account).items() if env.get(var)}


def _repoint(urls: Any, rest: str | None, ws: str | None) -> Any:
    """Every API URL with its scheme and host replaced (paths kept, so a local server sees the
    venue's own paths, e.g. /fapi/v1/klines)."""
    if isinstance(urls, dict):
        return {k: _repoint(v, rest, ws) for k, v in urls.items()}
    if isinstance(urls, str):
        target = ws if urls.startswith("ws") else rest
        return _AUTHORITY.sub(target.rstrip("/"), urls) if target else urls
    return urls


def build(
    venue: str,
    account: str | None,
    cfg: CcxtVenueConfig,
    *,
    streaming: bool = False,
    environ: dict[str, str] | None = None,
) -> Any:
    """A ccxt exchange (`ccxt.pro` when `streaming`, for the `watch_*` methods); `account` None
    for public data only (no keys are read)."""
    module = ccxt.pro if streaming else ccxt.async_support
    cls = getattr(module, cfg.exchange_id(venue))
    params: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": cfg.timeout_ms,
        "options": dict(cfg.options),
        **(credentials(venue, account, environ) if account is not None else {}),
    }
    if cfg.markets_file:
        params["markets"] = json.loads(Path(cfg.markets_file).read_text())
    if account is not None and "apiKey" not in params:
        names = credential_names(venue, account)
        log.warning(
            "no API key for %s account %s (set %s and %s): only public data will work", venue, account, names["apiKey"], names["secret"]
        )
    exchange = cls(params)
    if cfg.sandbox:
        exchange.set_sandbox_mode(True)
    if cfg.rest_url or cfg.ws_url:
        exchange.urls["api"] = _repoint(exchange.urls["api"], cfg.rest_url, cfg.ws_url)
        # Templated hosts ("https://api.{hostname}") are replaced whole, so no hostname is left to fill.
    return exchange
