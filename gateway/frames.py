"""Bus event -> browser frame: the one mapping, pure, used live and by playback.

The browser protocol is docs/gateway-protocol.md: `{"type", "data", "stream", "seq"}`. Frame
data are Structs of their own (not the bus messages), so a browser never sees a field the bus
adds (ids, `ts_local`, a strategy's whole state) and the protocol's JSON Schema comes from here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeVar

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


class RegistryResult(msgspec.Struct, frozen=True, kw_only=True):
    """What became of an operator's registry change: written (ok) and what it did, or why not."""

    op: str
    instance: str
    ok: bool
    message: str


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
    "registry_result",
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


D = TypeVar("D", bound=msgspec.Struct)
_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(frame: Frame) -> str:
    """A frame's text, built once for every client that gets it."""
    return _encoder.encode(frame).decode()


def data(kind: type[D], event: Any) -> D:
    """A frame's data from a bus message: the fields the frame type names, read off the message."""
    return msgspec.convert(event, kind, from_attributes=True)


# Bus message -> (frame type, frame data type) for the frames of one market.
_OF_A_MARKET: dict[type, tuple[FrameType, type[msgspec.Struct]]] = {
    Candle: ("kline", Kline),
    Fill: ("trade_event", TradeEvent),
    Position: ("position", PositionData),
    StrategyState: ("grid_state", GridStateData),
}


def to_frame(stream: str, seq: int, event: Any) -> Routed | None:
    """The frame a stored bus event becomes, and who gets it; None for what browsers do not see
    (tickers, trades, commands, snapshots, candles of other intervals, ...)."""
    kind = type(event)
    mapped = _OF_A_MARKET.get(kind)
    if mapped is not None:
        if kind is Candle and event.interval != "1m":
            return None
        body: Any = data(mapped[1], event)
        return Routed(Market(event.venue, event.symbol), None, Frame(type=mapped[0], data=body, stream=stream, seq=seq))
    if kind is OrderUpdate:
        body = Orders(snapshot=False, orders=[data(Order, event)])
        return Routed(Market(event.venue, event.symbol), None, Frame(type="orders", data=body, stream=stream, seq=seq))
    if kind is Balance:  # an account's, not a market's: every market of its venue
        return Routed(None, event.venue, Frame(type="account", data=data(AccountData, event), stream=stream, seq=seq))
    if kind is RiskAlert:  # of a market when it names one, else of a venue, else everyone's
        market = Market(event.venue, event.symbol) if event.venue and event.symbol else None
        return Routed(market, None if market else event.venue, Frame(type="risk_alert", data=event, stream=stream, seq=seq))
    if kind is ReconciliationFinding:
        return Routed(Market(event.venue, event.symbol), None, Frame(type="reconciliation", data=event, stream=stream, seq=seq))
    return None


def error(code: str, message: str) -> Frame:
    return Frame(type="error", data=ErrorData(code=code, message=message))
