"""ccxt's unified structures -> our schema events: pure functions, one per structure.

ccxt hands numbers over as floats parsed from the venue's decimal strings; `dec` turns them back
into the shortest decimal that prints as the same float (`str(float)`), which is the venue's own
string for every price and size a venue sends (they carry far fewer than 15 digits). Ids are the
deterministic ones of `schemas.ids`, so the executor's answer, the private stream and a REST
backfill of one fact are stored once.

Client ids come back through the venue's rule (`venues.ccxt.ids`): an order placed by hand on the
website keeps the venue's own id text (or the order id) so it is reported, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

from schemas import ids
from schemas.account import ZERO, Balance, Fill, OrderUpdate, Position
from schemas.base import OrderStatus
from schemas.market import Candle, FundingRate, Market, Ticker, Trade

Raw = Mapping[str, Any]
# ccxt precision modes (ccxt.base.decimal_to_precision): every venue we support uses TICK_SIZE.
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4
INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
_STATUS: dict[str, OrderStatus] = {
    "open": "open",
    "closed": "closed",
    "canceled": "canceled",
    "cancelled": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}


class ParseError(ValueError):
    """A venue structure we cannot turn into an event (says which field)."""


def dec(value: Any, name: str = "value") -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ParseError(f"`{name}` is missing")
    if isinstance(value, (int, str)):
        try:
            return Decimal(value)
        except ArithmeticError:  # decimal.InvalidOperation: "abc"
            raise ParseError(f"`{name}` is not a number: {value!r}") from None
    if isinstance(value, float):
        return Decimal(repr(value))
    raise ParseError(f"`{name}` is not a number: {value!r}")


def opt_dec(value: Any, name: str = "value") -> Decimal | None:
    return None if value is None else dec(value, name)


def _step(value: Any, mode: int, name: str) -> Decimal:
    """A precision entry as an increment (tick or lot), whatever the exchange's precision mode."""
    if value is None:
        raise ParseError(f"market has no `precision.{name}`")
    if mode == TICK_SIZE:
        return dec(value, name)
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value))
    raise ParseError(f"precision mode {mode} (significant digits) has no fixed {name} step")


def market(m: Raw, precision_mode: int = TICK_SIZE) -> Market | None:
    """A ccxt market as our trading rules; None for what we do not trade: futures, options, and
    inverse swaps (settled in the base coin: every PnL and notional here is in the quote)."""
    kind: Literal["spot", "swap"]
    if m.get("swap") and m.get("inverse"):
        return None
    if m.get("swap"):
        kind = "swap"
    elif m.get("spot"):
        kind = "spot"
    else:
        return None
    precision = m.get("precision") or {}
    limits = m.get("limits") or {}
    tick = _step(precision.get("price"), precision_mode, "price")
    lot = _step(precision.get("amount"), precision_mode, "amount")
    min_amount = opt_dec((limits.get("amount") or {}).get("min"), "limits.amount.min") or lot
    return Market(
        symbol=m["symbol"],
        kind=kind,
        base=m["base"],
        quote=m["quote"],
        settle=m.get("settle"),
        tick_size=tick,
        lot_size=lot,
        min_amount=max(min_amount, lot),
        min_notional=opt_dec((limits.get("cost") or {}).get("min"), "limits.cost.min") or ZERO,
        contract_size=opt_dec(m.get("contractSize"), "contractSize") or Decimal(1),
        maker_fee=opt_dec(m.get("maker"), "maker") or Decimal("0.0002"),
        taker_fee=opt_dec(m.get("taker"), "taker") or Decimal("0.0005"),
    )


def markets(exchange: Any) -> dict[str, Market]:
    """Every market a loaded ccxt exchange lists that we trade, as our rules, by symbol."""
    mode = int(getattr(exchange, "precisionMode", TICK_SIZE))
    found = (market(m, mode) for m in (exchange.markets or {}).values())
    return {m.symbol: m for m in found if m is not None}


def _ts(raw: Raw, *keys: str, default: int) -> int:
    for key in keys:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def order(
    venue: str,
    account: str,
    o: Raw,
    ts_local: int,
    client_id: Callable[[str], str | None],
) -> OrderUpdate:
    """`client_id` maps the venue's client id text back to ours (None: not one of ours)."""
    raw_cid = o.get("clientOrderId")
    order_id = o.get("id")
    # Not one of ours (placed by hand: Gate texts every website order "web"): the venue's order id
    # keys it, so two such orders never share an event id.
    cid = (client_id(raw_cid) if raw_cid else None) or (str(order_id) if order_id is not None else None) or raw_cid
    if not cid:
        raise ParseError("order has neither `clientOrderId` nor `id`")
    status = _STATUS.get(str(o.get("status")))
    if status is None:
        raise ParseError(f"order status {o.get('status')!r} is not one we know")
    amount = dec(o.get("amount"), "amount")
    filled = opt_dec(o.get("filled"), "filled") or ZERO
    remaining = opt_dec(o.get("remaining"), "remaining")
    if remaining is None:
        remaining = max(amount - filled, ZERO)
    if status != "open":
        remaining = ZERO  # an ended order holds nothing on the book, whatever the venue echoes
    fee = o.get("fee") or {}
    price = opt_dec(o.get("price"), "price")
    tif = o.get("timeInForce")
    return OrderUpdate(
        id=ids.order_event_id(venue, account, cid, status, filled),
        venue=venue,
        account=account,
        symbol=o["symbol"],
        order_id=str(order_id) if order_id is not None else None,
        client_order_id=cid,
        side=o["side"],
        order_type="market" if o.get("type") == "market" else "limit",
        price=price if price else None,  # venues echo 0 for a market order
        amount=amount,
        filled=filled,
        remaining=remaining,
        average=opt_dec(o.get("average"), "average") or None,
        status=status,
        post_only=bool(o.get("postOnly")) or tif == "PO",
        reduce_only=bool(o.get("reduceOnly")),
        fee_cost=opt_dec(fee.get("cost"), "fee.cost") or ZERO,
        fee_currency=fee.get("currency"),
        ts=_ts(o, "lastUpdateTimestamp", "lastTradeTimestamp", "timestamp", default=ts_local),
        ts_local=ts_local,
    )


def fill(venue: str, account: str, t: Raw, client_order_id: str, ts_local: int) -> Fill:
    """One of our executions (`fetch_my_trades` / `watch_my_trades`); ccxt's trade has no client
    id, so the caller names the order's."""
    fee = t.get("fee") or {}
    trade = str(t["id"])
    return Fill(
        id=ids.fill_id(venue, account, trade),
        venue=venue,
        account=account,
        symbol=t["symbol"],
        trade_id=trade,
        order_id=str(t["order"]),
        client_order_id=client_order_id,
        side=t["side"],
        price=dec(t.get("price"), "price"),
        amount=dec(t.get("amount"), "amount"),
        fee_cost=opt_dec(fee.get("cost"), "fee.cost") or ZERO,
        fee_currency=fee.get("currency"),
        liquidity="maker" if t.get("takerOrMaker") == "maker" else "taker",
        ts=_ts(t, "timestamp", default=ts_local),
        ts_local=ts_local,
    )


def position(venue: str, account: str, p: Raw, ts_local: int) -> Position:
    contracts = abs(opt_dec(p.get("contracts"), "contracts") or ZERO)
    side = p.get("side") if contracts else None
    body = {
        "venue": venue,
        "account": account,
        "symbol": p["symbol"],
        "side": side if side in ("long", "short") else None,
        "contracts": contracts,
        "contract_size": opt_dec(p.get("contractSize"), "contractSize") or Decimal(1),
        "entry_price": opt_dec(p.get("entryPrice"), "entryPrice") or None,
        "mark_price": opt_dec(p.get("markPrice"), "markPrice") or None,
        "unrealized_pnl": opt_dec(p.get("unrealizedPnl"), "unrealizedPnl") or ZERO,
        "realized_pnl": opt_dec(p.get("realizedPnl"), "realizedPnl") or ZERO,
        "leverage": opt_dec(p.get("leverage"), "leverage") or Decimal(1),
        "liquidation_price": opt_dec(p.get("liquidationPrice"), "liquidationPrice") or None,
        "margin_mode": "isolated" if p.get("marginMode") == "isolated" else "cross",
    }
    ts = _ts(p, "timestamp", default=ts_local)
    return Position(id=ids.content_id("position", [body, ts]), ts=ts, ts_local=ts_local, **body)


def balances(venue: str, account: str, b: Raw, ts_local: int) -> list[Balance]:
    """Every asset the venue reports a total for (ccxt's `{asset: {free, used, total}}`)."""
    ts = _ts(b, "timestamp", default=ts_local)
    out = []
    skip = {"info", "timestamp", "datetime", "free", "used", "total", "debt"}
    for asset in sorted(k for k in b if k not in skip):
        entry = b[asset]
        if not isinstance(entry, Mapping) or entry.get("total") is None:
            continue
        total = dec(entry["total"], f"{asset}.total")
        used = opt_dec(entry.get("used"), f"{asset}.used") or ZERO
        free = opt_dec(entry.get("free"), f"{asset}.free")
        body = {
            "venue": venue,
            "account": account,
            "asset": asset,
            "free": total - used if free is None else free,
            "used": used,
            "total": total,
        }
        out.append(Balance(id=ids.content_id("balance", [body, ts]), ts=ts, ts_local=ts_local, **body))  # type: ignore[arg-type]
    return out


def candle(venue: str, symbol: str, row: list[Any], interval: str, now_ms: int, ts_local: int) -> Candle:
    """An OHLCV row; it is closed once its interval has ended by `now_ms` (the venue's clock)."""
    if len(row) < 6:
        raise ParseError(f"an OHLCV row has 6 fields, got {len(row)}")
    open_time = int(row[0])
    closed = open_time + INTERVAL_MS.get(interval, 60_000) <= now_ms
    ts = open_time + INTERVAL_MS.get(interval, 60_000) - 1 if closed else max(open_time, min(now_ms, ts_local))
    return Candle(
        id=ids.candle_id(venue, symbol, interval, open_time, ts, closed),
        venue=venue,
        symbol=symbol,
        interval=interval,
        open_time=open_time,
        open=dec(row[1], "open"),
        high=dec(row[2], "high"),
        low=dec(row[3], "low"),
        close=dec(row[4], "close"),
        volume=opt_dec(row[5], "volume") or ZERO,
        closed=closed,
        ts=ts,
        ts_local=ts_local,
    )


def ticker(venue: str, t: Raw, ts_local: int) -> Ticker:
    bid, ask = opt_dec(t.get("bid"), "bid") or None, opt_dec(t.get("ask"), "ask") or None
    last = opt_dec(t.get("last"), "last") or opt_dec(t.get("close"), "close")
    if not last:  # a book ticker (Binance's bookTicker) has quotes only: the mid stands for last
        if bid is None or ask is None:
            raise ParseError("ticker has no `last` and no bid/ask")
        last = (bid + ask) / 2
    ts = _ts(t, "timestamp", default=ts_local)
    return Ticker(
        id=ids.ticker_id(venue, t["symbol"], ts),
        venue=venue,
        symbol=t["symbol"],
        bid=bid,
        ask=ask,
        last=last,
        bid_size=opt_dec(t.get("bidVolume"), "bidVolume"),
        ask_size=opt_dec(t.get("askVolume"), "askVolume"),
        ts=ts,
        ts_local=ts_local,
    )


def trade(venue: str, t: Raw, ts_local: int) -> Trade:
    ts = _ts(t, "timestamp", default=ts_local)
    trade_key = str(t.get("id") or f"{ts}")
    return Trade(
        id=ids.trade_id(venue, t["symbol"], trade_key),
        venue=venue,
        symbol=t["symbol"],
        trade_id=trade_key,
        side="sell" if t.get("side") == "sell" else "buy",
        price=dec(t.get("price"), "price"),
        amount=dec(t.get("amount"), "amount"),
        ts=ts,
        ts_local=ts_local,
    )


def funding_rate(venue: str, f: Raw, ts_local: int, interval: str | None = None) -> FundingRate:
    """`interval`: the venue's real funding interval when ccxt's structure lacks it (Binance keeps
    it in `fundingInfo`; a 4-hour market paid as 8-hourly would halve its APR)."""
    ts = _ts(f, "timestamp", default=ts_local)
    return FundingRate(
        id=ids.funding_id(venue, f["symbol"], ts),
        venue=venue,
        symbol=f["symbol"],
        funding_rate=dec(f.get("fundingRate"), "fundingRate"),
        next_funding_time=_ts(f, "nextFundingTimestamp", "fundingTimestamp", default=0),
        interval=f.get("interval") or interval or "8h",
        predicted_rate=opt_dec(f.get("nextFundingRate"), "nextFundingRate"),
        mark_price=opt_dec(f.get("markPrice"), "markPrice") or None,
        index_price=opt_dec(f.get("indexPrice"), "indexPrice") or None,
        ts=ts,
        ts_local=ts_local,
    )
