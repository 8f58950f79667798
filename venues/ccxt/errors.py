"""What a ccxt call raised, mapped once onto our categories (venues/errors.py).

ccxt turns each venue's answer into one of its exception classes, but not always into the one we
need: Binance's spot duplicate (-2010 "Duplicate order sent.") and OKX's (51016) arrive as a
generic InvalidOrder, Bybit's 10016 "Server error" as ExchangeError. So the venue's own code, which
ccxt leaves in the message (`<id> <body>`), decides first, from one table per venue family;
ccxt's class decides when the code is not in the table.

What the executor does with the result: Transient and RateLimited are retried with the same
client id (a timeout is an unknown outcome, settled by a fetch, never a rejection);
DuplicateOrder means the order exists (the caller fetches it); OrderNotFound is final for a
fetch, and a cancel fetches to learn how the order ended; any OrderRejected is final. A refused
key is final too (retrying cannot fix it) and its message never repeats the venue's answer,
which may echo the key.

Sources in the tables: "docs" is the venue's error-code page, "ccxt" the comment beside the code
in ccxt 4.5.90's `describe()["exceptions"]` for that exchange.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ccxt.base import errors as ccxt_errors

from schemas.base import RejectReason
from venues.errors import (
    DuplicateOrder,
    InsufficientCollateral,
    MarginUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    Transient,
    VenueError,
)


@dataclass(frozen=True)
class Means:
    """What an answer means to us: the error to raise, its reason, and words for the message."""

    error: type[VenueError]
    reason: RejectReason | None
    words: str


DUPLICATE = Means(DuplicateOrder, None, "the client order id is taken: the order exists")
NOT_FOUND = Means(OrderNotFound, None, "no such order")
RATE_LIMITED = Means(RateLimited, None, "rate limited")
TRANSIENT = Means(Transient, None, "temporary failure, outcome unknown")
INSUFFICIENT_BALANCE = Means(OrderRejected, "insufficient_balance", "insufficient balance")
INSUFFICIENT_COLLATERAL = Means(InsufficientCollateral, None, "insufficient margin or collateral")
MARGIN_UNAVAILABLE = Means(MarginUnavailable, None, "margin trading is not available to this account")
POST_ONLY = Means(OrderRejected, "post_only_would_take", "a post-only order would take")
REDUCE_ONLY = Means(OrderRejected, "reduce_only_would_increase", "a reduce-only order would increase the position")
BELOW_MIN = Means(OrderRejected, "below_min", "below the minimum size or notional")
OFF_TICK = Means(OrderRejected, "off_tick", "price off the tick size")
INVALID = Means(OrderRejected, "invalid", "invalid order")
UNKNOWN_SYMBOL = Means(OrderRejected, "unknown_symbol", "unknown symbol")
KEY_REFUSED = Means(OrderRejected, "upstream_rejected", "the API key is refused (or its permissions or IP whitelist)")
REJECTED = Means(OrderRejected, "upstream_rejected", "rejected")


@dataclass(frozen=True)
class ByMessage:
    """A code the venue reuses for several refusals: the first phrase found in its message decides."""

    phrases: tuple[tuple[str, Means], ...]
    otherwise: Means | None = None  # None: let ccxt's class decide


# Binance, spot (/api/v3), spot margin (/sapi/v1/margin) and USD-M futures (/fapi). The -4xxx and
# -5xxx codes are the futures ones: on /sapi the same numbers mean withdrawal errors, which no
# order endpoint returns. -2014/-2015 (key refused) are left to ccxt: it raises DDoSProtection
# for -2015 once the key has worked before, Binance's way of answering a temporary ban.
BINANCE: dict[str, Means | ByMessage] = {
    "-4116": DUPLICATE,  # "ClientOrderId is duplicated." (docs DUPLICATED_CLIENT_ORDER_ID)
    "-2010": ByMessage(  # NEW_ORDER_REJECTED, spot: the message says why (docs, ccxt exact messages)
        (
            ("duplicate order sent", DUPLICATE),
            ("insufficient balance", INSUFFICIENT_BALANCE),
            ("immediately match and take", POST_ONLY),  # a LIMIT_MAKER that would take
        )
    ),
    "-2019": INSUFFICIENT_COLLATERAL,  # "Margin is insufficient." (docs, ccxt)
    "-2022": REDUCE_ONLY,  # "ReduceOnly Order is rejected." (docs, ccxt)
    "-5022": POST_ONLY,  # GTX_ORDER_REJECT: "could not be executed as maker" (docs)
    "-2011": NOT_FOUND,  # "Unknown order sent." on cancel, also when it just ended (docs)
    "-2013": NOT_FOUND,  # "Order does not exist." (docs, ccxt)
    "-1003": RATE_LIMITED,  # TOO_MANY_REQUESTS, also "IP banned until <ms>" (docs)
    "-1015": RATE_LIMITED,  # TOO_MANY_ORDERS (docs)
    "-1000": TRANSIENT,  # UNKNOWN: "An unknown error occurred while processing the request" (docs)
    "-1001": TRANSIENT,  # DISCONNECTED: "Internal error ... Please try again." (docs)
    "-1006": TRANSIENT,  # UNEXPECTED_RESP: "Execution status unknown." (docs)
    "-1007": TRANSIENT,  # TIMEOUT: "Send status unknown; execution status unknown." (docs)
    "-1008": TRANSIENT,  # "Server is currently overloaded" (docs)
    "-1021": TRANSIENT,  # INVALID_TIMESTAMP: outside recvWindow; refused before acting (docs)
    "-1013": ByMessage(  # "Filter failure: <FILTER>" (docs)
        (("price_filter", OFF_TICK), ("lot_size", BELOW_MIN), ("notional", BELOW_MIN)), INVALID
    ),
    "-4014": OFF_TICK,  # PRICE_NOT_INCREASED_BY_TICK_SIZE (docs)
    "-4164": BELOW_MIN,  # MIN_NOTIONAL: "Order's notional must be no smaller than ..." (docs)
    "-3003": MARGIN_UNAVAILABLE,  # "Margin account does not exist." (ccxt)
    "-3021": MARGIN_UNAVAILABLE,  # "Margin account are not allowed to trade this trading pair." (ccxt)
    "-3045": MARGIN_UNAVAILABLE,  # "The system doesn't have enough asset now." (to lend) (ccxt)
    "-3006": INSUFFICIENT_COLLATERAL,  # "Your borrow amount has exceed maximum borrow amount." (ccxt)
    "-11008": INSUFFICIENT_COLLATERAL,  # "Exceeding the account's maximum borrowable limit" (ccxt)
    "-3041": INSUFFICIENT_BALANCE,  # "Balance is not enough" (ccxt)
}

# OKX: an order's own sCode (in `data`) comes before the envelope's code ("1" = failed).
OKX: dict[str, Means | ByMessage] = {
    "51016": DUPLICATE,  # "Client order ID already exists." (docs; ccxt "Duplicated client order ID")
    "51008": ByMessage(  # one code for "Insufficient {ccy} balance" and "... margin" / borrowing (docs)
        (("margin", INSUFFICIENT_COLLATERAL), ("borrow", INSUFFICIENT_COLLATERAL)), INSUFFICIENT_BALANCE
    ),
    "51119": INSUFFICIENT_BALANCE,  # "Order placement failed due to insufficient balance" (ccxt)
    "51127": INSUFFICIENT_BALANCE,  # "Available balance is 0." (docs)
    "51131": INSUFFICIENT_BALANCE,  # "Insufficient balance." (docs)
    "50011": RATE_LIMITED,  # "Rate limit reached." / HTTP 429 "Too Many Requests" (docs)
    "50040": RATE_LIMITED,  # "Too frequent operations, please try again later" (docs)
    "50061": RATE_LIMITED,  # "maximum order rate limit for this account" (docs; ccxt: ExchangeError)
    "50001": TRANSIENT,  # "Service temporarily unavailable." (docs)
    "50004": TRANSIENT,  # "API endpoint request timeout (does not mean ... succeeded or failed)" (docs)
    "50013": TRANSIENT,  # "Systems are busy." (docs)
    "50026": TRANSIENT,  # "System error. Try again later" (docs)
    "51149": TRANSIENT,  # "Order timed out ... (does not mean ... succeeded or failed)" (docs)
    "50102": TRANSIENT,  # "Timestamp request expired." (docs)
    "51603": NOT_FOUND,  # "Order does not exist." (docs)
    "51400": NOT_FOUND,  # cancel: "order has been filled, canceled or does not exist" (docs)
    "54000": MARGIN_UNAVAILABLE,  # "Margin trading is not supported." (docs)
    "51010": MARGIN_UNAVAILABLE,  # "Request unsupported under current account mode" (Spot mode) (docs)
    "51169": REDUCE_ONLY,  # "don't have any positions in this direction ... to reduce or close" (docs)
    "51170": REDUCE_ONLY,  # "A reduce-only order can't be the same trading direction ..." (docs)
    "51020": BELOW_MIN,  # "Your order should meet or exceed the minimum order amount." (docs)
    "51120": BELOW_MIN,  # "Order amount is less than {param0}" (docs)
    # No post-only code: OKX accepts a post_only order that would take, then cancels it.
}

# Bybit v5. The 110xxx codes come from the derivatives (and UTA contract) order path, where a
# shortfall is one of margin; spot answers with 170xxx.
BYBIT: dict[str, Means | ByMessage] = {
    "110072": DUPLICATE,  # "OrderLinkedID is duplicate" (docs, ccxt)
    "170141": DUPLICATE,  # spot: "Duplicate clientOrderId" (docs, ccxt)
    "110004": INSUFFICIENT_COLLATERAL,  # "Wallet balance is insufficient" (docs)
    "110007": INSUFFICIENT_COLLATERAL,  # "Available balance is insufficient" / "ab not enough" (docs, ccxt)
    "110012": INSUFFICIENT_COLLATERAL,  # "Insufficient available balance." (docs)
    "110044": INSUFFICIENT_COLLATERAL,  # "Available margin is insufficient." (docs)
    "110045": INSUFFICIENT_COLLATERAL,  # "Wallet balance is insufficient." (docs)
    "170131": INSUFFICIENT_BALANCE,  # spot: "Balance insufficient" (docs)
    "170033": INSUFFICIENT_COLLATERAL,  # "margin Insufficient account balance" (docs)
    "170034": INSUFFICIENT_COLLATERAL,  # "Liability over flow in spot leverage trade!" (docs)
    "10006": RATE_LIMITED,  # "Too many visits. Exceeded the API Rate Limit." (docs)
    "10018": RATE_LIMITED,  # "exceed ip rate limit" (ccxt)
    "170005": RATE_LIMITED,  # "Too many new orders; current limit is %s orders per %s." (docs)
    "170222": RATE_LIMITED,  # "Too many requests in this time frame." (docs)
    "10016": TRANSIENT,  # "Server error." / "Service is restarting" (docs; ccxt: ExchangeError)
    "170001": TRANSIENT,  # "Internal error." (docs)
    "170007": TRANSIENT,  # "Timeout waiting for response from backend server." (docs)
    "170234": TRANSIENT,  # "System Error" (docs)
    "110079": TRANSIENT,  # "The order is processing and can not be operated, please try again later" (docs)
    "10002": TRANSIENT,  # "The request time exceeds the time window range." (docs)
    "110001": NOT_FOUND,  # "Order does not exist" (docs)
    "170213": NOT_FOUND,  # spot: "Order does not exist." (docs)
    "170036": MARGIN_UNAVAILABLE,  # "You haven't enabled Cross Margin Trading yet." (docs)
    "170037": MARGIN_UNAVAILABLE,  # "Cross Margin Trading not yet supported by the selected coin" (docs)
    "170344": MARGIN_UNAVAILABLE,  # "Symbol is not supported on Margin Trading" (docs)
    "176008": MARGIN_UNAVAILABLE,  # "You haven't enabled Cross Margin Trading yet." (docs)
    "182021": MARGIN_UNAVAILABLE,  # "Cannot enable spot margin while in isolated margin mode." (docs)
    "110017": REDUCE_ONLY,  # "Reduce-only rule not satisfied" (docs)
    "170218": POST_ONLY,  # "The LIMIT-MAKER order is rejected due to invalid price." (docs)
    "110094": BELOW_MIN,  # "Order notional value below the lower limit" (docs)
    "170136": BELOW_MIN,  # "Order quantity lower than the minimum." (docs)
    "170140": BELOW_MIN,  # "Order value exceeded lower limit" (docs)
    "170134": OFF_TICK,  # "Order price decimal too long." (docs)
    # Contract PostOnly orders that would take are accepted, then cancelled (no error code).
}

# Gate APIv4 answers with a `label` (docs: "label list").
GATE: dict[str, Means | ByMessage] = {
    # Gate documents no code for a reused `text`; these two are the labels it lists for a
    # repeated order (spot "Repeated creation"; "Order already exists, do not resubmit").
    "REPEATED_CREATION": DUPLICATE,
    "ORDER_EXISTS": DUPLICATE,
    "BALANCE_NOT_ENOUGH": INSUFFICIENT_BALANCE,  # spot "Balance is not enough" (docs, ccxt)
    "MARGIN_BALANCE_NOT_ENOUGH": INSUFFICIENT_COLLATERAL,  # "Margin balance is not enough" (docs)
    "INSUFFICIENT_AVAILABLE": INSUFFICIENT_COLLATERAL,  # futures "Balance is not enough" (docs)
    "AUTO_BORROW_TOO_MUCH": INSUFFICIENT_COLLATERAL,  # "Auto borrow exceeds maximum allowed" (docs)
    "TRADE_RESTRICTED": INSUFFICIENT_COLLATERAL,  # "restricted due to high debt ratio" (docs)
    "TOO_MANY_REQUESTS": RATE_LIMITED,  # (ccxt)
    "INTERNAL": TRANSIENT,  # "Internal server error" (docs)
    "SERVER_ERROR": TRANSIENT,  # "Internal server error" (docs)
    "TOO_BUSY": TRANSIENT,  # "Server is too busy at the moment" (docs)
    "ORDER_NOT_FOUND": NOT_FOUND,  # (docs, ccxt)
    "CLIENT_ID_NOT_FOUND": NOT_FOUND,  # (ccxt)
    # A cancel of an order that just ended: the fetch that follows says how (as Binance -2011).
    "ORDER_CLOSED": NOT_FOUND,  # "Order already closed" (docs)
    "ORDER_CANCELLED": NOT_FOUND,  # "Order already cancelled" (docs)
    "ORDER_FINISHED": NOT_FOUND,  # futures "Order already finished" (docs)
    "MARGIN_NOT_SUPPORTED": MARGIN_UNAVAILABLE,  # "pair doesn't provide margin trading" (docs)
    "USER_NOT_FOUND": MARGIN_UNAVAILABLE,  # "User has no futures account" (docs)
    "POC_FILL_IMMEDIATELY": POST_ONLY,  # spot "Order would match and take immediately" (docs, ccxt)
    "ORDER_POC_IMMEDIATE": POST_ONLY,  # futures "POC order will be finished immediately" (docs)
    "AMOUNT_TOO_LITTLE": BELOW_MIN,  # "Amount does not reach minimum required" (docs)
    "SIZE_TOO_SMALL": BELOW_MIN,  # futures "Order size does not reach minimum" (docs)
    "INVALID_PRECISION": INVALID,  # "Invalid precision" (price or amount) (docs)
}

# Bitget v2 (code, msg). Where the docs and ccxt's comments disagree, the docs (current v2) win.
BITGET: dict[str, Means | ByMessage] = {
    "43118": DUPLICATE,  # "clientOrderId duplicate" (docs)
    "45034": DUPLICATE,  # "clientOid duplicate" (docs)
    "43012": INSUFFICIENT_BALANCE,  # spot "Insufficient balance" (docs, ccxt)
    "40754": INSUFFICIENT_COLLATERAL,  # futures "balance not enough" (docs)
    "40762": INSUFFICIENT_COLLATERAL,  # "The order amount exceeds the balance" (ccxt)
    "40711": INSUFFICIENT_COLLATERAL,  # "Insufficient contract account balance" (ccxt)
    "40712": INSUFFICIENT_COLLATERAL,  # "Insufficient margin" (ccxt)
    "429": RATE_LIMITED,  # "Too many requests" (docs)
    "40015": TRANSIENT,  # "System is abnormal, please try again later" (docs; ccxt: ExchangeError)
    "40010": TRANSIENT,  # "Request timed out" (docs; ccxt's comment reads "sign signature error")
    "40910": TRANSIENT,  # "Operation timed out" (docs)
    "43001": NOT_FOUND,  # "The order does not exist" (docs)
    "40768": NOT_FOUND,  # "Order does not exist" (ccxt)
    "43004": NOT_FOUND,  # "There is no order to cancel" (docs)
    "22001": NOT_FOUND,  # "No order to cancel" (docs)
    "50021": MARGIN_UNAVAILABLE,  # "The margin trading account does not exist" (docs; ccxt: v1 "Price is under minimum")
    "50015": MARGIN_UNAVAILABLE,  # "Currently, sub-accounts cannot engage in margin trading" (docs)
    "22002": REDUCE_ONLY,  # "No position to close" (docs)
    "43006": BELOW_MIN,  # "The order quantity is less than the minimum transaction quantity" (docs)
    "43010": BELOW_MIN,  # "The transaction amount cannot be less than {0}{1}" (docs)
    "45110": BELOW_MIN,  # "less than the minimum amount {0} USDT" (docs)
    "45111": BELOW_MIN,  # "less than the minimum order quantity" (docs)
    "45115": OFF_TICK,  # "The price you enter should be a multiple of {0}" (docs)
}


def _text(body: Any, *keys: str) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in keys:
        if body.get(key) not in (None, ""):
            return str(body[key])
    return None


def _okx_codes(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    own = [_text(d, "sCode") for d in data] if isinstance(data, list) else []
    return [c for c in [*own, _text(body, "code")] if c and c not in ("0", "1", "2")]


def _okx_message(body: Any) -> str:
    data = body.get("data") if isinstance(body, dict) else None
    own = [_text(d, "sMsg") for d in data] if isinstance(data, list) else []
    return " ".join(m for m in [*own, _text(body, "msg")] if m)


@dataclass(frozen=True)
class Family:
    """Where a venue family puts its code and words, and what its codes mean."""

    table: Mapping[str, Means | ByMessage]
    codes: Callable[[Any], list[str]]
    message: Callable[[Any], str]


def _first(body: Any) -> Any:
    return body[0] if isinstance(body, list) and body else body  # Binance answers a batch with a list


_BINANCE = Family(BINANCE, lambda b: [c] if (c := _text(_first(b), "code")) else [], lambda b: _text(_first(b), "msg") or "")
FAMILIES: dict[str, Family] = {
    "binanceusdm": _BINANCE,
    "binance": _BINANCE,
    "okx": Family(OKX, _okx_codes, _okx_message),
    "bybit": Family(
        BYBIT,
        lambda b: [c] if (c := _text(b, "retCode", "ret_code")) and c != "0" else [],
        lambda b: _text(b, "retMsg", "ret_msg") or "",
    ),
    "gate": Family(GATE, lambda b: [c] if (c := _text(b, "label")) else [], lambda b: _text(b, "message", "detail") or ""),
    "bitget": Family(
        BITGET,
        lambda b: [c] if (c := _text(b, "code", "err_code")) and c != "00000" else [],
        lambda b: _text(b, "msg", "err_msg") or "",
    ),
}

# ccxt's class, when the venue's code is not in the table. Order matters: subclasses first
# (RateLimitExceeded and DDoSProtection are NetworkErrors; AccountNotEnabled is an
# AuthenticationError; OrderNotFound and OrderImmediatelyFillable are InvalidOrders).
BY_CCXT_CLASS: tuple[tuple[type[Exception], Means], ...] = (
    (ccxt_errors.RateLimitExceeded, RATE_LIMITED),
    (ccxt_errors.DDoSProtection, RATE_LIMITED),  # 418/429 on Binance, Bitget's 429 code
    (ccxt_errors.NetworkError, TRANSIENT),  # RequestTimeout, ExchangeNotAvailable, OnMaintenance, InvalidNonce
    (ccxt_errors.OperationFailed, TRANSIENT),  # BadResponse, NullResponse, CancelPending: outcome unknown
    (ccxt_errors.DuplicateOrderId, DUPLICATE),
    (ccxt_errors.OrderImmediatelyFillable, POST_ONLY),
    (ccxt_errors.OrderNotFound, NOT_FOUND),
    (ccxt_errors.InsufficientFunds, INSUFFICIENT_BALANCE),
    (ccxt_errors.AccountNotEnabled, MARGIN_UNAVAILABLE),
    (ccxt_errors.AuthenticationError, KEY_REFUSED),  # also PermissionDenied, AccountSuspended
    (ccxt_errors.BadSymbol, UNKNOWN_SYMBOL),
)

_DECODER = json.JSONDecoder()
_BANNED_UNTIL = re.compile(r"banned until (\d{12,})")  # Binance -1003: "IP banned until 1529256050872."


def _body(text: str) -> Any:
    """The venue's JSON answer inside ccxt's message: `<id> <body>`, or after the status line."""
    for i, char in enumerate(text):
        if char in "{[":
            try:
                return _DECODER.raw_decode(text, i)[0]
            except ValueError:
                continue
    return None


def _retry_after(text: str, headers: Mapping[str, str] | None, now_ms: int | None) -> float | None:
    """Seconds to wait, as the venue said it; absolute times need `now_ms` (the caller's clock)."""
    lower = {k.lower(): v.strip() for k, v in (headers or {}).items()}
    if lower.get("retry-after", "").isdigit():  # delta-seconds; Binance sends it with 418 and 429
        return float(lower["retry-after"])
    if now_ms is None:
        return None
    until = lower.get("x-bapi-limit-reset-timestamp", "")  # Bybit: when the limit resets, in ms
    if not until.isdigit():
        match = _BANNED_UNTIL.search(text)
        until = match.group(1) if match else ""
    return max(0.0, (int(until) - now_ms) / 1000) if until else None


def _meaning(family: Family, body: Any, text: str) -> tuple[Means | None, str | None]:
    """What the venue's own code says (None: not in the table), and that code."""
    message = (family.message(body) or text).lower()
    codes = family.codes(body)
    for code in codes:
        entry = family.table.get(code)
        if isinstance(entry, ByMessage):
            entry = next((means for phrase, means in entry.phrases if phrase in message), entry.otherwise)
        if entry is not None:
            return entry, code
    return None, codes[0] if codes else None


def from_ccxt(exc: Exception, exchange_id: str, *, headers: Mapping[str, str] | None = None, now_ms: int | None = None) -> VenueError:
    """Our category for what a ccxt call on `exchange_id` raised.

    `headers` are the response's (ccxt keeps the last ones in `exchange.last_response_headers`),
    read only for how long a rate limit lasts; `now_ms` converts a venue's "until" time into a
    wait. Anything that is not a ccxt error (a bug in parsing an answer, a bare socket error)
    leaves the outcome unknown, so it is Transient.
    """
    if isinstance(exc, VenueError):
        return exc
    try:
        family = FAMILIES[exchange_id]
    except KeyError:
        raise ValueError(f"no error table for ccxt exchange {exchange_id!r}; supported: {', '.join(sorted(FAMILIES))}") from None
    text = str(exc)
    if not isinstance(exc, ccxt_errors.BaseError):
        return Transient(f"{exchange_id}: {TRANSIENT.words}: {type(exc).__name__}: {text[:300]}")
    means, code = _meaning(family, _body(text), text)
    if means is None:
        means = next((m for cls, m in BY_CCXT_CLASS if isinstance(exc, cls)), REJECTED)
    if means is KEY_REFUSED:  # never repeat the venue's answer: it may echo the key
        return OrderRejected(f"{exchange_id}: {means.words}: {type(exc).__name__}{f', code {code}' if code else ''}", means.reason)
    detail = text[len(exchange_id) + 1 :] if text.startswith(exchange_id + " ") else text
    message = f"{exchange_id}: {means.words}: {detail[:300]}"
    if means.error is RateLimited:
        return RateLimited(message, retry_after=_retry_after(text, headers, now_ms))
    if means.error is DuplicateOrder:
        return DuplicateOrder(message, existing=None)
    return means.error(message, means.reason)
