"""What a removal sends (pure): cancels for the instance's open orders only, its share of the
venue's position, and the reduce-only IOC that closes it (orchestration/removal.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from msgspec.structs import replace

from orchestration.registry import grid_record
from orchestration.removal import FLATTEN_BAND, cancels, flatten_client_id, flatten_order, share
from schemas.account import OrderUpdate
from schemas.commands import CancelOrder, PlaceOrder
from strategies.grid.config import GridConfig
from strategies.grid.lattice import client_prefix
from testkit.arbitrage import PERP


def _order(cid: str, status: str = "open") -> OrderUpdate:
    return OrderUpdate(
        id=f"o-{cid}",
        venue="sim",
        account="main",
        symbol=PERP.symbol,
        client_order_id=cid,
        order_id=f"v-{cid}",
        side="buy",
        order_type="limit",
        price=Decimal("100"),
        amount=Decimal("0.01"),
        filled=Decimal(0),
        remaining=Decimal("0.01"),
        status=status,  # type: ignore[arg-type]
        ts=1,
        ts_local=1,
    )


def test_a_removal_cancels_only_the_instances_open_orders_with_a_new_id_each_pass() -> None:
    rec = grid_record(GridConfig(instance="a"), "sqt", "t", 1)
    mine = client_prefix("a")
    orders = [_order(mine + "x1"), _order(mine + "x2", "unknown"), _order(client_prefix("b") + "x1"), _order(mine + "x3", "canceled")]
    first = cancels(rec, orders, mine, "7.0", 5)
    assert [c.client_order_id for c in first] == [mine + "x1", mine + "x2"]
    assert first[0].order_id == "v-" + mine + "x1" and first[0].origin == "registry/grid/a"
    again = cancels(rec, orders, mine, "7.1", 6)
    assert {c.id for c in first}.isdisjoint(c.id for c in again)  # a second pass is not dropped as a duplicate


@pytest.mark.parametrize(
    ("venue", "own", "expected"),
    [
        ("0.05", "0.03", "0.03"),  # another instance holds the rest
        ("0.02", "0.03", "0.02"),  # the venue holds less (a fill it books that we have not seen)
        ("-0.05", "-0.03", "-0.03"),
        ("0.05", "-0.03", "0"),  # opposite: the venue's position is someone else's
        ("0", "0.03", "0"),
        ("0.05", "0", "0"),
    ],
)
def test_the_instances_share_of_the_venues_position(venue: str, own: str, expected: str) -> None:
    assert share(Decimal(venue), Decimal(own)) == Decimal(expected)


def test_the_closing_order_is_a_reduce_only_ioc_within_the_band_on_the_lot_and_tick() -> None:
    rec = grid_record(GridConfig(instance="a"), "sqt", "t", 1)
    prefix = client_prefix("a")
    sell = flatten_order(rec, PERP, prefix, Decimal("0.0059"), Decimal("60000.05"), 3, 7)
    assert sell is not None
    assert (sell.side, sell.amount, sell.reduce_only, sell.time_in_force, sell.order_type) == (
        "sell",
        Decimal("0.005"),
        True,
        "IOC",
        "limit",
    )
    assert sell.price == Decimal("59400.1")  # 1% under, rounded up to the tick: never further than the band
    assert sell.price >= Decimal("60000.05") * (1 - FLATTEN_BAND)
    assert sell.client_order_id == flatten_client_id(prefix, 3) and sell.client_order_id.startswith(prefix)
    buy = flatten_order(rec, PERP, prefix, Decimal("-0.002"), Decimal("60000.05"), 4, 7)
    assert buy is not None and (buy.side, buy.amount, buy.price) == ("buy", Decimal("0.002"), Decimal("60600.0"))
    assert buy.id != sell.id
    assert flatten_order(rec, PERP, prefix, Decimal("0.0009"), Decimal("60000"), 5, 7) is None  # below a lot: left
    assert flatten_order(rec, PERP, prefix, Decimal("0.001"), Decimal("100"), 5, 7) is None  # below min notional: left
    spot = replace(PERP, kind="spot", settle=None)
    on_spot = flatten_order(rec, spot, prefix, Decimal("0.01"), Decimal("60000"), 6, 7)
    assert on_spot is not None and on_spot.reduce_only is False  # a spot order cannot be reduce-only


def test_every_field_of_a_cancel_and_of_a_closing_order() -> None:
    rec = grid_record(GridConfig(instance="a", venue="v2", account="acc", symbol="ETH/USDT:USDT"), "sqt", "t", 1)
    mine = client_prefix("a")
    # Someone else's order first: the pass goes on past it.
    [cancel] = cancels(rec, [_order(client_prefix("b") + "x9"), _order(mine + "x1")], mine, "9.4", 77)
    assert cancel == CancelOrder(
        id=f"cancel:v2:acc:{mine}x1@remove9.4",
        venue="v2",
        account="acc",
        symbol="ETH/USDT:USDT",
        client_order_id=mine + "x1",
        order_id="v-" + mine + "x1",
        origin="registry/grid/a",
        reason="grid a removed",
        ts=77,
    )
    contracts = replace(
        PERP,
        symbol="ETH/USDT:USDT",
        contract_size=Decimal("0.1"),
        lot_size=Decimal("1"),
        min_amount=Decimal("1"),
        tick_size=Decimal("0.01"),
    )
    order = flatten_order(rec, contracts, mine, Decimal("-3"), Decimal("20"), 2, 88)
    assert order == PlaceOrder(
        id=f"place:v2:acc:{mine}rm2",
        venue="v2",
        account="acc",
        symbol="ETH/USDT:USDT",
        client_order_id=mine + "rm2",
        side="buy",
        order_type="limit",
        price=Decimal("20.20"),
        amount=Decimal("3"),
        reduce_only=True,
        time_in_force="IOC",
        origin="registry/grid/a",
        ts=88,
        ttl_ms=10_000,
    )
    # The minimums are the venue's, in its units: at them it is sent, below them it is left.
    # 3 contracts of 0.1 at 16.54 (1% under 16.7, rounded up to the tick) are worth 4.962: under 5.
    assert flatten_order(rec, contracts, mine, Decimal("3"), Decimal("16.7"), 2, 88) is None
    at_min = replace(contracts, min_notional=Decimal("4.953"))  # 16.51 x 3 x 0.1 exactly
    assert flatten_order(rec, at_min, mine, Decimal("3"), Decimal("16.67"), 2, 88) is not None
    assert flatten_order(rec, contracts, mine, Decimal("1"), Decimal("200"), 2, 88) is not None  # one lot, the minimum amount
    assert flatten_order(rec, contracts, mine, Decimal("0.9"), Decimal("200"), 2, 88) is None
    two_at_least = replace(contracts, min_amount=Decimal("2"))  # a whole lot, still under the minimum amount
    assert flatten_order(rec, two_at_least, mine, Decimal("1"), Decimal("200"), 2, 88) is None


@pytest.mark.parametrize(("venue", "own", "expected"), [("1", "2", "1"), ("2", "1", "1"), ("-1", "-2", "-1")])
def test_the_share_at_one_unit(venue: str, own: str, expected: str) -> None:
    assert share(Decimal(venue), Decimal(own)) == Decimal(expected)


def test_an_id_whose_client_order_ids_would_begin_like_anothers_is_refused() -> None:
    from orchestration.operations import prefix_overlap

    taken = client_prefix("ab")  # "ab" + a 4-character tag: an id spelling it out collides
    assert "would begin like those of 'ab'" in prefix_overlap(taken + "x", ["ab", "eth-1"])
    assert "would begin like those of" in prefix_overlap("ab", [taken + "x"])  # either way round
    assert prefix_overlap("eth-2", ["eth-1", "ab", "eth-2"]) == ""  # itself is not another
