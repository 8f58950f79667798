"""The publisher where the review found holes: secrets in error text, a drainer that could die,
Bybit's fetch_order, hand-placed orders that shared an event id."""

from __future__ import annotations

import asyncio
from typing import Any

from bus.errors import PublishTimeout
from publishers.ccxt.loop import scrub_urls
from publishers.ccxt.outbox import Outbox
from schemas import ids
from testkit.ccxt import Answers, offline_exchange
from venues.ccxt import parse
from venues.ccxt.venue import fetch_order_params


def test_a_private_streams_url_never_reaches_a_log_or_a_gap_marker() -> None:
    text = "NetworkError: 403, message='Invalid response status', url='wss://fstream.binance.com/ws/Key123abc?timestamp=1&signature=f00'"
    scrubbed = scrub_urls(text)
    assert "Key123abc" not in scrubbed and "signature" not in scrubbed
    assert "wss://fstream.binance.com/..." in scrubbed


class FlakyPublisher:
    """The first publish times out; the resend fails outright (NATS reconnecting); then all is well."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_message(self, event: Any) -> asyncio.Future[Any]:
        self.calls += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.calls == 1:
            fut.set_exception(PublishTimeout("no ack"))
        elif self.calls == 2:
            raise ConnectionError("reconnecting: buffer full")
        else:
            fut.set_result(object())
        return fut


async def test_the_ack_drainer_survives_a_resend_that_cannot_be_sent() -> None:
    publisher = FlakyPublisher()
    out = Outbox(publisher, "binanceusdm")  # type: ignore[arg-type]
    out.start()
    try:
        await out.put([type("Event", (), {"id": "e1"})()])
        await asyncio.wait_for(out._empty.wait(), 10)
    finally:
        await out.close()
    assert publisher.calls == 3 and not out.pending and out.failed == 0


async def test_bybits_order_fetch_asks_as_ccxt_requires() -> None:
    exchange = offline_exchange("bybit", Answers({"retCode": 0, "result": {"list": []}}))
    try:
        try:
            await exchange.fetch_order("1", "BTC/USDT:USDT", fetch_order_params("bybit"))
        except Exception as exc:  # an empty answer is not an order; the refusal must not be ccxt's own
            assert "acknowledged" not in str(exc), exc
    finally:
        await exchange.close()


def test_two_orders_placed_by_hand_on_gate_keep_two_event_ids() -> None:
    def hand_placed(order_id: str) -> Any:
        raw = {"id": order_id, "clientOrderId": "web", "symbol": "BTC/USDT:USDT", "side": "buy", "amount": 1, "filled": 0, "status": "open"}
        return parse.order("gate", "main", raw, 1, lambda text: None)

    a, b = hand_placed("111"), hand_placed("222")
    assert a.id != b.id and a.id == ids.order_event_id("gate", "main", "111", "open", a.filled)


async def test_fills_of_a_busy_gap_are_fetched_page_after_page_each_once() -> None:
    from publishers.ccxt.account import FILLS_PAGE, fetch_fills_since

    trades: list[dict[str, Any]] = [
        {"id": str(i), "timestamp": 1_000 + i // 3, "symbol": "BTC/USDT:USDT"} for i in range(2 * FILLS_PAGE + 17)
    ]

    class Venue:
        calls = 0

        async def fetch_my_trades(self, symbol: str, since: int, limit: int) -> list[dict[str, Any]]:
            self.calls += 1
            return [t for t in trades if t["timestamp"] >= since][:limit]  # the oldest first, like Binance

    venue = Venue()
    got = await fetch_fills_since(venue, "BTC/USDT:USDT", 0)
    assert len(got) == len(trades) and {t["id"] for t in got} == {t["id"] for t in trades} and venue.calls >= 3
    assert [t["timestamp"] for t in got] == sorted(t["timestamp"] for t in got)
