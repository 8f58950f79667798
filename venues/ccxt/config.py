"""One real venue reached through ccxt: `[venues.<name>]` in the config file.

    [venues.binanceusdm]
    exchange = "binanceusdm"      # the ccxt id (default: the section's name)
    sandbox = false               # the venue's testnet, where ccxt has one
    options = { defaultType = "swap" }   # passed to ccxt as its `options`

Keys never live here: `SQT_<NAME>_API_KEY`, `SQT_<NAME>_SECRET`, `SQT_<NAME>_PASSWORD` for the
account `main`, `SQT_<NAME>_<ACCOUNT>_API_KEY` ... for any other (venues/ccxt/exchange.py).
`rest_url`, `ws_url` and `markets_file` point the venue somewhere else (a local server replaying
recorded payloads, in tests and paper rehearsals); a real deployment leaves them unset.
"""

from __future__ import annotations

from typing import Any

import msgspec

SUPPORTED = ("binanceusdm", "binance", "bitget", "okx", "bybit", "gate")


class CcxtVenueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    exchange: str | None = None
    sandbox: bool = False
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout_ms: int = 10_000  # one HTTP request; past it the outcome is unknown, never a failure
    rest_url: str | None = None
    ws_url: str | None = None
    markets_file: str | None = None

    def __post_init__(self) -> None:
        if self.exchange is not None and self.exchange not in SUPPORTED:
            raise ValueError(f"`exchange` {self.exchange!r} is not supported (supported: {', '.join(SUPPORTED)})")
        if self.timeout_ms <= 0:
            raise ValueError("`timeout_ms` must be positive")
        for name in ("rest_url", "ws_url"):
            url = getattr(self, name)
            if url is not None and "://" not in url:
                raise ValueError(f"`{name}` must be a URL like http://127.0.0.1:8080, got {url!r}")

    def exchange_id(self, name: str) -> str:
        ccxt_id = self.exchange or name
        if ccxt_id not in SUPPORTED:
            raise ValueError(f"venue {name!r}: set `exchange` to one of {', '.join(SUPPORTED)}")
        return ccxt_id
