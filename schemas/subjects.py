"""The subject grammar, built and parsed here and nowhere else.

    md.<venue>.<symbol>.<kind>                kind: candle1m | ticker | trade | funding | gap
    acct.<venue>.<account>.<symbol>.<kind>    kind: order | fill | position | liquidation | funding | gap
    acct.<venue>.<account>.<asset>.balance
    acct.<venue>.<account>.<asset>.interest      borrow interest on a margin loan
    cmd.<venue>.<account>.<symbol>.<verb>     verb: place | cancel | cancel_all
    ops.<component>.<instance>.<kind>         e.g. ops.grid.btc-neutral.state
    ops.control.<component>.<instance>        operator controls ("all" = every instance)
    ops.funding.<symbol>.spread               a funding monitor's spread snapshots (symbol token)
    dlq.<original subject>

Not streams of their own, but built here too, so that no subject is formatted anywhere else:

    venue.<venue>.api.<method>                a simulated venue's request/reply API
    venue.<venue>.journal.<entry>             a simulated venue's journal (its own stream)
    sqt.status.<component>.<instance>         a component's status endpoint (NATS micro)
    $KV.<bucket>.<key>                        a key-value bucket's key, as a subject
    $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>   JetStream's pull request

Breaker scopes (keys of the `breakers` bucket) are `global`, `venue.<venue>` and
`symbol.<venue>.<symbol token>`, widest first.

Symbols are ccxt unified symbols encoded as reversible tokens: `BTC/USDT` -> `BTC-USDT`,
`BTC/USDT:USDT` -> `BTC-USDT-USDT`, `BTC/USD:BTC-240329` -> `BTC-USD-BTC-240329`.
Base and quote are escaped so they never contain `-` (so the first two dashes split the
token); any byte that is not an ASCII letter or digit becomes `_XX` (hex), except that the
settle part keeps its dashes, being last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from typing import Any, Callable, NamedTuple

WILDCARD = "*"
TAIL = ">"
ALL_INSTANCES = "all"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SAFE_WITH_DASH = _SAFE | {ord("-")}

MD_KINDS = frozenset({"ticker", "trade", "funding", "gap"})  # plus candle<interval>
ACCT_KINDS = frozenset({"order", "fill", "position", "liquidation", "funding", "gap"})
ASSET_KINDS = frozenset({"balance", "interest"})
CMD_VERBS = frozenset({"place", "cancel", "cancel_all"})


class SubjectError(ValueError):
    """A subject or a token in it does not follow the grammar."""


def _escape(text: str, safe: frozenset[int]) -> str:
    out: list[str] = []
    for byte in text.encode():
        out.append(chr(byte) if byte in safe else f"_{byte:02X}")
    return "".join(out)


def _unescape(token: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "_":
            hexpair = token[i + 1 : i + 3]
            if len(hexpair) != 2 or not all(c in "0123456789ABCDEF" for c in hexpair):
                raise SubjectError(f"bad escape at {i} in token {token!r}")
            raw.append(int(hexpair, 16))
            i += 3
        else:
            raw.extend(ch.encode())
            i += 1
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise SubjectError(f"token {token!r} does not decode to UTF-8") from exc


@lru_cache(maxsize=4096)
def symbol_token(symbol: str) -> str:
    """`BTC/USDT:USDT` -> `BTC-USDT-USDT`; reversible by `symbol_from_token`."""
    base, slash, rest = symbol.partition("/")
    if not slash or not base or not rest:
        raise SubjectError(f"not a unified symbol (BASE/QUOTE[:SETTLE]): {symbol!r}")
    quote, colon, settle = rest.partition(":")
    if not quote:
        raise SubjectError(f"not a unified symbol (empty quote): {symbol!r}")
    token = f"{_escape(base, _SAFE)}-{_escape(quote, _SAFE)}"
    if colon:
        if not settle:
            raise SubjectError(f"not a unified symbol (empty settle): {symbol!r}")
        token += "-" + _escape(settle, _SAFE_WITH_DASH)
    return token


@lru_cache(maxsize=4096)
def symbol_from_token(token: str) -> str:
    parts = token.split("-", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise SubjectError(f"not a symbol token: {token!r}")
    symbol = f"{_unescape(parts[0])}/{_unescape(parts[1])}"
    if len(parts) == 3:
        if not parts[2]:
            raise SubjectError(f"not a symbol token (empty settle): {token!r}")
        symbol += ":" + _unescape(parts[2])
    return symbol


@lru_cache(maxsize=1024)
def asset_token(asset: str) -> str:
    if not asset:
        raise SubjectError("empty asset")
    return _escape(asset, _SAFE)


@lru_cache(maxsize=4096)
def name_token(kind: str, value: str) -> str:
    """Check a venue / account / component / instance name (lowercase, digits, `-`, `_`)."""
    if value in (WILDCARD, TAIL) or _NAME.match(value):
        return value
    raise SubjectError(f"{kind} {value!r} must be 1-64 of a-z, 0-9, '-', '_' (starting with a letter or digit)")


def _sym(symbol: str) -> str:
    return symbol if symbol in (WILDCARD, TAIL) else symbol_token(symbol)


def md(venue: str, symbol: str, kind: str) -> str:
    if kind not in MD_KINDS and not kind.startswith("candle") and kind not in (WILDCARD, TAIL):
        raise SubjectError(f"unknown market data kind {kind!r}")
    return f"md.{name_token('venue', venue)}.{_sym(symbol)}.{kind}"


def acct(venue: str, account: str, symbol: str, kind: str) -> str:
    if kind not in ACCT_KINDS and kind not in (WILDCARD, TAIL):
        raise SubjectError(f"unknown account event kind {kind!r}")
    return f"acct.{name_token('venue', venue)}.{name_token('account', account)}.{_sym(symbol)}.{kind}"


def balance(venue: str, account: str, asset: str, kind: str = "balance") -> str:
    """An asset-level account subject: `balance`, or `interest` charged on a margin loan."""
    if kind not in ASSET_KINDS:
        raise SubjectError(f"unknown asset event kind {kind!r}")
    token = asset if asset == WILDCARD else asset_token(asset)
    return f"acct.{name_token('venue', venue)}.{name_token('account', account)}.{token}.{kind}"


def cmd(venue: str, account: str, symbol: str, verb: str) -> str:
    if verb not in CMD_VERBS and verb not in (WILDCARD, TAIL):
        raise SubjectError(f"unknown command verb {verb!r}")
    return f"cmd.{name_token('venue', venue)}.{name_token('account', account)}.{_sym(symbol)}.{verb}"


def ops(component: str, instance: str, kind: str) -> str:
    return f"ops.{name_token('component', component)}.{name_token('instance', instance)}.{name_token('kind', kind)}"


def funding_spread(symbol: str) -> str:
    """A funding monitor's spread snapshots for one perpetual: `ops.funding.<symbol token>.spread`."""
    return f"ops.funding.{_sym(symbol)}.spread"


def control(component: str, instance: str = ALL_INSTANCES) -> str:
    return ops("control", component, instance)


def registry(kind: str, instance: str) -> str:
    """A change to an instance in the registry: `ops.registry.<kind>.<instance>`."""
    return ops("registry", kind, instance)


def dlq(subject: str) -> str:
    return f"dlq.{subject}"


def everything(family: str, venue: str) -> str:
    """Every subject of one venue in a family, e.g. `md.sim.>` (what a venue may publish)."""
    if family not in ("md", "acct", "cmd"):
        raise SubjectError(f"{family!r} is not a per-venue family")
    return f"{family}.{name_token('venue', venue)}.{TAIL}"


def venue_api(venue: str, method: str) -> str:
    return f"venue.{name_token('venue', venue)}.api.{name_token('method', method)}"


def journal(venue: str, entry: str) -> str:
    """A simulated venue's journal subject for one entry kind (`*` or `>` for all)."""
    return f"venue.{name_token('venue', venue)}.journal.{name_token('entry', entry)}"


def status(component: str, instance: str) -> str:
    return f"sqt.status.{name_token('component', component)}.{name_token('instance', instance)}"


def kv(bucket: str, key: str) -> str:
    """The subject a key-value bucket stores `key` under (`>` for every key)."""
    return f"$KV.{bucket}.{key}"


def pull_next(stream: str, consumer: str) -> str:
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def stream_info_api(stream: str) -> str:
    """JetStream's stream info request (its body can ask for `deleted_details`)."""
    return f"$JS.API.STREAM.INFO.{stream}"


def breaker_scopes(venue: str, symbol: str, account: str | None = None) -> tuple[str, ...]:
    """The breaker keys that cover one market, widest first (keys of the `breakers` bucket).

    With an account, its scope `account.<venue>.<account>` sits between the venue's and the symbol's."""
    v = name_token("venue", venue)
    if account is None:
        return ("global", f"venue.{v}", f"symbol.{v}.{symbol_token(symbol)}")
    return ("global", f"venue.{v}", f"account.{v}.{name_token('account', account)}", f"symbol.{v}.{symbol_token(symbol)}")


HEARTBEAT_KEY = "heartbeat"  # the risk monitor's liveness in the breakers bucket (ADR 0012)


@dataclass(frozen=True, slots=True)
class Subject:
    """A parsed subject; fields that the family does not have are None."""

    family: str  # md | acct | cmd | ops | dlq
    kind: str
    venue: str | None = None
    account: str | None = None
    symbol: str | None = None
    asset: str | None = None
    component: str | None = None
    instance: str | None = None
    original: str | None = None  # for dlq


def parse(subject: str) -> Subject:
    tokens = subject.split(".")
    family = tokens[0]
    try:
        if family == "dlq" and len(tokens) > 1:
            return Subject(family="dlq", kind="dlq", original=subject[4:])
        if family == "md" and len(tokens) == 4:
            return Subject(family="md", venue=tokens[1], symbol=symbol_from_token(tokens[2]), kind=tokens[3])
        if family == "acct" and len(tokens) == 5:
            if tokens[4] in ASSET_KINDS:
                return Subject(family="acct", venue=tokens[1], account=tokens[2], asset=_unescape(tokens[3]), kind=tokens[4])
            return Subject(family="acct", venue=tokens[1], account=tokens[2], symbol=symbol_from_token(tokens[3]), kind=tokens[4])
        if family == "cmd" and len(tokens) == 5:
            return Subject(family="cmd", venue=tokens[1], account=tokens[2], symbol=symbol_from_token(tokens[3]), kind=tokens[4])
        if family == "ops" and len(tokens) == 4:
            return Subject(family="ops", component=tokens[1], instance=tokens[2], kind=tokens[3])
    except SubjectError as exc:
        raise SubjectError(f"{subject!r}: {exc}") from exc
    raise SubjectError(f"{subject!r} does not follow the subject grammar")


def matches(subject: str, pattern: str) -> bool:
    """NATS wildcard matching: `*` is one token, `>` one or more at the end."""
    return _match(subject.split("."), pattern.split("."))


def _match(tokens: list[str], pattern: list[str]) -> bool:
    for i, p in enumerate(pattern):
        if p == TAIL:
            return len(tokens) > i
        if i >= len(tokens) or (p != WILDCARD and p != tokens[i]):
            return False
    return len(tokens) == len(pattern)


def matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate for "matches any of these patterns" (empty = anything), memoized per subject."""
    if not patterns:
        return _anything
    compiled = [p.split(".") for p in patterns]
    seen: dict[str, bool] = {}

    def check(subject: str) -> bool:
        hit = seen.get(subject)
        if hit is None:
            tokens = subject.split(".")
            hit = any(_match(tokens, p) for p in compiled)
            if len(seen) < 100_000:
                seen[subject] = hit
        return hit

    return check


def _anything(_subject: str) -> bool:
    return True


class _Route(NamedTuple):
    fields: Callable[[Any], tuple[Any, ...]]  # the message's fields its subject is built from
    build: Callable[..., str]
    built: dict[tuple[Any, ...], str]  # a process sees few distinct subjects: each is built once


_ROUTES: dict[type, _Route] = {}
_BUILT_KEPT = 65_536


def subject_of(message: object) -> str:
    """The one subject a message is published on."""
    # Every input (checked against its subject) and every output goes through here: the fields
    # are read in C (attrgetter) and the subject comes from a dict, built once per distinct key.
    route = (_ROUTES or _fill_routes()).get(type(message))
    if route is None:
        raise SubjectError(f"no subject for {type(message).__name__}")
    key = route.fields(message)
    subject = route.built.get(key)
    if subject is None:
        subject = route.build(*key)
        if len(route.built) >= _BUILT_KEPT:
            route.built.clear()
        route.built[key] = subject
    return subject


def _fill_routes() -> dict[type, _Route]:
    for kind, (fields, build) in _routes().items():
        get = attrgetter(*fields)
        _ROUTES[kind] = _Route(get if len(fields) > 1 else _one(get), build, {})  # one field: not a tuple
    return _ROUTES


def _one(get: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    return lambda message: (get(message),)


def _gap(venue: str, symbol: str, account: str | None) -> str:
    return md(venue, symbol, "gap") if account is None else acct(venue, account, symbol, "gap")


def _routes() -> dict[type, tuple[tuple[str, ...], Callable[..., str]]]:
    # Imported here: the message modules do not need the grammar, and this keeps them light.
    from schemas.account import Balance, BorrowInterest, Fill, FundingPayment, Liquidation, OrderUpdate, Position
    from schemas.commands import CancelAll, CancelOrder, PlaceOrder
    from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
    from schemas.ops import (
        BreakerChange,
        Clock,
        ControlCommand,
        FundingSpread,
        ReconciliationFinding,
        RiskAlert,
        StrategyState,
        VenueSnapshot,
    )
    from schemas.registry import RegistryChange

    market, account, asset = ("venue", "symbol"), ("venue", "account", "symbol"), ("venue", "account", "asset")
    return {
        Ticker: (market, lambda v, s: md(v, s, "ticker")),
        Candle: ((*market, "interval"), lambda v, s, i: md(v, s, f"candle{i}")),
        Trade: (market, lambda v, s: md(v, s, "trade")),
        FundingRate: (market, lambda v, s: md(v, s, "funding")),
        GapMarker: ((*market, "account"), _gap),
        OrderUpdate: (account, lambda v, a, s: acct(v, a, s, "order")),
        Fill: (account, lambda v, a, s: acct(v, a, s, "fill")),
        Position: (account, lambda v, a, s: acct(v, a, s, "position")),
        Liquidation: (account, lambda v, a, s: acct(v, a, s, "liquidation")),
        FundingPayment: (account, lambda v, a, s: acct(v, a, s, "funding")),
        Balance: (asset, lambda v, a, x: balance(v, a, x)),
        BorrowInterest: (asset, lambda v, a, x: balance(v, a, x, "interest")),
        PlaceOrder: (account, lambda v, a, s: cmd(v, a, s, "place")),
        CancelOrder: (account, lambda v, a, s: cmd(v, a, s, "cancel")),
        CancelAll: (account, lambda v, a, s: cmd(v, a, s, "cancel_all")),
        StrategyState: (("component", "instance"), lambda c, i: ops(c, i, "state")),
        RiskAlert: (("component", "instance"), lambda c, i: ops(c, i, "alert")),
        BreakerChange: (("instance",), lambda i: ops("risk", i, "breaker")),
        ReconciliationFinding: (("instance",), lambda i: ops("reconciler", i, "finding")),
        ControlCommand: (("target_component", "target_instance"), control),
        VenueSnapshot: (("component", "instance"), lambda c, i: ops(c, i, "snapshot")),
        FundingSpread: (("symbol",), funding_spread),
        Clock: (("component", "instance"), lambda c, i: ops(c, i, "clock")),
        RegistryChange: (("kind", "instance"), registry),
    }
