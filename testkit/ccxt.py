"""ccxt exchanges that answer from ccxt's own recorded payloads (tests/fixtures/ccxt), offline.

This is ccxt's static-test technique against the pip-installed package: the exchange is built
with the recorded markets, and its low-level `fetch(url, method, headers, body)` is replaced by
one that records the request and answers with a recorded body. Signing, request building and
parsing all run ccxt's real code; only the socket is gone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ccxt"
# binanceusdm has no recordings of its own: ccxt keeps its USD-M cases in binance's files.
_FILE = {"binanceusdm": "binance"}


@functools.cache
def _text(path: Path) -> str:
    return path.read_text()


def recordings(exchange_id: str, kind: str = "response") -> dict[str, Any]:
    """A fresh copy of a recording file each call (ccxt mutates what it parses)."""
    data: dict[str, Any] = json.loads(_text(FIXTURES / kind / f"{_FILE.get(exchange_id, exchange_id)}.json"))
    return data


def markets_path(exchange_id: str) -> Path:
    return FIXTURES / "markets" / f"{_FILE.get(exchange_id, exchange_id)}.json"


def recorded_markets(exchange_id: str) -> dict[str, Any]:
    """The recorded markets, in the precision mode the installed ccxt uses (ticks). ccxt's
    binance markets file was recorded when ccxt counted Binance's precision in decimal places
    (`price: 1` meaning 0.1); every exchange now uses tick sizes, so those counts are converted."""
    recorded: dict[str, Any] = json.loads(_text(markets_path(exchange_id)))
    # Older recordings lack keys today's parsers read (`inverse`, `linear` on spot): ccxt's own
    # empty market structure fills them, as a live `load_markets` would have them.
    empty = ccxt.Exchange().safe_market_structure()
    markets = {symbol: {**empty, **m} for symbol, m in recorded.items()}
    if _FILE.get(exchange_id, exchange_id) == "binance":
        for m in markets.values():
            if "precision" in m:
                m["precision"] = {k: float(f"1e-{v}") if isinstance(v, int) else v for k, v in m["precision"].items()}
    return markets


def write_markets(exchange_id: str, directory: Path) -> Path:
    """`recorded_markets` as a file, for a `[venues.*] markets_file` in a test's config."""
    path = directory / f"markets-{exchange_id}.json"
    path.write_text(json.dumps(recorded_markets(exchange_id)))
    return path


def cases(exchange_id: str, method: str) -> list[dict[str, Any]]:
    """The recorded cases of one unified method that are not disabled."""
    found: list[dict[str, Any]] = recordings(exchange_id)["methods"].get(method, [])
    return [c for c in found if not c.get("disabled")]


class Answers:
    """Stands in for the exchange's HTTP: each request is recorded; the answer is the body of the
    first route whose URL fragment the request's URL contains, else `default`. A body that is an
    Exception instance is raised instead (as ccxt's own transport would raise it)."""

    def __init__(self, default: Any = None, routes: Mapping[str, Any] | None = None) -> None:
        self.default = default
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, str, str | None]] = []  # (method, url, body)

    async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        self.requests.append((method, url, body))
        answer = self.default
        for fragment, routed in self.routes.items():
            if fragment in url:
                answer = routed
                break
        if isinstance(answer, BaseException):
            raise answer
        return json.loads(json.dumps(answer))  # a fresh copy: ccxt mutates what it parses

    def last(self) -> tuple[str, str, str | None]:
        return self.requests[-1]


def offline_exchange(exchange_id: str, answers: Answers | None = None, *, rate_limit: bool = False, **options: Any) -> Any:
    """A ccxt exchange with recorded markets, fake keys, the file's options, and `answers` in place
    of its HTTP. ccxt's rate limiter is off unless asked for, as in ccxt's own static tests: it
    only spaces calls in time (live it is always on: venues/ccxt/exchange.py)."""
    rec = recordings(exchange_id)
    cls = getattr(ccxt.async_support, exchange_id)
    exchange = cls(
        {
            "apiKey": "key",
            "secret": "secretsecret",
            "password": "password",
            "markets": recorded_markets(exchange_id),
            "options": {**rec.get("options", {}), **options},
            "enableRateLimit": rate_limit,
        }
    )
    if exchange_id == "bybit":
        # Which account kind a key has is asked of the venue once; recorded answers assume unified.
        exchange.options["enableUnifiedAccount"] = True
        exchange.options["enableUnifiedMargin"] = False
    if answers is not None:
        exchange.fetch = answers.fetch
        exchange.timeout_on_exit = 0  # ccxt waits 250 ms on close for sockets to drain: there are none
    return exchange
