"""A grid and an executor trading on "Binance USD-M" through ccxt, offline: the same processes that
trade on the simulated exchange, pointed by config alone (`[venues.binanceusdm]`) at a local
server speaking Binance's REST in its recorded payload shapes (testkit/binance_futures.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client

from bus.embedded import EmbeddedServer, free_port
from bus.publisher import Publisher
from bus.reader import read_stream
from schemas import ids, subjects
from schemas.account import OrderUpdate
from schemas.codec import decode
from schemas.commands import PlaceOrder
from schemas.market import Ticker
from strategies.grid.lattice import client_prefix, parse_client_order_id
from testkit.binance_futures import BinanceFutures
from testkit.bus import eventually
from testkit.ccxt import write_markets
from testkit.processes import Components
from tests.test_dashboard import dashboard_names, exported, get, served_by

pytestmark = pytest.mark.e2e

VENUE, SYMBOL = "binanceusdm", "BTC/USDT:USDT"
PREFIX = client_prefix("usdm")
CONFIG = """
data_dir = "{data}"
[nats]
url = "{url}"
[venues.binanceusdm]
rest_url = "{rest}"
markets_file = "{markets}"
timeout_ms = 3000
[executor]
venue = "binanceusdm"
account = "main"
risk_heartbeat_ms = 0
metrics_port = {port}
[[grids]]
instance = "usdm"
venue = "binanceusdm"
account = "main"
symbol = "BTC/USDT:USDT"
mode = "neutral"
levels = 2
spacing = "0.001"
notional = "100"
trail_levels = 1
max_open_orders = 8
post_only = true
metrics_port = 0
"""


@pytest.fixture
async def exchange() -> AsyncIterator[tuple[BinanceFutures, str]]:
    venue = BinanceFutures()
    runner = web.AppRunner(venue.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield venue, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def system(tmp_path: Path, nats_server: EmbeddedServer) -> Iterator[Components]:
    s = Components(tmp_path, instance="usdm")
    yield s
    s.stop()


async def tick(publisher: Publisher, price: Decimal) -> None:
    ts = int(time.time() * 1000)
    await publisher.publish(
        Ticker(
            id=ids.ticker_id(VENUE, SYMBOL, ts), venue=VENUE, symbol=SYMBOL, bid=price - 1, ask=price + 1, last=price, ts=ts, ts_local=ts
        )
    )


def grid_creates(venue: BinanceFutures) -> list[dict[str, str]]:
    return [s.params for s in venue.seen("POST", "/fapi/v1/order") if parse_client_order_id(PREFIX, s.params.get("newClientOrderId", ""))]


async def account_orders(bus: Client) -> list[OrderUpdate]:
    out: list[OrderUpdate] = []
    async for batch in read_stream(bus, "ACCOUNT", subjects=(subjects.acct(VENUE, "main", SYMBOL, "order"),)):
        out += [e for e in (decode(m.data) for m in batch) if isinstance(e, OrderUpdate)]
    return out


async def test_a_grid_and_an_executor_trade_binance_usdm_through_ccxt_with_the_venues_own_parameters(
    bus: Client, system: Components, exchange: tuple[BinanceFutures, str], tmp_path: Path, nats_server: EmbeddedServer
) -> None:
    venue, rest = exchange
    port = free_port()
    system.config.write_text(
        CONFIG.format(data=tmp_path / "data", url=nats_server.url, rest=rest, markets=write_markets(VENUE, tmp_path), port=port)
    )
    system.start("executor", "grid", secrets={"SQT_BINANCEUSDM_API_KEY": "key", "SQT_BINANCEUSDM_SECRET": "secretsecret"})
    publisher = await Publisher(bus).start()

    async def placed() -> bool:
        await tick(publisher, venue.price)
        return len(grid_creates(venue)) >= 4

    await eventually(placed, timeout=60, what="the grid's places at the venue")
    creates = grid_creates(venue)
    for params in creates:
        # Post-only on Binance futures is time in force GTX; prices on the 0.1 tick, sizes on the 0.001 lot.
        assert params["timeInForce"] == "GTX"
        assert Decimal(params["price"]) % Decimal("0.1") == 0 and Decimal(params["quantity"]) % Decimal("0.001") == 0
        assert params["symbol"] == "BTCUSDT" and 0 < int(params["recvWindow"]) <= 60_000
    buys = [Decimal(p["price"]) for p in creates if p["side"] == "BUY"]
    sells = [Decimal(p["price"]) for p in creates if p["side"] == "SELL"]
    assert buys and sells and max(buys) < venue.price < min(sells)

    async def reported() -> bool:
        seen = {o.client_order_id for o in await account_orders(bus) if o.status == "open"}
        return {p["newClientOrderId"] for p in creates} <= seen

    await eventually(reported, timeout=20, what="the executor's reports of the accepted orders")

    # The price leaves the grid: it re-centres, so orders of the old grid are cancelled at the venue.
    venue.price = Decimal("66000")

    async def cancelled() -> bool:
        await tick(publisher, venue.price)
        return bool(venue.seen("DELETE", "/fapi/v1/order"))

    await eventually(cancelled, timeout=60, what="a cancel at the venue")
    cancel = venue.seen("DELETE", "/fapi/v1/order")[0].params
    by_id = {o["orderId"]: cid for cid, o in venue.orders.items()}
    cancelled_cid = cancel.get("origClientOrderId") or by_id[cancel["orderId"]]
    assert cancelled_cid in {p["newClientOrderId"] for p in creates}
    assert venue.orders[cancelled_cid]["status"] == "CANCELED"

    # The same place sent again (a replay, a second sender): the venue says duplicate, the
    # executor fetches and reports the existing order, and nothing is placed twice.
    first = creates[0]
    original = venue.orders[first["newClientOrderId"]]
    cmd = PlaceOrder(
        id="again-" + first["newClientOrderId"],
        venue=VENUE,
        account="main",
        symbol=SYMBOL,
        client_order_id=first["newClientOrderId"],
        side=first["side"].lower(),  # type: ignore[arg-type]
        order_type="limit",
        amount=Decimal(first["quantity"]),
        price=Decimal(first["price"]),
        post_only=True,
        origin="test",
        ts=int(time.time() * 1000),
    )
    await publisher.publish(cmd)

    async def answered() -> bool:
        return len([s for s in venue.seen("POST", "/fapi/v1/order") if s.params["newClientOrderId"] == cmd.client_order_id]) >= 2

    def fetched() -> bool:
        return any(s.params.get("origClientOrderId") == cmd.client_order_id for s in venue.seen("GET", "/fapi/v1/order"))

    await eventually(answered, timeout=20, what="the repeated create at the venue")
    await eventually(fetched, timeout=20, what="the existing order fetched after the duplicate")
    assert sum(1 for o in venue.orders.values() if o["clientOrderId"] == cmd.client_order_id) == 1
    assert original["orderId"] == venue.orders[cmd.client_order_id]["orderId"]

    async def duplicate_reported() -> bool:
        reports = [o for o in await account_orders(bus) if o.client_order_id == cmd.client_order_id]
        return any(o.order_id == original["orderId"] and o.status == STATUS[original["status"]] for o in reports)

    await eventually(duplicate_reported, timeout=20, what="the existing order reported for the duplicate")

    # ... and never as a refusal, once the executor has finished with every command.
    async def handled() -> bool:
        info = await bus.jetstream().consumer_info("COMMAND", "executor-binanceusdm-main")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(handled, timeout=20, what="the executor done with its commands")

    # The venue's call metrics the dashboard reads are exported by the executor trading on it.
    async with aiohttp.ClientSession() as session:
        status, text = await get(session, port, "/metrics")
    wanted = [n for n in dashboard_names() if n.startswith("sqt_venue_")]
    assert status == 200 and wanted and all(served_by(n, exported(text)) for n in wanted)
    assert 'sqt_venue_calls_total{method="create_order",outcome="duplicate",venue="binanceusdm"}' in text
    reports = [o for o in await account_orders(bus) if o.client_order_id == cmd.client_order_id]
    assert not [o for o in reports if o.status == "rejected"]


STATUS = {"NEW": "open", "CANCELED": "canceled"}
