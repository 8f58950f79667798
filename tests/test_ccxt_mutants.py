"""Tests that pin down the ccxt venue's pure logic where mutation testing (`make mutate
MUTATE=ccxt`) showed the suite could not tell a changed decision from the right one: error
categories and their messages (venues/ccxt/errors.py) and ccxt's structures as our events
(venues/ccxt/parse.py). The recorded-payload tests check what recordings happen to contain; these
check each field, default and fallback a trader relies on, with exact Decimals."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from ccxt.base import errors as ccxt_errors

from schemas import ids
from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.market import Candle, FundingRate, Market, Ticker, Trade
from venues.ccxt import parse
from venues.ccxt.errors import from_ccxt
from venues.ccxt.ids import rule
from venues.ccxt.parse import ParseError
from venues.errors import DuplicateOrder, InsufficientCollateral, OrderRejected, RateLimited, Transient, VenueError

D = Decimal
T = 1_700_000_000_000  # our clock when the answer arrived (ts_local), ms
KEY_WORDS = "the API key is refused (or its permissions or IP whitelist)"


def answered(exchange_id: str, body: Any, raises: type[ccxt_errors.BaseError] = ccxt_errors.ExchangeError, **kw: Any) -> VenueError:
    """What we make of ccxt raising `raises` with the venue's JSON `body` in its message, as
    ccxt writes it (`<id> <body>`). ExchangeError, ccxt's plainest class, leaves the decision to
    the venue's code."""
    return from_ccxt(raises(f"{exchange_id} {json.dumps(body)}"), exchange_id, **kw)


# ----------------------------------------------------------------------- what an error means


def test_a_binance_batch_answer_is_read_by_its_first_orders_code() -> None:
    ours = answered("binanceusdm", [{"code": -4116, "msg": "ClientOrderId is duplicated."}, {"orderId": 1}])
    assert type(ours) is DuplicateOrder


def test_a_binance_filter_failure_we_do_not_name_is_an_invalid_order_not_a_bare_rejection() -> None:
    ours = answered("binance", {"code": -1013, "msg": "Filter failure: MAX_NUM_ORDERS"}, ccxt_errors.InvalidOrder)
    assert type(ours) is OrderRejected and ours.reason == "invalid"


def test_the_venues_words_decide_not_a_client_id_that_happens_to_contain_them() -> None:
    # OKX 51008 is a balance shortfall or a margin one, by its message; the id is ours, not words.
    ours = answered(
        "okx",
        {
            "code": "1",
            "data": [{"clOrdId": "marginbot1", "sCode": "51008", "sMsg": "Insufficient USDT balance in account"}],
            "msg": "All operations failed",
        },
        ccxt_errors.InsufficientFunds,
    )
    assert type(ours) is OrderRejected and ours.reason == "insufficient_balance"


def test_okxs_envelope_message_is_read_when_the_order_has_no_words_of_its_own() -> None:
    ours = answered(
        "okx",
        {"code": "1", "data": [{"clOrdId": "marginbot1", "sCode": "51008", "sMsg": ""}], "msg": "Insufficient USDT margin in account"},
        ccxt_errors.InsufficientFunds,
    )
    assert type(ours) is InsufficientCollateral
    ours = answered(
        "okx",
        {"code": "1", "data": [{"clOrdId": "marginbot1", "sCode": "51008", "sMsg": ""}], "msg": "Insufficient USDT balance in account"},
        ccxt_errors.InsufficientFunds,
    )
    assert type(ours) is OrderRejected and ours.reason == "insufficient_balance"


def test_an_empty_code_is_no_code_so_the_older_field_name_is_read() -> None:
    ours = answered("bitget", {"code": "", "msg": "", "err_code": "43118", "err_msg": "clientOrderId duplicate"})
    assert type(ours) is DuplicateOrder


def test_a_bracket_before_the_venues_answer_does_not_hide_it() -> None:
    text = 'gate GET https://api.gateio.ws/api/v4/spot/orders?text=[t-grid1] 400 Bad Request {"label":"BALANCE_NOT_ENOUGH","message":"Not enough balance"}'
    ours = from_ccxt(ccxt_errors.ExchangeError(text), "gate")
    assert type(ours) is OrderRejected and ours.reason == "insufficient_balance"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"msg": "Invalid OK-ACCESS-KEY", "code": "50111"}, ", code 50111"),
        ({"code": "1", "data": [{"sCode": "0", "sMsg": ""}, {"sCode": "50113", "sMsg": "Invalid Sign"}], "msg": ""}, ", code 50113"),
        ({"code": "1", "data": [{"sCode": "", "sMsg": ""}, {"sCode": "50113", "sMsg": "Invalid Sign"}], "msg": ""}, ", code 50113"),
        ({"code": "1", "data": [], "msg": "Invalid Sign"}, ""),  # 1: all failed, a summary, not a reason
        ({"code": "2", "data": [], "msg": "Invalid Sign"}, ""),  # 2: some failed
    ],
)
def test_a_refused_key_names_the_venues_own_code_never_okxs_summary_code(body: dict[str, Any], named: str) -> None:
    ours = answered("okx", body, ccxt_errors.AuthenticationError)
    assert type(ours) is OrderRejected and ours.reason == "upstream_rejected"
    assert str(ours) == f"okx: {KEY_WORDS}: AuthenticationError{named}"


def test_a_refused_key_without_a_body_is_named_by_ccxts_class_alone() -> None:
    ours = from_ccxt(ccxt_errors.PermissionDenied("bybit 401 Unauthorized"), "bybit")
    assert str(ours) == f"bybit: {KEY_WORDS}: PermissionDenied"


def test_a_venue_error_names_the_venue_once_then_its_answer() -> None:
    body = '{"code":-2010,"msg":"Duplicate order sent."}'
    ours = from_ccxt(ccxt_errors.InvalidOrder(f"binance {body}"), "binance")
    assert str(ours) == f"binance: the client order id is taken: the order exists: {body}"
    # ccxt's text without the exchange id in front is kept whole.
    ours = from_ccxt(ccxt_errors.InvalidOrder("binance_ws closed"), "binance")
    assert str(ours) == "binance: rejected: binance_ws closed"
    ours = from_ccxt(ccxt_errors.ExchangeError("connection reset"), "binance")
    assert str(ours) == "binance: rejected: connection reset"


def test_a_long_venue_answer_is_cut_to_300_characters_in_the_message() -> None:
    ours = from_ccxt(ccxt_errors.ExchangeError("okx " + "x" * 1000), "okx")
    assert str(ours) == "okx: rejected: " + "x" * 300
    bug = KeyError("y" * 1000)
    ours = from_ccxt(bug, "okx")
    assert type(ours) is Transient
    assert str(ours) == "okx: temporary failure, outcome unknown: KeyError: " + str(bug)[:300]


@pytest.mark.parametrize(("reset_in_ms", "wait"), [(250, 0.25), (-5_000, 0.0)])
def test_a_bybit_rate_limit_waits_until_its_reset_time_and_never_less_than_nothing(reset_in_ms: int, wait: float) -> None:
    headers = {"X-Bapi-Limit-Reset-Timestamp": str(T + reset_in_ms)}
    ours = answered("bybit", {"retCode": 10006, "retMsg": "Too many visits!"}, ccxt_errors.RateLimitExceeded, headers=headers, now_ms=T)
    assert isinstance(ours, RateLimited) and ours.retry_after == wait


# ------------------------------------------------------------------------------- numbers


def test_a_float_becomes_the_venues_decimal_exactly() -> None:
    assert str(parse.dec(0.1)) == "0.1" and str(parse.dec(1e-8)) == "1E-8"
    assert parse.dec("0.30") == D("0.30") and parse.dec(7) == 7 and parse.dec(D("2.5")) == D("2.5")


def test_a_boolean_or_nothing_is_never_read_as_a_number() -> None:
    with pytest.raises(ParseError, match=r"^`value` is missing$"):
        parse.dec(True)
    with pytest.raises(ParseError, match=r"^`value` is missing$"):
        parse.dec(None)
    with pytest.raises(ParseError, match=r"^`value` is not a number: \[1\]$"):
        parse.opt_dec([1])
    assert parse.opt_dec(None) is None


# ------------------------------------------------------------------------------- markets

SWAP: dict[str, Any] = {
    "symbol": "BTC/USDT:USDT",
    "swap": True,
    "spot": False,
    "base": "BTC",
    "quote": "USDT",
    "settle": "USDT",
    "precision": {"price": 0.1, "amount": 0.001},
    "limits": {"amount": {"min": 0.002}, "cost": {"min": 5.0}},
    "contractSize": 0.01,
    "maker": 0.0001,
    "taker": 0.0004,
}


def test_a_swap_market_carries_the_venues_rules_exactly() -> None:
    assert parse.market(SWAP) == Market(
        symbol="BTC/USDT:USDT",
        kind="swap",
        base="BTC",
        quote="USDT",
        settle="USDT",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.002"),
        min_notional=D("5.0"),
        contract_size=D("0.01"),
        maker_fee=D("0.0001"),
        taker_fee=D("0.0004"),
    )


def test_a_spot_market_is_spot_and_what_we_do_not_trade_is_left_out() -> None:
    spot = {"symbol": "ETH/USDT", "spot": True, "base": "ETH", "quote": "USDT", "precision": {"price": 0.01, "amount": 0.0001}}
    m = parse.market(spot)
    assert m is not None and m.kind == "spot" and m.settle is None
    assert parse.market({**spot, "spot": False, "future": True}) is None


def test_a_market_without_limits_or_fees_gets_the_lot_as_minimum_and_the_usual_fees() -> None:
    m = parse.market({**SWAP, "limits": {}, "contractSize": None, "maker": None, "taker": None})
    assert m is not None
    assert (m.min_amount, m.min_notional, m.contract_size) == (D("0.001"), 0, 1)
    assert (m.maker_fee, m.taker_fee) == (D("0.0002"), D("0.0005"))
    # A minimum below one lot cannot be ordered: the lot is the minimum.
    m = parse.market({**SWAP, "limits": {"amount": {"min": 0.0001}}})
    assert m is not None and m.min_amount == D("0.001")


def test_precision_in_decimal_places_becomes_a_tick_and_a_lot() -> None:
    m = parse.market({**SWAP, "precision": {"price": 2, "amount": 3}}, precision_mode=parse.DECIMAL_PLACES)
    assert m is not None and (str(m.tick_size), str(m.lot_size)) == ("0.01", "0.001")


def test_precision_in_significant_digits_or_missing_is_refused_by_name() -> None:
    with pytest.raises(ParseError, match=r"^precision mode 3 \(significant digits\) has no fixed price step$"):
        parse.market(SWAP, precision_mode=parse.SIGNIFICANT_DIGITS)
    with pytest.raises(ParseError, match=r"^market has no `precision.price`$"):
        parse.market({**SWAP, "precision": {"amount": 0.001}})
    with pytest.raises(ParseError, match=r"^market has no `precision.amount`$"):
        parse.market({**SWAP, "precision": {"price": 0.1}})


# -------------------------------------------------------------------------------- orders

ORDER: dict[str, Any] = {
    "id": "123",
    "clientOrderId": "t-grid1",
    "status": "open",
    "symbol": "BTC/USDT:USDT",
    "side": "sell",
    "type": "limit",
    "price": 0.1,
    "amount": 0.3,
    "filled": 0.1,
    "remaining": 0.2,
    "average": 0.7,
    "postOnly": False,
    "timeInForce": "PO",
    "reduceOnly": True,
    "fee": {"cost": 0.0001, "currency": "USDT"},
    "timestamp": T - 3,
    "lastTradeTimestamp": T - 2,
    "lastUpdateTimestamp": T - 1,
}
GATE_IDS = rule("gate").from_venue


def gate_order(**changes: Any) -> OrderUpdate:
    return parse.order("gate", "main", {**ORDER, **changes}, T, GATE_IDS)


def test_an_order_says_everything_the_venue_said_as_exact_decimals() -> None:
    assert gate_order() == OrderUpdate(
        id=ids.order_event_id("gate", "main", "grid1", "open", D("0.1")),
        venue="gate",
        account="main",
        symbol="BTC/USDT:USDT",
        order_id="123",
        client_order_id="grid1",
        side="sell",
        order_type="limit",
        price=D("0.1"),
        amount=D("0.3"),
        filled=D("0.1"),
        remaining=D("0.2"),
        average=D("0.7"),
        status="open",
        post_only=True,
        reduce_only=True,
        fee_cost=D("0.0001"),
        fee_currency="USDT",
        ts=T - 1,
        ts_local=T,
    )


@pytest.mark.parametrize("status", ["closed", "canceled", "cancelled", "expired", "rejected"])
def test_an_ended_order_never_keeps_a_remaining_amount_on_the_book(status: str) -> None:
    update = gate_order(status=status)
    assert update.remaining == 0 and update.filled == D("0.1")
    assert update.status == ("canceled" if status == "cancelled" else status)


def test_an_open_order_without_remaining_holds_what_is_not_filled_and_never_less_than_nothing() -> None:
    assert gate_order(remaining=None).remaining == D("0.2")
    assert gate_order(remaining=None, filled=0.5).remaining == 0  # a venue that over-reports fills


def test_an_order_status_we_do_not_know_is_refused_by_name() -> None:
    with pytest.raises(ParseError, match=r"^order status 'partially_filled' is not one we know$"):
        gate_order(status="partially_filled")


def test_an_order_is_known_by_our_id_else_its_order_id_else_the_venues_text() -> None:
    assert gate_order().client_order_id == "grid1"
    # Placed by hand: reported, not dropped, and keyed by the venue's order id, since Gate texts
    # every website order "web" (two of them must not share an event id).
    assert gate_order(clientOrderId="web").client_order_id == "123"
    assert gate_order(clientOrderId="web", id=None).client_order_id == "web"
    by_venue_id = gate_order(clientOrderId=None)
    assert by_venue_id.client_order_id == "123" and by_venue_id.id == ids.order_event_id("gate", "main", "123", "open", D("0.1"))
    with pytest.raises(ParseError, match=r"^order has neither `clientOrderId` nor `id`$"):
        gate_order(clientOrderId=None, id=None)


def test_our_client_id_mapping_is_asked_only_about_text_the_venue_sent() -> None:
    asked: list[Any] = []

    def ours(text: str) -> str | None:
        asked.append(text)
        return None

    parse.order("gate", "main", {**ORDER, "clientOrderId": None}, T, ours)
    parse.order("gate", "main", {**ORDER, "clientOrderId": ""}, T, ours)
    assert asked == []


def test_an_order_the_venue_has_not_numbered_yet_has_no_order_id() -> None:
    update = gate_order(id=None)
    assert update.order_id is None and update.client_order_id == "grid1"


def test_a_market_order_has_no_price_even_when_the_venue_echoes_zero() -> None:
    update = gate_order(type="market", price=0.0, average=0.0)
    assert update.order_type == "market" and update.price is None and update.average is None


def test_an_order_of_another_type_is_a_limit_order_and_flags_default_to_off() -> None:
    update = gate_order(type=None, postOnly=None, timeInForce="GTC", reduceOnly=None)
    assert (update.order_type, update.post_only, update.reduce_only) == ("limit", False, False)
    assert gate_order(postOnly=True, timeInForce="GTC").post_only is True


def test_an_order_without_fee_average_or_times_has_the_neutral_values() -> None:
    bare = {
        k: v for k, v in ORDER.items() if k not in ("fee", "average", "timestamp", "lastTradeTimestamp", "lastUpdateTimestamp", "filled")
    }
    update = parse.order("gate", "main", bare, T, GATE_IDS)
    assert (update.fee_cost, update.fee_currency, update.average, update.filled, update.ts) == (0, None, None, 0, T)


def test_an_orders_time_is_its_last_update_then_its_last_trade_then_its_creation() -> None:
    assert gate_order().ts == T - 1
    assert gate_order(lastUpdateTimestamp=None).ts == T - 2
    assert gate_order(lastUpdateTimestamp=None, lastTradeTimestamp=None).ts == T - 3
    assert gate_order(lastUpdateTimestamp=True, lastTradeTimestamp=None, timestamp=None).ts == T  # a flag is not a time


# --------------------------------------------------------------------------------- fills

FILL: dict[str, Any] = {
    "id": "55",
    "order": "77",
    "symbol": "BTC/USDT",
    "side": "buy",
    "price": 30000.1,
    "amount": 0.002,
    "fee": {"cost": 0.01, "currency": "BNB"},
    "takerOrMaker": "maker",
    "timestamp": T - 4,
}


def test_a_fill_says_everything_the_venue_said_as_exact_decimals() -> None:
    assert parse.fill("binance", "main", FILL, "grid1", T) == Fill(
        id=ids.fill_id("binance", "main", "55"),
        venue="binance",
        account="main",
        symbol="BTC/USDT",
        trade_id="55",
        order_id="77",
        client_order_id="grid1",
        side="buy",
        price=D("30000.1"),
        amount=D("0.002"),
        fee_cost=D("0.01"),
        fee_currency="BNB",
        liquidity="maker",
        ts=T - 4,
        ts_local=T,
    )


def test_a_fill_without_fee_liquidity_or_time_is_a_free_taker_fill_at_our_clock() -> None:
    bare = {k: v for k, v in FILL.items() if k not in ("fee", "takerOrMaker", "timestamp")}
    f = parse.fill("binance", "main", bare, "grid1", T)
    assert (f.fee_cost, f.fee_currency, f.liquidity, f.ts) == (0, None, "taker", T)


# ----------------------------------------------------------------------------- positions

POSITION: dict[str, Any] = {
    "symbol": "BTC/USDT:USDT",
    "contracts": -3.0,
    "side": "short",
    "contractSize": 0.01,
    "entryPrice": 30000.5,
    "markPrice": 30100.25,
    "unrealizedPnl": -1.5,
    "realizedPnl": 0.25,
    "leverage": 5,
    "liquidationPrice": 36000.0,
    "marginMode": "isolated",
    "timestamp": T - 9,
}


def test_a_position_says_everything_the_venue_said_and_its_id_is_its_content() -> None:
    body: dict[str, Any] = {
        "venue": "okx",
        "account": "main",
        "symbol": "BTC/USDT:USDT",
        "side": "short",
        "contracts": D("3.0"),
        "contract_size": D("0.01"),
        "entry_price": D("30000.5"),
        "mark_price": D("30100.25"),
        "unrealized_pnl": D("-1.5"),
        "realized_pnl": D("0.25"),
        "leverage": D(5),
        "liquidation_price": D("36000.0"),
        "margin_mode": "isolated",
    }
    expected = Position(id=ids.content_id("position", [body, T - 9]), ts=T - 9, ts_local=T, **body)
    assert parse.position("okx", "main", POSITION, T) == expected


def test_a_position_the_venue_gives_no_details_for_is_flat_cross_and_unlevered() -> None:
    p = parse.position("okx", "main", {"symbol": "BTC/USDT:USDT"}, T)
    assert (p.side, p.contracts, p.contract_size, p.leverage, p.margin_mode, p.ts) == (None, 0, 1, 1, "cross", T)
    assert (p.entry_price, p.mark_price, p.liquidation_price, p.unrealized_pnl, p.realized_pnl) == (None, None, None, 0, 0)


def test_a_position_side_is_long_or_short_and_a_flat_one_has_none() -> None:
    assert parse.position("okx", "main", {**POSITION, "side": "long", "contracts": 3.0}, T).side == "long"
    assert parse.position("okx", "main", {**POSITION, "contracts": 0.0}, T).side is None
    # Contracts on a side we do not know are refused (by the schema), never passed on as a side.
    with pytest.raises(ValueError, match="needs a `side`"):
        parse.position("okx", "main", {**POSITION, "side": "both"}, T)


# ------------------------------------------------------------------------------ balances


def balance(asset: str, free: str, used: str, total: str, ts: int) -> Balance:
    body: dict[str, Any] = {"venue": "gate", "account": "main", "asset": asset, "free": D(free), "used": D(used), "total": D(total)}
    return Balance(id=ids.content_id("balance", [body, ts]), ts=ts, ts_local=T, **body)


def test_balances_are_every_asset_with_a_total_and_free_is_total_less_used_when_missing() -> None:
    answer = {
        # Gate's futures account answer carries a total of its own: it is not an asset.
        "info": {"total": "1000", "currency": "USDT", "available": "800"},
        "timestamp": T - 4,
        "datetime": "2023-11-14T22:13:19.996Z",
        "BTC": {"free": None, "used": None, "total": None},  # listed, amount unknown: left out
        "ETH": {"free": 0.9, "used": 0.5, "total": 1.5},  # the venue's free (some is locked) stands
        "SOL": {"total": 3.0},
        "USDT": {"free": None, "used": 2.5, "total": 10.0},
        "free": {"ETH": 0.9, "USDT": None},
        "used": {"ETH": 0.5, "USDT": 2.5},
        "total": {"ETH": 1.5, "USDT": 10.0},
    }
    assert parse.balances("gate", "main", answer, T) == [
        balance("ETH", "0.9", "0.5", "1.5", T - 4),
        balance("SOL", "3.0", "0", "3.0", T - 4),
        balance("USDT", "7.5", "2.5", "10.0", T - 4),
    ]
    [usdt] = parse.balances("gate", "main", {"USDT": {"free": 1.0, "used": 0.0, "total": 1.0}}, T)
    assert usdt.ts == T


# ------------------------------------------------------------------------------- candles

HOUR = 3_600_000
OPEN = T - T % HOUR


def candle(row: list[Any], now_ms: int, ts_local: int = T, interval: str = "1h") -> Candle:
    return parse.candle("binance", "BTC/USDT", row, interval, now_ms, ts_local)


ROW = [OPEN, 100.5, 102.25, 99.75, 101.0, 12.5]


def test_a_candle_is_closed_from_the_millisecond_its_interval_ends_and_stamped_at_its_last() -> None:
    assert candle(ROW, now_ms=OPEN + HOUR) == Candle(
        id=ids.candle_id("binance", "BTC/USDT", "1h", OPEN, OPEN + HOUR - 1, True),
        venue="binance",
        symbol="BTC/USDT",
        interval="1h",
        open_time=OPEN,
        open=D("100.5"),
        high=D("102.25"),
        low=D("99.75"),
        close=D("101.0"),
        volume=D("12.5"),
        closed=True,
        ts=OPEN + HOUR - 1,
        ts_local=T,
    )
    still_open = candle(ROW, now_ms=OPEN + HOUR - 1, ts_local=OPEN + 5)
    assert not still_open.closed and still_open.ts == OPEN + 5
    assert still_open.id == ids.candle_id("binance", "BTC/USDT", "1h", OPEN, OPEN + 5, False)


def test_an_open_candle_is_stamped_at_the_earlier_clock_but_never_before_it_opened() -> None:
    assert candle(ROW, now_ms=OPEN + 10, ts_local=OPEN + 20).ts == OPEN + 10  # our clock runs ahead
    assert candle(ROW, now_ms=OPEN + 20, ts_local=OPEN + 10).ts == OPEN + 10
    assert candle(ROW, now_ms=OPEN - 5, ts_local=OPEN - 7).ts == OPEN  # both clocks behind the venue's bar


def test_a_candle_of_an_interval_we_do_not_know_lasts_a_minute() -> None:
    assert candle(ROW, now_ms=OPEN + 60_000, interval="3m").ts == OPEN + 59_999
    assert not candle(ROW, now_ms=OPEN + 59_999, interval="3m").closed


def test_a_candle_without_volume_has_none_and_a_short_row_is_refused() -> None:
    assert candle([*ROW[:5], None], now_ms=OPEN).volume == 0
    with pytest.raises(ParseError, match=r"^an OHLCV row has 6 fields, got 5$"):
        candle(ROW[:5], now_ms=OPEN)


# ------------------------------------------------------------------------------- tickers

TICKER: dict[str, Any] = {
    "symbol": "BTC/USDT",
    "bid": 99.5,
    "ask": 100.5,
    "last": 100.1,
    "close": 100.0,
    "bidVolume": 1.5,
    "askVolume": 2.5,
    "timestamp": T - 5,
}


def test_a_ticker_says_everything_the_venue_said_as_exact_decimals() -> None:
    assert parse.ticker("bybit", TICKER, T) == Ticker(
        id=ids.ticker_id("bybit", "BTC/USDT", T - 5),
        venue="bybit",
        symbol="BTC/USDT",
        bid=D("99.5"),
        ask=D("100.5"),
        last=D("100.1"),
        bid_size=D("1.5"),
        ask_size=D("2.5"),
        ts=T - 5,
        ts_local=T,
    )


def test_a_ticker_without_a_last_price_uses_its_close_then_the_mid_of_its_quotes() -> None:
    assert parse.ticker("bybit", {**TICKER, "last": None}, T).last == D("100.0")
    book = parse.ticker("bybit", {"symbol": "BTC/USDT", "bid": 99.5, "ask": 100.5}, T)
    assert (book.last, book.bid_size, book.ask_size, book.ts) == (D("100.0"), None, None, T)


def test_a_ticker_with_no_price_at_all_is_refused_and_a_zero_quote_is_no_quote() -> None:
    for quotes in ({"bid": 99.5}, {"ask": 100.5}, {"bid": 0.0, "ask": 100.5}, {"bid": 99.5, "ask": 0.0}):
        with pytest.raises(ParseError, match=r"^ticker has no `last` and no bid/ask$"):
            parse.ticker("bybit", {"symbol": "BTC/USDT", **quotes}, T)
    t = parse.ticker("bybit", {**TICKER, "bid": 0.0, "ask": 0.0}, T)
    assert (t.bid, t.ask, t.last) == (None, None, D("100.1"))


# -------------------------------------------------------------------------------- trades

TRADE: dict[str, Any] = {"id": 987, "symbol": "BTC/USDT", "side": "sell", "price": 100.25, "amount": 0.5, "timestamp": T - 7}


def test_a_trade_says_everything_the_venue_said_as_exact_decimals() -> None:
    assert parse.trade("okx", TRADE, T) == Trade(
        id=ids.trade_id("okx", "BTC/USDT", "987"),
        venue="okx",
        symbol="BTC/USDT",
        trade_id="987",
        side="sell",
        price=D("100.25"),
        amount=D("0.5"),
        ts=T - 7,
        ts_local=T,
    )


def test_a_trade_without_an_id_is_known_by_its_time_and_a_side_not_sell_is_buy() -> None:
    t = parse.trade("okx", {**TRADE, "id": None, "side": None}, T)
    assert (t.trade_id, t.id, t.side) == (str(T - 7), ids.trade_id("okx", "BTC/USDT", str(T - 7)), "buy")
    assert parse.trade("okx", {**TRADE, "side": "buy"}, T).side == "buy"
    t = parse.trade("okx", {**TRADE, "id": None, "timestamp": None}, T)
    assert (t.trade_id, t.ts) == (str(T), T)


# --------------------------------------------------------------------------- funding rates

FUNDING: dict[str, Any] = {
    "symbol": "BTC/USDT:USDT",
    "fundingRate": 0.0001,
    "nextFundingTimestamp": T + 1000,
    "fundingTimestamp": T + 500,
    "interval": "4h",
    "nextFundingRate": 0.0002,
    "markPrice": 100.5,
    "indexPrice": 100.4,
    "timestamp": T - 2,
}


def test_a_funding_rate_says_everything_the_venue_said_as_exact_decimals() -> None:
    assert parse.funding_rate("binanceusdm", FUNDING, T, interval="1h") == FundingRate(
        id=ids.funding_id("binanceusdm", "BTC/USDT:USDT", T - 2),
        venue="binanceusdm",
        symbol="BTC/USDT:USDT",
        funding_rate=D("0.0001"),
        next_funding_time=T + 1000,
        interval="4h",
        predicted_rate=D("0.0002"),
        mark_price=D("100.5"),
        index_price=D("100.4"),
        ts=T - 2,
        ts_local=T,
    )


def test_a_funding_interval_is_the_venues_then_the_callers_then_eight_hours() -> None:
    assert parse.funding_rate("binanceusdm", {**FUNDING, "interval": None}, T, interval="1h").interval == "1h"
    assert parse.funding_rate("binanceusdm", {**FUNDING, "interval": None}, T).interval == "8h"


def test_a_funding_rate_missing_its_details_has_no_next_time_and_unknown_prices() -> None:
    f = parse.funding_rate("binanceusdm", {**FUNDING, "nextFundingTimestamp": None}, T)
    assert f.next_funding_time == T + 500
    bare = parse.funding_rate("binanceusdm", {"symbol": "BTC/USDT:USDT", "fundingRate": 0.0001, "markPrice": 0.0, "indexPrice": 0.0}, T)
    assert (bare.next_funding_time, bare.predicted_rate, bare.mark_price, bare.index_price, bare.ts) == (0, None, None, None, T)


# ------------------------------------------------------------------- a bad field, named

NOT_A_NUMBER = [1]


def with_bad(raw: Any, path: tuple[Any, ...]) -> Any:
    bad = copy.deepcopy(raw)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = NOT_A_NUMBER
    return bad


def order_of(raw: Any) -> OrderUpdate:
    return parse.order("gate", "main", raw, T, GATE_IDS)


BAD_FIELDS: list[tuple[str, Callable[[Any], Any], Any, tuple[Any, ...], str]] = [
    ("market", parse.market, SWAP, ("precision", "price"), "price"),
    ("market", parse.market, SWAP, ("precision", "amount"), "amount"),
    ("market", parse.market, SWAP, ("limits", "amount", "min"), "limits.amount.min"),
    ("market", parse.market, SWAP, ("limits", "cost", "min"), "limits.cost.min"),
    ("market", parse.market, SWAP, ("contractSize",), "contractSize"),
    ("market", parse.market, SWAP, ("maker",), "maker"),
    ("market", parse.market, SWAP, ("taker",), "taker"),
    *(("order", order_of, ORDER, (f,), f) for f in ("amount", "filled", "remaining", "price", "average")),
    ("order", order_of, ORDER, ("fee", "cost"), "fee.cost"),
    *(("fill", lambda raw: parse.fill("binance", "main", raw, "grid1", T), FILL, (f,), f) for f in ("price", "amount")),
    ("fill", lambda raw: parse.fill("binance", "main", raw, "grid1", T), FILL, ("fee", "cost"), "fee.cost"),
    *(
        ("position", lambda raw: parse.position("okx", "main", raw, T), POSITION, (f,), f)
        for f in ("contracts", "contractSize", "entryPrice", "markPrice", "unrealizedPnl", "realizedPnl", "leverage", "liquidationPrice")
    ),
    *(
        (
            "balances",
            lambda raw: parse.balances("gate", "main", raw, T),
            {"USDT": {"free": 1.0, "used": 2.0, "total": 3.0}},
            ("USDT", f),
            f"USDT.{f}",
        )
        for f in ("free", "used", "total")
    ),
    *(("candle", lambda row: candle(row, now_ms=OPEN), ROW, (i,), f) for i, f in enumerate(("open", "high", "low", "close", "volume"), 1)),
    *(("ticker", lambda raw: parse.ticker("bybit", raw, T), TICKER, (f,), f) for f in ("bid", "ask", "last", "bidVolume", "askVolume")),
    ("ticker", lambda raw: parse.ticker("bybit", raw, T), {**TICKER, "last": None}, ("close",), "close"),
    *(("trade", lambda raw: parse.trade("okx", raw, T), TRADE, (f,), f) for f in ("price", "amount")),
    *(
        ("funding", lambda raw: parse.funding_rate("binanceusdm", raw, T), FUNDING, (f,), f)
        for f in ("fundingRate", "nextFundingRate", "markPrice", "indexPrice")
    ),
]


@pytest.mark.parametrize(("what", "read", "raw", "path", "name"), BAD_FIELDS, ids=[f"{w}-{n}" for w, _, _, _, n in BAD_FIELDS])
def test_a_field_that_is_not_a_number_is_refused_by_its_name(
    what: str, read: Callable[[Any], Any], raw: Any, path: tuple[Any, ...], name: str
) -> None:
    with pytest.raises(ParseError, match=f"^`{re.escape(name)}` is not a number: \\[1\\]$"):
        read(with_bad(raw, path))


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (lambda: order_of({**ORDER, "amount": None}), "amount"),
        (lambda: parse.fill("binance", "main", {**FILL, "price": None}, "grid1", T), "price"),
        (lambda: parse.trade("okx", {**TRADE, "amount": None}, T), "amount"),
        (lambda: parse.funding_rate("binanceusdm", {**FUNDING, "fundingRate": None}, T), "fundingRate"),
        (lambda: candle([OPEN, None, 1, 1, 1, 1], now_ms=OPEN), "open"),
    ],
)
def test_a_missing_field_we_cannot_do_without_is_refused_by_its_name(read: Callable[[], Any], name: str) -> None:
    with pytest.raises(ParseError, match=f"^`{re.escape(name)}` is missing$"):
        read()


def test_a_string_that_is_not_a_number_is_refused_naming_its_field() -> None:
    with pytest.raises(parse.ParseError, match=r"`price` is not a number: 'abc'"):
        parse.dec("abc", "price")
