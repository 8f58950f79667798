"""The ccxt venue adapter against ccxt's own recorded payloads, offline (testkit/ccxt.py).

What the venue answered (tests/fixtures/ccxt/response) goes through ccxt's real parsing and our
adapter; the events must say what ccxt's recorded `parsedResponse` says, as exact Decimals. What
we send goes through ccxt's real request building; the venue's own parameters must carry
post-only, reduce-only, our client id, margin and the acceptance window.
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt.async_support
import pytest

from schemas.account import OrderUpdate
from testkit.ccxt import Answers, cases, offline_exchange, recordings
from venues.ccxt import metrics
from venues.ccxt.config import CcxtVenueConfig
from venues.ccxt.exchange import build, credential_names
from venues.ccxt.venue import CcxtVenue
from venues.errors import DuplicateOrder, OrderRejected, RateLimited, Transient, VenueError
from venues.protocol import OrderRequest

STATUS = {"open": "open", "closed": "closed", "canceled": "canceled", "expired": "expired", "rejected": "rejected"}


def d(value: Any) -> Decimal | None:
    return None if value is None else Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def venue_for(exchange_id: str, answers: Answers, **options: Any) -> CcxtVenue:
    """An adapter on recorded answers; Gate's trading refusal lifted, so what it would send can be
    checked (test_gate_refuses_to_trade checks the refusal itself)."""
    venue = CcxtVenue(offline_exchange(exchange_id, answers, **options), exchange_id, "main", clock=lambda: 1_700_000_000.0)
    venue.refused = None
    return venue


def plain(case: dict[str, Any]) -> bool:
    """A case our adapter can ask for: no venue-specific extra parameters in its input."""
    return not any(isinstance(arg, dict) for arg in case["input"])


def recorded(method: str, venues: tuple[str, ...] = ("binance", "okx", "bybit", "gate", "bitget")) -> list[Any]:
    return [pytest.param(v, i, id=f"{v}-{method}-{i}") for v in venues for i, c in enumerate(cases(v, method)) if plain(c)]


async def run_case(exchange_id: str, method: str, index: int, call: Any, routes: dict[str, Any] | None = None) -> tuple[Any, Any]:
    case = cases(exchange_id, method)[index]
    answers = Answers(case["httpResponse"], routes)
    venue = venue_for(exchange_id, answers)
    try:
        return await call(venue, *case["input"]), case["parsedResponse"]
    finally:
        await venue.close()


def same_order(ours: OrderUpdate, theirs: dict[str, Any]) -> None:
    assert ours.order_id == theirs["id"]
    assert ours.status == STATUS[theirs["status"]]
    assert ours.side == theirs["side"]
    assert ours.amount == d(theirs["amount"])
    assert ours.filled == (d(theirs["filled"]) or 0)
    assert ours.price == (d(theirs["price"]) or None)
    assert ours.ts == (theirs.get("lastUpdateTimestamp") or theirs.get("lastTradeTimestamp") or theirs["timestamp"])
    if theirs.get("clientOrderId"):
        assert ours.client_order_id in (theirs["clientOrderId"], theirs["clientOrderId"].removeprefix("t-"), theirs["id"])
    if theirs["status"] != "open":
        assert ours.remaining == 0


# ----------------------------------------------------------------- what the venue says


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchOpenOrders"))
async def test_open_orders_say_what_the_recording_says(exchange_id: str, index: int) -> None:
    ours, theirs = await run_case(exchange_id, "fetchOpenOrders", index, lambda v, symbol=None, *_: v.fetch_open_orders(symbol))
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs, strict=True):
        same_order(o, t)


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchOrder"))
async def test_a_fetched_order_says_what_the_recording_says(exchange_id: str, index: int) -> None:
    ours, theirs = await run_case(exchange_id, "fetchOrder", index, lambda v, oid, symbol, *_: v.fetch_order(symbol, order_id=str(oid)))
    same_order(ours, theirs)


def completable_creates() -> list[Any]:
    """Recorded creates whose answer is a whole order, or can be completed by a recorded fetch
    (Bybit's create answers are ids only and its fetchOrder recordings are disabled)."""
    return [
        p
        for p in recorded("createOrder")
        if cases(p.values[0], "createOrder")[p.values[1]]["parsedResponse"].get("status") or cases(p.values[0], "fetchOrder")
    ]


@pytest.mark.parametrize(("exchange_id", "index"), completable_creates())
async def test_a_created_order_is_reported_whole(exchange_id: str, index: int) -> None:
    """A venue that answers a create with ids only (OKX) is asked what the order did."""
    case = cases(exchange_id, "createOrder")[index]
    routes = {}
    if not case["parsedResponse"].get("status"):
        fetched = cases(exchange_id, "fetchOrder")
        routes = {"/order?": fetched[0]["httpResponse"], "trade/order": fetched[0]["httpResponse"]}

    async def create(v: CcxtVenue, symbol: str, kind: str, side: str, amount: float, price: float | None = None, *_: Any) -> OrderUpdate:
        return await v.create_order(
            OrderRequest(symbol=symbol, client_order_id="abc123", side=side, order_type=kind, amount=d(amount), price=d(price))  # type: ignore[arg-type]
        )

    ours, theirs = await run_case(exchange_id, "createOrder", index, create, routes)
    if theirs.get("status"):
        same_order(ours, theirs)
    else:
        same_order(ours, cases(exchange_id, "fetchOrder")[0]["parsedResponse"])


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchBalance"))
async def test_balances_say_what_the_recording_says(exchange_id: str, index: int) -> None:
    ours, theirs = await run_case(exchange_id, "fetchBalance", index, lambda v, *_: v.fetch_balance())
    expected = {
        a: e for a, e in theirs.items() if isinstance(e, dict) and a not in ("info", "free", "used", "total") and e.get("total") is not None
    }
    assert {b.asset for b in ours} == set(expected)
    for b in ours:
        assert b.total == d(expected[b.asset]["total"])
        assert b.used == (d(expected[b.asset].get("used")) or 0)


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchPositions", ("binanceusdm", "okx", "bybit", "gate", "bitget")))
async def test_positions_say_what_the_recording_says(exchange_id: str, index: int) -> None:
    ours, theirs = await run_case(exchange_id, "fetchPositions", index, lambda v, symbols=None, *_: v.fetch_positions(symbols))
    assert len(ours) == len(theirs) > 0
    for p, t in zip(ours, theirs, strict=True):
        assert p.symbol == t["symbol"]
        assert p.contracts == abs(d(t["contracts"]) or 0)
        assert p.side == (t["side"] if p.contracts else None)
        assert p.entry_price == (d(t["entryPrice"]) or None)
        assert p.liquidation_price == (d(t.get("liquidationPrice")) or None)
        assert p.unrealized_pnl == (d(t.get("unrealizedPnl")) or 0)


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchOHLCV"))
async def test_candles_say_what_the_recording_says(exchange_id: str, index: int) -> None:
    async def ohlcv(v: CcxtVenue, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None, *_: Any) -> Any:
        return await v.fetch_ohlcv(symbol, since, limit, interval=timeframe)

    ours, theirs = await run_case(exchange_id, "fetchOHLCV", index, ohlcv, {"/time": VENUE_TIME[exchange_id]})
    assert [c.open_time for c in ours] == [row[0] for row in theirs]
    for c, row in zip(ours, theirs, strict=True):
        assert (c.open, c.high, c.low, c.close, c.volume) == tuple(d(x) for x in row[1:6])
        assert c.closed  # the venue's clock (1.9e12) is past every recorded bar


# Each venue's answer to "what time is it" (their documented shapes), at 1.9e12 ms.
VENUE_TIME: dict[str, Any] = {
    "binance": {"serverTime": 1_900_000_000_000},
    "okx": {"code": "0", "msg": "", "data": [{"ts": "1900000000000"}]},
    "bybit": {
        "retCode": 0,
        "retMsg": "OK",
        "result": {"timeSecond": "1900000000", "timeNano": "1900000000000000000"},
        "time": 1_900_000_000_000,
    },
    "gate": {"server_time": 1_900_000_000_000},
    "bitget": {"code": "00000", "msg": "success", "requestTime": 1_900_000_000_000, "data": {"serverTime": "1900000000000"}},
}


@pytest.mark.parametrize(("exchange_id", "index"), recorded("fetchFundingRate"))
async def test_funding_rates_say_what_the_recording_says(exchange_id: str, index: int) -> None:
    ours, theirs = await run_case(exchange_id, "fetchFundingRate", index, lambda v, symbol, *_: v.fetch_funding_rate(symbol))
    assert ours.funding_rate == d(theirs["fundingRate"])
    assert ours.next_funding_time == (theirs.get("nextFundingTimestamp") or theirs.get("fundingTimestamp") or 0)
    assert ours.interval == (theirs.get("interval") or ours.interval)
    assert ours.interval.endswith("h")


async def test_market_rules_come_from_ccxt_markets() -> None:
    venue = venue_for("okx", Answers())
    try:
        markets = await venue.markets()
    finally:
        await venue.close()
    m = markets["BTC/USDT:USDT"]
    assert (m.kind, m.tick_size, m.lot_size, m.min_amount, m.contract_size) == (
        "swap",
        Decimal("0.1"),
        Decimal("0.1"),
        Decimal("0.1"),
        Decimal("0.01"),
    )
    assert (m.maker_fee, m.taker_fee) == (Decimal("0.0002"), Decimal("0.0005"))
    venue = venue_for("binanceusdm", Answers())
    try:
        b = (await venue.markets())["BTC/USDT:USDT"]
    finally:
        await venue.close()
    assert (b.tick_size, b.lot_size, b.min_amount, b.min_notional) == (Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal(5))


# ----------------------------------------------------------------- what we send

CREATE_FIELDS = {
    # venue: (symbol, where our id goes, post-only marker, reduce-only marker)
    "binanceusdm": ("BTC/USDT:USDT", ("newClientOrderId", "abc123"), ("timeInForce", "GTX"), ("reduceOnly", "true")),
    "okx": ("BTC/USDT:USDT", ("clOrdId", "abc123"), ("ordType", "post_only"), ("reduceOnly", True)),
    "bybit": ("BTC/USDT:USDT", ("orderLinkId", "abc123"), ("timeInForce", "PostOnly"), ("reduceOnly", True)),
    "gate": ("BTC/USDT:USDT", ("text", "t-abc123"), ("tif", "poc"), ("reduce_only", True)),
    "bitget": ("BTC/USDT:USDT", ("clientOid", "abc123"), ("force", "post_only"), ("reduceOnly", "YES")),
}


def sent_fields(method: str, url: str, body: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if body:
        try:
            decoded = json.loads(body)
        except json.JSONDecodeError:
            decoded = {k: v[0] for k, v in parse_qs(body).items()}
        if isinstance(decoded, list):
            decoded = decoded[0]
        fields.update(decoded)
    return fields


async def posted(exchange_id: str, request: OrderRequest, **options: Any) -> tuple[str, str, str | None]:
    """The create request our adapter sends for `request` (method, url, body)."""
    answers = Answers({})
    venue = venue_for(exchange_id, answers, **options)
    try:
        await venue.create_order(request)
    except (VenueError, ValueError, KeyError, TypeError):
        pass  # the empty answer is not an order: only what was sent matters here
    finally:
        await venue.close()
    creates = [r for r in answers.requests if r[0] == "POST"]
    assert creates, f"{exchange_id}: no create was sent ({answers.requests})"
    return creates[0]


async def sent_create(exchange_id: str, request: OrderRequest) -> dict[str, Any]:
    return sent_fields(*await posted(exchange_id, request))


@pytest.mark.parametrize("exchange_id", sorted(CREATE_FIELDS))
async def test_post_only_reduce_only_and_our_id_reach_the_venue_in_its_own_fields(exchange_id: str) -> None:
    symbol, cid, post, reduce = CREATE_FIELDS[exchange_id]
    fields = await sent_create(
        exchange_id,
        OrderRequest(
            symbol=symbol, client_order_id="abc123", side="buy", amount=Decimal(1), price=Decimal(100), post_only=True, reduce_only=True
        ),
    )
    for key, value in (cid, post, reduce):
        assert fields.get(key) == value, f"{exchange_id}: {key}={fields.get(key)!r}, expected {value!r} in {fields}"


@pytest.mark.parametrize("exchange_id", sorted(CREATE_FIELDS))
async def test_a_plain_limit_order_is_neither_post_only_nor_reduce_only(exchange_id: str) -> None:
    symbol, cid, post, reduce = CREATE_FIELDS[exchange_id]
    fields = await sent_create(
        exchange_id, OrderRequest(symbol=symbol, client_order_id="abc123", side="sell", amount=Decimal(2), price=Decimal(100))
    )
    assert fields.get(cid[0]) == cid[1]
    assert fields.get(post[0]) != post[1]
    assert fields.get(reduce[0]) in (None, False, "false", "NO")


async def test_the_acceptance_window_reaches_binance_as_recv_window() -> None:
    # The adapter's clock says 1_700_000_000_000 ms: a deadline 7 s later is a 7000 ms window.
    fields = await sent_create(
        "binanceusdm",
        OrderRequest(
            symbol="BTC/USDT:USDT",
            client_order_id="w1",
            side="buy",
            amount=Decimal("0.01"),
            price=Decimal(100),
            deadline_ms=1_700_000_007_000,
        ),
    )
    assert fields["recvWindow"] == "7000"


MARGIN: dict[str, tuple[str, dict[str, Any], str]] = {
    # venue: (spot symbol, fields that make the venue borrow what the order lacks)
    "binance": ("BTC/USDT", {"sideEffectType": "MARGIN_BUY"}, "/sapi/v1/margin/order"),
    "gate": ("BTC/USDT", {"account": "cross_margin", "auto_borrow": True}, "/spot/orders"),
    "okx": ("BTC/USDT", {"tdMode": "cross"}, "/trade/"),
    "bybit": ("BTC/USDT", {"isLeverage": 1}, "/order/create"),
}


@pytest.mark.parametrize("exchange_id", sorted(MARGIN))
async def test_use_margin_borrows_through_the_venues_own_parameters(exchange_id: str) -> None:
    symbol, expected, path = MARGIN[exchange_id]
    request = OrderRequest(symbol=symbol, client_order_id="m1", side="sell", amount=Decimal("0.01"), price=Decimal(60000), use_margin=True)
    method, url, body = await posted(exchange_id, request)
    assert path in url
    fields = sent_fields(method, url, body)
    for key, value in expected.items():
        assert fields.get(key) in (value, str(value), str(value).lower()), f"{exchange_id}: {key}={fields.get(key)!r} in {fields}"


@pytest.mark.parametrize(
    ("exchange_id", "where"),
    [
        ("binanceusdm", "origClientOrderId=abc123"),
        ("okx", '"clOrdId":"abc123"'),
        ("bybit", '"orderLinkId":"abc123"'),
        ("gate", "/orders/t-abc123"),
        ("bitget", '"clientOid":"abc123"'),
    ],
)
async def test_a_cancel_by_client_id_names_the_order_the_venues_way(exchange_id: str, where: str) -> None:
    answers = Answers({})
    venue = venue_for(exchange_id, answers)
    try:
        await venue.cancel_order(CREATE_FIELDS[exchange_id][0], client_order_id="abc123")
    except (VenueError, ValueError, KeyError, TypeError):
        pass
    finally:
        await venue.close()
    sent = [url + (body or "").replace(" ", "") for _method, url, body in answers.requests]
    assert any(where in s for s in sent), sent


# ----------------------------------------------------------------- what goes wrong


def raised_by_venue(exchange_id: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Exception:
    """The exception ccxt's own error handling raises for a venue's error answer."""
    exchange = offline_exchange(exchange_id)
    text = json.dumps(body)
    try:
        exchange.handle_errors(status, "", "https://venue/api", "POST", headers or {}, text, body, {}, "")
        exchange.handle_http_status_code(status, "", "https://venue/api", "POST", text)
    except Exception as exc:
        return exc
    finally:
        asyncio.get_event_loop().create_task(exchange.close())
    raise AssertionError(f"{exchange_id} raised nothing for {body}")


async def test_a_duplicate_client_id_is_reported_as_the_existing_order() -> None:
    duplicate = raised_by_venue("binanceusdm", 400, {"code": -4116, "msg": "ClientOrderId is duplicated."})
    existing = cases("binance", "fetchOrder")[0]["httpResponse"]
    answers = Answers(routes={"/order?": existing})
    venue = venue_for("binanceusdm", answers)
    creates = 0

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        nonlocal creates
        if method == "POST":
            creates += 1
            raise duplicate
        return await answers.fetch(url, method, headers, body)

    venue.exchange.fetch = fetch
    try:
        with pytest.raises(DuplicateOrder) as caught:
            await venue.create_order(
                OrderRequest(symbol="LTC/USDT", client_order_id="abc123", side="buy", amount=Decimal(1), price=Decimal(50))
            )
    finally:
        await venue.close()
    assert creates == 1  # never placed again
    assert caught.value.existing is not None
    same_order(caught.value.existing, cases("binance", "fetchOrder")[0]["parsedResponse"])
    assert "origClientOrderId=abc123" in answers.last()[1]


async def test_a_timeout_is_an_unknown_outcome_never_a_refusal() -> None:
    answers = Answers(ccxt.async_support.RequestTimeout("binanceusdm POST https://fapi.binance.com/fapi/v1/order request timeout"))
    venue = venue_for("binanceusdm", answers)
    try:
        with pytest.raises(Transient) as caught:
            await venue.create_order(
                OrderRequest(symbol="BTC/USDT:USDT", client_order_id="t1", side="buy", amount=Decimal("0.01"), price=Decimal(100))
            )
    finally:
        await venue.close()
    assert not isinstance(caught.value, OrderRejected)


async def test_a_rate_limited_venue_is_not_asked_again_before_the_wait_it_named() -> None:
    limited = raised_by_venue(
        "binanceusdm", 429, {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."}, {"Retry-After": "7"}
    )
    answers = Answers(limited)
    now = [1_700_000_000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    venue = CcxtVenue(offline_exchange("binanceusdm", answers), "binanceusdm", "main", clock=lambda: now[0], sleep=sleep)
    venue.exchange.last_response_headers = {"Retry-After": "7"}  # what ccxt's transport keeps of the 429
    before = metrics.RATE_LIMITED.labels("binanceusdm")._value.get()
    try:
        with pytest.raises(RateLimited):
            await venue.fetch_open_orders("BTC/USDT:USDT")
        answers.default = []
        assert await venue.fetch_open_orders("BTC/USDT:USDT") == []
    finally:
        await venue.close()
    assert metrics.RATE_LIMITED.labels("binanceusdm")._value.get() == before + 1
    assert slept and slept[0] == pytest.approx(7.0)


async def test_keys_come_from_the_environment_and_never_reach_an_error_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    names = credential_names("binanceusdm", "main")
    assert names == {"apiKey": "SQT_BINANCEUSDM_API_KEY", "secret": "SQT_BINANCEUSDM_SECRET", "password": "SQT_BINANCEUSDM_PASSWORD"}
    assert credential_names("okx", "hedge")["apiKey"] == "SQT_OKX_HEDGE_API_KEY"
    environ = {"SQT_BINANCEUSDM_API_KEY": "K3yThatMustNotLeak", "SQT_BINANCEUSDM_SECRET": "S3cretThatMustNotLeak"}
    exchange = build("binanceusdm", "main", CcxtVenueConfig(), environ=environ)
    assert (exchange.apiKey, exchange.secret) == ("K3yThatMustNotLeak", "S3cretThatMustNotLeak")
    refused = raised_by_venue("binanceusdm", 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    answers = Answers(refused)
    exchange.fetch = answers.fetch
    venue = CcxtVenue(exchange, "binanceusdm", "main")
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(VenueError) as caught:
            await venue.fetch_open_orders("BTC/USDT:USDT")
    finally:
        await venue.close()
    assert not isinstance(caught.value, Transient)  # a refused key does not get better by retrying
    seen = str(caught.value) + repr(caught.value) + caplog.text + "".join(str(r[1]) for r in answers.requests)
    assert "K3yThatMustNotLeak" not in seen and "S3cretThatMustNotLeak" not in seen
    assert not {"apiKey", "secret", "api_key"} & set(CcxtVenueConfig.__struct_fields__)


def test_sandbox_points_the_exchange_at_the_venues_testnet() -> None:
    exchange = build("binanceusdm", "main", CcxtVenueConfig(sandbox=True), environ={})
    try:
        assert "testnet" in exchange.urls["api"]["fapiPublic"]
    finally:
        asyncio.run(exchange.close())


# ----------------------------------------------------------------- ccxt's recorded requests, through us

# Fields that differ by construction: our client id in place of ccxt's generated one, the time,
# the signature, and the acceptance window (ours comes from the command's deadline).
VOLATILE = {
    "timestamp",
    "signature",
    "recvWindow",
    "newClientOrderId",
    "clientOrderId",
    "clOrdId",
    "orderLinkId",
    "text",
    "clientOid",
    "tag",
}
OUR_FIELDS = {"postOnly", "reduceOnly", "clientOrderId", "timeInForce"}


def recorded_creates() -> list[Any]:
    out = []
    for v in ("binance", "okx", "bybit", "gate", "bitget"):
        for i, case in enumerate(recordings(v, "request")["methods"].get("createOrder", [])):
            inp = case["input"]
            params = inp[5] if len(inp) > 5 else {}
            if case.get("disabled") or set(params) - OUR_FIELDS or inp[1] not in ("limit", "market"):
                continue  # a request our commands cannot express (stop orders, iceberg, ...)
            if inp[0] not in offline_markets(v):
                continue  # recorded against markets newer than the recorded market list
            out.append(pytest.param(v, i, id=f"{v}-{i}-{case['description'][:40]}"))
    return out


def offline_markets(exchange_id: str) -> set[str]:
    from testkit.ccxt import recorded_markets

    return set(recorded_markets(exchange_id))


def comparable(url: str, body: str | None) -> tuple[str, dict[str, str]]:
    """The path and the fields, each as the text the venue reads (1 and "1" are one value)."""
    fields = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in sent_fields("POST", url, body).items() if k not in VOLATILE}
    return urlsplit(url).path, fields


@pytest.mark.parametrize(("exchange_id", "index"), recorded_creates())
async def test_a_create_sends_exactly_what_ccxts_recorded_request_for_it_says(exchange_id: str, index: int) -> None:
    """ccxt's request recordings (tests/fixtures/ccxt/request) replayed through our adapter: the
    same command sends the same request, whatever ccxt version is installed."""
    case = recordings(exchange_id, "request")["methods"]["createOrder"][index]
    symbol, kind, side, amount, price, *rest = case["input"] + [None] * (5 - len(case["input"]))
    params = rest[0] if rest else {}
    request = OrderRequest(
        symbol=symbol,
        client_order_id=params.get("clientOrderId", "abc123"),
        side=side,
        order_type=kind,
        amount=d(amount),
        price=d(price),  # a market buy with a price is a cost to spend on some venues, as recorded
        post_only=bool(params.get("postOnly")),
        reduce_only=bool(params.get("reduceOnly")),
        time_in_force=params.get("timeInForce"),
    )
    _method, url, body = await posted(exchange_id, request, **case.get("options", {}))
    expected_body = case["output"] if isinstance(case["output"], str) or case["output"] is None else json.dumps(case["output"])
    assert comparable(url, body) == comparable(case["url"], expected_body)


def test_a_grid_whose_client_ids_would_outgrow_gates_refuses_to_start_there() -> None:
    from msgspec.structs import replace

    from cli.config import default_grids
    from strategies.grid.runner import client_ids_fit

    venue = venue_for("gate", Answers())
    asyncio.run(venue.close())
    grid = replace(default_grids()[0], venue="gate")
    assert venue.client_id_max == 26
    assert client_ids_fit(grid, venue.client_id_max) == []  # btc-neutral: 25 at most
    problems = client_ids_fit(replace(grid, instance="btc-neutral-long-running"), venue.client_id_max)
    assert problems and "instance" in problems[0] and "26" in problems[0]
    assert client_ids_fit(replace(grid, instance="btc-neutral-long-running"), 32) == []


async def test_a_create_past_its_deadline_is_not_sent_and_not_called_a_refusal() -> None:
    answers = Answers({})
    venue = venue_for("bitget", answers)  # Bitget has no acceptance window of its own
    try:
        with pytest.raises(Transient) as caught:
            await venue.create_order(
                OrderRequest(
                    symbol="BTC/USDT:USDT",
                    client_order_id="late1",
                    side="buy",
                    amount=Decimal(1),
                    price=Decimal(100),
                    deadline_ms=1_699_999_999_000,
                )
            )
    finally:
        await venue.close()
    assert not isinstance(caught.value, OrderRejected)
    assert not [r for r in answers.requests if r[0] == "POST"]


async def test_an_answer_that_cannot_be_read_is_an_unknown_outcome_not_a_crash_nor_a_refusal() -> None:
    # A position whose side ccxt could not name, an order whose size is not a number: the caller
    # (executor, reconciler) hears "unknown, try again", never an exception it does not expect.
    weird_position = {**cases("bybit", "fetchPositions")[0]["httpResponse"]}
    weird_position["result"] = {**weird_position["result"], "list": [{**weird_position["result"]["list"][0], "side": "Both"}]}
    venue = venue_for("bybit", Answers(weird_position))
    try:
        with pytest.raises(Transient, match="cannot be read"):
            await venue.fetch_positions(["LTC/USDT:USDT"])
    finally:
        await venue.close()
    body = cases("binance", "fetchOpenOrders")[0]["httpResponse"]
    venue = venue_for("binance", Answers([{**body[0], "status": "SOMETHING_NEW"}]))
    try:
        with pytest.raises(Transient, match="cannot be read"):
            await venue.fetch_open_orders("LTC/USDT")
    finally:
        await venue.close()


@pytest.mark.parametrize("exchange_id", ["binanceusdm", "okx", "bybit", "gate", "bitget"])
async def test_the_default_grid_sizes_its_orders_in_each_venues_contracts(exchange_id: str) -> None:
    """Amounts are contracts (ccxt's unit): a 200 USDT order is 0.003 BTC on Binance (contract 1
    BTC) and 33 contracts on Gate (0.0001 BTC each); the grid's start-up checks pass on each."""
    from cli.config import default_grids
    from strategies.grid.lattice import Lattice, check_config

    venue = venue_for(exchange_id, Answers())
    try:
        market = (await venue.markets())["BTC/USDT:USDT"]
    finally:
        await venue.close()
    grid = default_grids()[0]
    price = Decimal(60000)
    assert check_config(grid, market, price) == []
    lattice = Lattice(grid, market, price)
    amount = lattice.amount(1)
    notional = amount * lattice.price(1) * market.contract_size
    assert amount % market.lot_size == 0 and amount >= market.min_amount
    assert grid.notional * Decimal("0.8") <= notional <= grid.notional * Decimal("1.01"), (amount, notional)


async def test_inverse_swaps_futures_and_options_are_not_offered_as_markets() -> None:
    """PnL, notional and risk here are in the quote currency: a coin-settled (inverse) swap would
    be sized and booked wrongly, so it is not a market the grid can be started on."""
    venue = venue_for("binanceusdm", Answers())
    try:
        markets = await venue.markets()
    finally:
        await venue.close()
    assert "BTC/USDT:USDT" in markets and "BTC/USDT" in markets
    assert "BTC/USD:BTC" not in markets  # inverse
    assert not [s for s in markets if s.count("-") or ":" in s and not s.endswith(":USDT")]


def test_ccxts_rate_limiter_is_on_for_every_venue_we_build() -> None:
    for exchange_id in ("binanceusdm", "binance", "bitget", "okx", "bybit", "gate"):
        for streaming in (False, True):
            exchange = build(exchange_id, None, CcxtVenueConfig(), streaming=streaming, environ={})
            try:
                assert exchange.enableRateLimit is True and exchange.rateLimit > 0
            finally:
                asyncio.run(exchange.close())


async def test_gate_refuses_to_trade_and_sends_nothing() -> None:
    """Gate does not refuse a reused client id and cannot find a finished order by it: an order
    whose answer was lost could be placed twice, so creates are refused (its data still flows)."""
    answers = Answers({})
    venue = CcxtVenue(offline_exchange("gate", answers), "gate", "main")
    try:
        with pytest.raises(OrderRejected, match="placed twice"):
            await venue.create_order(
                OrderRequest(symbol="BTC/USDT:USDT", client_order_id="g1", side="buy", amount=Decimal(1), price=Decimal(100))
            )
    finally:
        await venue.close()
    assert answers.requests == []


async def test_a_wait_the_venue_asked_for_that_ends_past_the_deadline_sends_nothing() -> None:
    limited = raised_by_venue("binanceusdm", 429, {"code": -1003, "msg": "Too many requests"})
    answers = Answers(limited)
    now = [1_700_000_000.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    venue = CcxtVenue(offline_exchange("binanceusdm", answers), "binanceusdm", "main", clock=lambda: now[0], sleep=sleep)
    venue.exchange.last_response_headers = {"Retry-After": "120"}
    request = OrderRequest(
        symbol="BTC/USDT:USDT", client_order_id="w2", side="buy", amount=Decimal("0.01"), price=Decimal(100), deadline_ms=1_700_000_030_000
    )
    try:
        with pytest.raises(RateLimited):
            await venue.create_order(request)
        sent = len(answers.requests)
        with pytest.raises(Transient, match="deadline passed"):
            await venue.create_order(request)  # after 120 s of waiting, 90 s past its deadline
    finally:
        await venue.close()
    assert len(answers.requests) == sent  # the late create never left


async def test_a_duplicate_whose_order_is_not_visible_yet_is_still_a_duplicate() -> None:
    duplicate = raised_by_venue("binanceusdm", 400, {"code": -4116, "msg": "ClientOrderId is duplicated."})
    missing = raised_by_venue("binanceusdm", 400, {"code": -2013, "msg": "Order does not exist."})

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        raise duplicate if method == "POST" else missing

    venue = venue_for("binanceusdm", Answers())
    venue.exchange.fetch = fetch
    try:
        with pytest.raises(DuplicateOrder) as caught:
            await venue.create_order(
                OrderRequest(symbol="BTC/USDT:USDT", client_order_id="d2", side="buy", amount=Decimal("0.01"), price=Decimal(100))
            )
    finally:
        await venue.close()
    assert caught.value.existing is None  # the executor finds it later; never a crash, never a refusal


async def test_a_history_longer_than_a_page_is_paged_to_its_end() -> None:
    """ccxt asks Binance for at most 1,000 candles a request whatever the caller wants; a page
    that comes back shorter than asked is not the end of the history while it stops short of now."""
    now_ms = 1_700_000_000_000
    first = now_ms - now_ms % 60_000 - 3_000 * 60_000
    requested: list[int] = []

    async def klines(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        if "/time" in url:
            return {"serverTime": now_ms}
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        start, limit = int(query["startTime"]), min(int(query.get("limit", 500)), 1_500)
        requested.append(int(query.get("limit", 500)))
        times = [t for t in range(start - start % 60_000, now_ms, 60_000)][:limit]
        return [[t, "60000", "60001", "59999", "60000", "1.5", t + 59_999, "90000", 10, "0", "0", "0"] for t in times]

    exchange = offline_exchange("binanceusdm")
    exchange.fetch = klines
    venue = CcxtVenue(exchange, "binanceusdm", "main", clock=lambda: now_ms / 1000)
    try:
        candles = await venue.fetch_ohlcv("BTC/USDT:USDT", first, 2_500)
    finally:
        await venue.close()
    assert [c.open_time for c in candles] == [first + i * 60_000 for i in range(2_500)]
    assert max(requested) <= 1_000 and len(requested) >= 3
