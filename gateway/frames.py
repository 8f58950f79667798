"""Bus event -> browser frame: the one mapping, pure, used live and by playback.

The browser protocol is docs/gateway-protocol.md: `{"type", "data", "stream", "seq"}`. Frame
data are Structs of their own (not the bus messages), so a browser never sees a field the bus
adds (ids, `ts_local`, a strategy's whole state) and the protocol's JSON Schema comes from here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, NamedTuple

import msgspec

from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.market import Candle
from schemas.ops import GridLevel, ReconciliationFinding, RiskAlert, StrategyState


class Market(msgspec.Struct, frozen=True, order=True):
    venue: str
    symbol: str


class Kline(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    interval: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool
    ts: int


class Order(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    account: str
    symbol: str
    order_id: str | None
    client_order_id: str
    side: str
    order_type: str
    price: Decimal | None
    amount: Decimal
    filled: Decimal
    remaining: Decimal
    status: str
    reduce_only: bool
    ts: int


class Orders(msgspec.Struct, frozen=True, kw_only=True):
    snapshot: bool
    orders: list[Order]


class TradeEvent(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    account: str
    symbol: str
    trade_id: str
    order_id: str
    client_order_id: str
    side: str
    price: Decimal
    amount: Decimal
    fee_cost: Decimal
    fee_currency: str | None
    liquidity: str
    ts: int


class PositionData(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    account: str
    symbol: str
    side: str | None
    contracts: Decimal
    entry_price: Decimal | None
    mark_price: Decimal | None
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    leverage: Decimal
    liquidation_price: Decimal | None
    ts: int


class AccountData(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    account: str
    asset: str
    free: Decimal
    used: Decimal
    total: Decimal
    ts: int


class GridStateData(msgspec.Struct, frozen=True, kw_only=True):
    component: str
    instance: str
    venue: str
    account: str
    symbol: str
    status: str
    input_seq: int
    position: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    open_orders: int
    fills: int
    levels: list[GridLevel]
    ts: int


class History(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    interval: str
    candles: list[Kline]


class Hello(msgspec.Struct, frozen=True, kw_only=True):
    markets: list[Market]
    market: Market | None
    server_time: int
    positions: dict[str, int]  # stream -> last sequence the gateway has applied
    role: str | None
    mode: str = "live"  # or "playback": a past window, not the live feed


class PlaybackData(msgspec.Struct, frozen=True, kw_only=True):
    state: str  # playing | paused | ended
    at: int  # ms: the stored time of the last event played
    start: int
    end: int
    speed: float


class ErrorData(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class Pong(msgspec.Struct, frozen=True, kw_only=True):
    ts: int


class ControlResult(msgspec.Struct, frozen=True, kw_only=True):
    """What became of an operator's control: stored (the OPS sequences) and what the strategies
    reported within the wait (instance -> status)."""

    action: str
    venue: str
    symbol: str
    ok: bool
    message: str
    stored: list[int] = []
    statuses: dict[str, str] = {}


FrameType = Literal[
    "hello",
    "history",
    "kline",
    "orders",
    "trade_event",
    "position",
    "account",
    "grid_state",
    "risk_alert",
    "reconciliation",
    "pong",
    "control_result",
    "playback",
    "error",
]


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    type: FrameType
    data: Any
    stream: str | None = None
    seq: int | None = None


class Routed(NamedTuple):
    """A frame and who gets it: a market's subscribers, or (market None) every client; `venue`
    alone (balances) means the subscribers of any market of that venue."""

    market: Market | None
    venue: str | None
    frame: Frame


_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(frame: Frame) -> str:
    """A frame's text, built once for every client that gets it."""
    return _encoder.encode(frame).decode()


def kline(c: Candle) -> Kline:
    return Kline(
        venue=c.venue,
        symbol=c.symbol,
        interval=c.interval,
        open_time=c.open_time,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        closed=c.closed,
        ts=c.ts,
    )


def order(o: OrderUpdate) -> Order:
    return Order(
        venue=o.venue,
        account=o.account,
        symbol=o.symbol,
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        side=o.side,
        order_type=o.order_type,
        price=o.price,
        amount=o.amount,
        filled=o.filled,
        remaining=o.remaining,
        status=o.status,
        reduce_only=o.reduce_only,
        ts=o.ts,
    )


def trade(f: Fill) -> TradeEvent:
    return TradeEvent(
        venue=f.venue,
        account=f.account,
        symbol=f.symbol,
        trade_id=f.trade_id,
        order_id=f.order_id,
        client_order_id=f.client_order_id,
        side=f.side,
        price=f.price,
        amount=f.amount,
        fee_cost=f.fee_cost,
        fee_currency=f.fee_currency,
        liquidity=f.liquidity,
        ts=f.ts,
    )


def position(p: Position) -> PositionData:
    return PositionData(
        venue=p.venue,
        account=p.account,
        symbol=p.symbol,
        side=p.side,
        contracts=p.contracts,
        entry_price=p.entry_price,
        mark_price=p.mark_price,
        unrealized_pnl=p.unrealized_pnl,
        realized_pnl=p.realized_pnl,
        leverage=p.leverage,
        liquidation_price=p.liquidation_price,
        ts=p.ts,
    )


def account(b: Balance) -> AccountData:
    return AccountData(venue=b.venue, account=b.account, asset=b.asset, free=b.free, used=b.used, total=b.total, ts=b.ts)


def grid_state(s: StrategyState) -> GridStateData:
    return GridStateData(
        component=s.component,
        instance=s.instance,
        venue=s.venue,
        account=s.account,
        symbol=s.symbol,
        status=s.status,
        input_seq=s.input_seq,
        position=s.position,
        realized_pnl=s.realized_pnl,
        unrealized_pnl=s.unrealized_pnl,
        open_orders=s.open_orders,
        fills=s.fills,
        levels=s.levels,
        ts=s.ts,
    )


def to_frame(stream: str, seq: int, event: Any) -> Routed | None:
    """The frame a stored bus event becomes, and who gets it; None for what browsers do not see
    (tickers, trades, commands, snapshots, ...)."""
    match event:
        case Candle() if event.interval == "1m":
            return Routed(Market(event.venue, event.symbol), None, Frame(type="kline", data=kline(event), stream=stream, seq=seq))
        case OrderUpdate():
            data = Orders(snapshot=False, orders=[order(event)])
            return Routed(Market(event.venue, event.symbol), None, Frame(type="orders", data=data, stream=stream, seq=seq))
        case Fill():
            return Routed(Market(event.venue, event.symbol), None, Frame(type="trade_event", data=trade(event), stream=stream, seq=seq))
        case Position():
            return Routed(Market(event.venue, event.symbol), None, Frame(type="position", data=position(event), stream=stream, seq=seq))
        case Balance():
            return Routed(None, event.venue, Frame(type="account", data=account(event), stream=stream, seq=seq))
        case StrategyState():
            frame = Frame(type="grid_state", data=grid_state(event), stream=stream, seq=seq)
            return Routed(Market(event.venue, event.symbol), None, frame)
        case RiskAlert():
            market = Market(event.venue, event.symbol) if event.venue and event.symbol else None
            return Routed(market, None if market else event.venue, Frame(type="risk_alert", data=event, stream=stream, seq=seq))
        case ReconciliationFinding():
            frame = Frame(type="reconciliation", data=event, stream=stream, seq=seq)
            return Routed(Market(event.venue, event.symbol), None, frame)
    return None


def error(code: str, message: str) -> Frame:
    return Frame(type="error", data=ErrorData(code=code, message=message))
