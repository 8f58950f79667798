"""The book a taker walks (`venues.sim.book`), as a pure function: `walk` plans the levels, and
only `consume` records what was taken, per side, until the next print refills the book.

Reference book: depth 5 at the touch (bid 99.9 / ask 100.1) and at every tick (0.1) beyond it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.account import Fill
from tests.test_sim_helpers import SWAP, D, make_config, of, seeded, spot_market, swap_market
from venues.sim.book import Level, consume, walk
from venues.sim.state import MarketState


def book(taken: str = "0", **market: Any) -> tuple[Any, Any, MarketState]:
    spec = swap_market(**(dict(book_depth=D("5")) | market))
    return spec, spec.market(), MarketState(last=D("100"), bid=D("99.9"), ask=D("100.1"), ask_taken=D(taken), bid_taken=D(taken))


def test_consume_adds_up_what_each_taker_took_on_its_own_side() -> None:
    _, _, ms = book()
    consume(ms, "buy", D("3"))
    consume(ms, "buy", D("2"))
    assert (ms.ask_taken, ms.bid_taken) == (D("5"), D("0"))
    consume(ms, "sell", D("1"))
    consume(ms, "sell", D("2.5"))
    assert (ms.ask_taken, ms.bid_taken) == (D("5"), D("3.5"))


def test_takers_within_one_print_walk_on_from_where_the_last_one_stopped_on_each_side() -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("5")), spot_market()]))

    def levels(side: str) -> list[tuple[Decimal, Decimal]]:
        return [(f.price, f.amount) for f in of(sim.place(f"{side}{len(sim.state.accounts['main'].by_cid)}", side, "3"), Fill)]

    assert levels("buy") == [(D("100.1"), D("3"))]
    assert levels("buy") == [(D("100.1"), D("2")), (D("100.2"), D("1"))]
    assert levels("buy") == [(D("100.2"), D("3"))]
    assert levels("sell") == [(D("99.9"), D("3"))]
    assert levels("sell") == [(D("99.9"), D("2")), (D("99.8"), D("1"))]
    assert levels("sell") == [(D("99.8"), D("3"))]
    assert (sim.state.markets[SWAP].ask_taken, sim.state.markets[SWAP].bid_taken) == (D("9"), D("9"))


def test_walk_plans_without_taking() -> None:
    spec, market, ms = book()
    assert walk(spec, market, ms, "buy", D("7"), None) == [Level(D("100.1"), D("5")), Level(D("100.2"), D("2"))]
    assert walk(spec, market, ms, "sell", D("7"), D("99.9")) == [Level(D("99.9"), D("5"))]
    assert (ms.ask_taken, ms.bid_taken) == (D("0"), D("0"))


def test_walk_fills_whole_lots_only_rounding_down() -> None:
    spec, market, ms = book()
    assert walk(spec, market, ms, "buy", D("0.0035"), None) == [Level(D("100.1"), D("0.003"))]
    assert walk(spec, market, ms, "sell", D("0.0005"), None) == []  # less than a lot: nothing, at no level


def test_walk_skips_what_is_left_of_a_level_below_one_lot() -> None:
    # A checkpoint written under a finer lot size can leave less than a lot at the touch.
    spec, market, ms = book(taken="4.9995")
    assert walk(spec, market, ms, "buy", D("1"), None) == [Level(D("100.2"), D("1"))]
    assert walk(spec, market, ms, "sell", D("1"), None) == [Level(D("99.8"), D("1"))]


def test_walk_starts_at_the_level_the_book_was_taken_to_even_one_lot_short_of_its_end() -> None:
    # Lots of 1e-28 and levels of 0.25: a lot short of 1 taken is 3 whole levels and 0.25 - 1e-28 of
    # the fourth (taken / depth is 4 once rounded to Decimal's 28 digits: the level is floored exactly).
    lot = D("1e-28")
    spec, market, ms = book(taken="0.9999999999999999999999999999", lot_size=lot, min_amount=lot, book_depth=D("0.25"))
    assert walk(spec, market, ms, "buy", D("0.25") + lot, None) == [Level(D("100.4"), lot), Level(D("100.5"), D("0.25"))]
