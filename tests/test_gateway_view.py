"""The gateway's pure parts: bus event -> frame, the view and its first screen, resume, candle
aggregation, client frames, the rate limit, and fan-out to fast and slow clients."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import msgspec
import pytest

from gateway import frames
from gateway.frames import Market
from gateway.hub import TOO_SLOW, Client, Hub
from gateway.inbound import Ping, RateLimit, Resume, Subscribe, parse
from gateway.metrics import GatewayMetrics
from gateway.rest import aggregate
from gateway.view import View
from schemas.account import Balance
from schemas.ops import GridLevel, StrategyState
from testkit.events import candle, fill, order_update, ticker

BTC = Market("sim", "BTC/USDT:USDT")
T0 = 1_700_000_040_000 - 1_700_000_040_000 % 3_600_000  # an hour's start


def balance(total: str = "1000", asset: str = "USDT", venue: str = "sim") -> Balance:
    t = Decimal(total)
    return Balance(id=f"b{total}{asset}", venue=venue, account="main", asset=asset, free=t, used=Decimal(0), total=t, ts=1, ts_local=1)


def state(instance: str = "g", fills: int = 0) -> StrategyState:
    return StrategyState(
        id=f"s{instance}{fills}",
        component="grid",
        instance=instance,
        venue="sim",
        account="main",
        symbol=BTC.symbol,
        status="running",
        input_seq=7,
        fills=fills,
        state={"secret": "the strategy's whole state stays on the bus"},
        levels=[GridLevel(index=0, price=Decimal(99), side="buy", role="open")],
        ts=5,
    )


def test_each_event_a_browser_sees_becomes_its_frame_with_its_stream_and_sequence() -> None:
    cases = [
        ("MARKET", candle("101"), "kline", BTC),
        ("ACCOUNT", order_update(), "orders", BTC),
        ("ACCOUNT", fill(), "trade_event", BTC),
        ("ACCOUNT", balance(), "account", None),
        ("OPS", state(), "grid_state", BTC),
    ]
    for seq, (stream, event, kind, market) in enumerate(cases, start=1):
        routed = frames.to_frame(stream, seq, event)
        assert routed is not None
        assert (routed.frame.type, routed.frame.stream, routed.frame.seq, routed.market) == (kind, stream, seq, market)
    assert frames.to_frame("ACCOUNT", 4, balance()).venue == "sim"
    assert frames.to_frame("MARKET", 9, ticker()) is None
    assert frames.to_frame("MARKET", 9, candle("1").__class__(**{**msgspec.structs.asdict(candle("1")), "interval": "5m"})) is None


def test_a_frame_says_only_what_the_protocol_says() -> None:
    routed = frames.to_frame("OPS", 3, state())
    assert routed is not None
    body = json.loads(frames.encode(routed.frame))
    assert body["type"] == "grid_state" and (body["stream"], body["seq"]) == ("OPS", 3)
    assert "state" not in body["data"] and "id" not in body["data"]  # not the strategy's whole state, not bus ids
    assert body["data"]["levels"][0]["price"] == "99"  # decimals as strings
    order = json.loads(frames.encode(frames.to_frame("ACCOUNT", 1, order_update(price="100.5")).frame))
    assert order["data"] == {"snapshot": False, "orders": [json.loads(json.dumps(order["data"]["orders"][0]))]}
    assert order["data"]["orders"][0]["price"] == "100.5" and "ts_local" not in order["data"]["orders"][0]


def fold(view: View, stream: str, seq: int, event: object) -> None:
    routed = view.apply(stream, seq, event)
    if routed is not None:
        view.remember(routed, frames.encode(routed.frame))


def test_the_first_screen_has_the_last_hundred_candles_the_open_orders_positions_balances_and_grids() -> None:
    view = View()
    for i in range(150):
        fold(view, "MARKET", i + 1, candle(str(100 + i), open_time=T0 + i * 60_000))
    fold(view, "MARKET", 151, candle("300", open_time=T0 + 149 * 60_000, closed=False, high=Decimal(301)))  # the last bar updates in place
    fold(view, "MARKET", 152, candle("1", open_time=T0))  # a late update of an old bar is dropped
    fold(view, "ACCOUNT", 1, order_update("a", price="99"))
    fold(view, "ACCOUNT", 2, order_update("b", price="98"))
    fold(view, "ACCOUNT", 3, order_update("a", status="closed", filled="0.01"))
    fold(view, "ACCOUNT", 4, balance("5"))
    fold(view, "ACCOUNT", 5, balance("7", venue="other"))
    fold(view, "OPS", 1, state())
    screen = view.first_screen(BTC)
    assert [f.type for f in screen] == ["history", "orders", "account", "grid_state"]
    history = screen[0].data
    assert len(history.candles) == 100 and history.candles[0].open_time == T0 + 50 * 60_000
    assert (history.candles[-1].close, history.candles[-1].high) == (Decimal(300), Decimal(301))
    assert screen[1].data.snapshot and [o.client_order_id for o in screen[1].data.orders] == ["b"]
    assert screen[2].data.total == Decimal(5)  # this venue's balances only
    assert view.positions == {"MARKET": 152, "ACCOUNT": 5, "OPS": 1}
    assert view.apply("ACCOUNT", 5, order_update("c")) is None  # already folded
    assert [f.type for f in view.first_screen(Market("sim", "NOPE"))] == ["history"]


def test_a_new_browser_is_shown_a_market_a_strategy_trades_first() -> None:
    view = View()
    assert view.default_market() is None
    fold(view, "MARKET", 1, candle("1", open_time=T0))
    fold(
        view,
        "MARKET",
        2,
        candle("1", open_time=T0).__class__(**{**msgspec.structs.asdict(candle("1", open_time=T0)), "symbol": "AAA/USDT"}),
    )
    assert view.default_market() == Market("sim", "AAA/USDT")  # by name when nothing trades
    fold(view, "ACCOUNT", 1, order_update("a"))
    assert view.default_market() == BTC
    fold(view, "OPS", 1, state().__class__(**{**msgspec.structs.asdict(state()), "symbol": "ETH/USDT"}))
    assert view.default_market() == Market("sim", "ETH/USDT")


def test_resume_gives_exactly_the_frames_after_the_sequences_seen_or_none_when_they_are_gone() -> None:
    view = View(resume_frames=4)
    fold(view, "MARKET", 10, candle("1", open_time=T0))
    fold(view, "ACCOUNT", 3, order_update("a"))
    fold(view, "MARKET", 11, candle("2", open_time=T0 + 60_000))
    fold(view, "ACCOUNT", 4, fill("a"))
    seqs = lambda texts: [(json.loads(t)["stream"], json.loads(t)["seq"]) for _, t in texts]  # noqa: E731
    assert seqs(view.since(BTC, {"MARKET": 10, "ACCOUNT": 3, "OPS": 0})) == [("MARKET", 11), ("ACCOUNT", 4)]
    assert seqs(view.since(BTC, {"MARKET": 11, "ACCOUNT": 4})) == []
    fold(view, "MARKET", 12, candle("3", open_time=T0 + 120_000))  # the first frame (MARKET 10) is let go
    assert view.since(BTC, {"MARKET": 9, "ACCOUNT": 3}) is None  # MARKET 10 was missed and is gone
    assert seqs(view.since(BTC, {"MARKET": 10, "ACCOUNT": 3})) == [("MARKET", 11), ("ACCOUNT", 4), ("MARKET", 12)]
    assert view.since(Market("sim", "NOPE"), {}) == []


def test_one_minute_candles_aggregate_into_bars_aligned_to_the_epoch() -> None:
    ones = [
        frames.data(
            frames.Kline, candle(str(10 + i), open_time=T0 + i * 60_000, high=Decimal(20 + i), low=Decimal(5 + i), volume=Decimal(2))
        )
        for i in range(7)
    ]
    ones[-1] = frames.data(
        frames.Kline, candle("99", open_time=T0 + 6 * 60_000, closed=False, high=Decimal(100), low=Decimal(1), volume=Decimal(3))
    )
    bars = aggregate(ones, "5m")
    assert [(b.open_time, b.interval) for b in bars] == [(T0, "5m"), (T0 + 300_000, "5m")]
    first, second = bars
    assert (first.open, first.high, first.low, first.close, first.volume, first.closed) == (10, 24, 5, 14, 10, True)
    assert (second.open, second.high, second.low, second.close, second.volume, second.closed) == (15, 100, 1, 99, 5, False)
    assert aggregate(ones, "1m") == [msgspec.structs.replace(c, interval="1m") for c in ones]
    assert [b.closed for b in aggregate(ones[:3], "5m")] == [False]  # its last minute has not closed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "malformed"),
        ('{"type": "delete_everything"}', "Invalid enum value"),
        ('{"type": "subscribe"}', "Expected `object`"),
        ('{"type": "subscribe", "data": {"venue": "", "symbol": "x"}}', "length >= 1"),
        ('{"type": "subscribe", "data": {"venue": "sim", "symbol": "x", "extra": 1}}', "unknown field"),
        ('{"type": "resume", "data": {"venue": "sim", "symbol": "x", "after": {"MARKET": -1}}}', ">= 0"),
        ('{"type": "resume", "data": {"venue": "sim", "symbol": "x", "after": {"DLQ": 1}}}', "unknown streams"),
        ('{"type": "resume", "data": {"venue": "sim", "symbol": "x", "after": {"MARKET": 1e400}}}', "out of range"),
        ("[]", "Expected `object`"),
    ],
)
def test_a_bad_client_frame_is_refused_with_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises((msgspec.DecodeError, ValueError), match=problem):
        parse(text)


def test_good_client_frames_parse() -> None:
    assert parse('{"type": "ping"}') == Ping()
    assert parse('{"type": "subscribe", "data": {"venue": "sim", "symbol": "BTC/USDT"}}') == Subscribe("sim", "BTC/USDT")
    assert parse(b'{"type": "resume", "data": {"venue": "v", "symbol": "s", "after": {"OPS": 4}}}') == Resume("v", "s", {"OPS": 4})


def test_the_rate_limit_allows_a_burst_then_its_rate() -> None:
    limit = RateLimit(per_second=2, burst=3)
    assert [limit.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.take(0.4) is False and limit.take(0.5) is True  # one token per half second
    assert [limit.take(100.0) for _ in range(4)] == [True, True, True, False]  # refills to the burst, not beyond


class Socket:
    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, bytes] | None = None
        self.gate = gate

    async def send_str(self, data: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = (code, message)
        return True


async def test_a_slow_client_gets_its_klines_conflated_then_is_closed_and_a_fast_one_gets_everything() -> None:
    hub = Hub(GatewayMetrics())
    fast_ws, slow_ws = Socket(), Socket(gate=asyncio.Event())
    fast, slow = Client(fast_ws, 10, hub.metrics), Client(slow_ws, 10, hub.metrics)
    for c in (fast, slow):
        hub.add(c)
        hub.watch(c, BTC)
    pumps = [asyncio.create_task(c.pump()) for c in (fast, slow)]
    view = View()

    async def publish(stream: str, seq: int, event: object) -> None:
        routed = view.apply(stream, seq, event)
        assert routed is not None
        hub.publish(routed, frames.encode(routed.frame))
        for _ in range(3):  # the fast client's pump writes it
            await asyncio.sleep(0)

    for i in range(40):  # the slow client takes one frame and blocks on its socket; past half its
        # queue, one kline waits, replaced by each newer one
        await publish("MARKET", i + 1, candle(str(i + 1), open_time=T0 + i * 60_000))
    assert len(slow.queue) == 5 and slow_ws.closed is None and not fast.queue
    assert hub.metrics.conflated._value.get() == 34
    assert json.loads(slow.queue[-1][1])["seq"] == 40  # type: ignore[arg-type]
    for i in range(6):  # other frames are never conflated: the queue fills
        await publish("ACCOUNT", i + 1, order_update(f"o{i}"))
    assert slow_ws.closed is not None and slow_ws.closed[0] == TOO_SLOW and slow not in hub.clients
    assert [json.loads(t)["seq"] for t in fast_ws.sent] == list(range(1, 41)) + list(range(1, 7))
    slow_ws.gate.set()
    for p in pumps:
        p.cancel()
    assert hub.metrics.dropped._value.get() == 1


async def test_balances_go_to_every_client_on_their_venue_and_alerts_without_a_market_to_everyone() -> None:
    hub = Hub(GatewayMetrics())
    view = View()
    fold(view, "MARKET", 1, candle("1", open_time=T0))
    here, elsewhere, idle = Client(Socket(), 10, hub.metrics), Client(Socket(), 10, hub.metrics), Client(Socket(), 10, hub.metrics)
    for c, m in ((here, BTC), (elsewhere, Market("other", "X")), (idle, None)):
        hub.add(c)
        hub.watch(c, m)
    routed = view.apply("ACCOUNT", 1, balance())
    assert routed is not None
    hub.publish(routed, "b")
    assert (len(here.queue), len(elsewhere.queue), len(idle.queue)) == (1, 0, 0)
