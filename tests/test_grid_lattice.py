"""The lattice, one rule at a time: level prices on the tick, the level of a price, order sizes,
the range bounds, the config checks at start, and client order ids (pure functions)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import msgspec
import pytest

from strategies.grid.lattice import Lattice, check_config, client_order_id, client_prefix, parse_client_order_id
from testkit.grid import MARKET, grid


def lattice(anchor: str | int = 100, market: Any = MARKET, **kw: Any) -> Lattice:
    return Lattice(grid(anchor=D(anchor), **kw), market, D(anchor))


def test_arithmetic_levels_step_by_the_spacing_and_never_fall_below_one_tick() -> None:
    lat = lattice()
    assert [lat.price(k) for k in (-12, -11, -10, -9, -1, 0, 1, 2)] == [D("0.1"), D("0.1"), D("0.1"), D(10), D(90), D(100), D(110), D(120)]


def test_geometric_levels_round_half_to_even_on_the_tick() -> None:
    lat = lattice(spacing=D("0.0005"), spacing_type="geometric")
    # 100 * 1.0005 = 100.05: exactly half a tick, rounded to the even 100.0; 100.1 only two levels up.
    assert [lat.price(k) for k in (-1, 0, 1, 2, 3)] == [D("100.0"), D(100), D("100.0"), D("100.1"), D("100.2")]


def test_a_price_sits_on_the_highest_level_at_or_below_it() -> None:
    lat = lattice()
    assert [lat.level_at(D(p)) for p in ("100", "109.9", "110", "99.9", "90", "0.1", "10")] == [0, 0, 1, -1, -1, -10, -9]


def test_the_walk_corrects_a_float_estimate_that_lands_one_level_too_high() -> None:
    lat = lattice(anchor="100.06")  # level 0 is 100.06 rounded up to 100.1: the estimate for 100.08 says 0
    assert (lat.price(-1), lat.price(0)) == (D("90.1"), D("100.1"))
    assert lat.level_at(D("100.08")) == -1
    assert lat.level_at(D("100.1")) == 0


def test_the_walk_corrects_a_float_estimate_that_lands_one_level_too_low() -> None:
    lat = lattice(anchor="100.04")  # level 0 is 100.04 rounded down to 100.0: the estimate for 100.02 says -1
    assert (lat.price(0), lat.price(1), lat.price(10)) == (D("100.0"), D("110.0"), D("200.0"))
    assert lat.level_at(D("100.02")) == 0
    assert lat.level_at(D("100.0")) == 0
    assert lat.level_at(D("200.0")) == 10
    assert lat.level_at(D("199.9")) == 9


def test_a_price_far_from_the_anchor_is_placed_from_the_estimate_not_walked_to() -> None:
    geometric = lattice(spacing=D("0.01"), spacing_type="geometric")
    assert (geometric.price(69), geometric.price(70)) == (D("198.7"), D("200.7"))
    assert geometric.level_at(D(200)) == 69
    assert geometric.level_at(D(50)) == -70
    arithmetic = lattice(anchor=1000)  # 100 levels of 10 from zero: a wrong estimate would not be walked back
    assert arithmetic.level_at(D(1000)) == 0
    assert arithmetic.level_at(D(1500)) == 50


@pytest.mark.parametrize("price", ["0.09", "0", "-5", "NaN", "Infinity", "-Infinity"])
def test_a_price_below_one_tick_or_not_a_number_has_no_level(price: str) -> None:
    with pytest.raises(ValueError, match=r"below the lattice's lowest level \(0.1\)"):
        lattice().level_at(D(price))


@pytest.mark.parametrize("spacing_type", ["geometric", "arithmetic"])
def test_a_price_beyond_float_range_raises_instead_of_looping(spacing_type: str) -> None:
    spacing = D("0.01") if spacing_type == "geometric" else D(10)
    with pytest.raises(ValueError, match="cannot be placed on the lattice"):
        lattice(spacing=spacing, spacing_type=spacing_type).level_at(D("1e400"))


def test_a_walk_longer_than_max_walk_raises_instead_of_looping() -> None:
    # A spacing float cannot hold: log(float(1 + 1e-15)) is 11% off, so the estimate of level
    # 1000 says 900. The walk gives up after MAX_WALK levels rather than trusting a bad lattice.
    market = msgspec.structs.replace(MARKET, tick_size=D("1e-18"))
    lat = Lattice(grid(anchor=D(1), spacing=D("1e-15"), spacing_type="geometric"), market, D(1))
    assert lat.level_at(lat.price(10)) == 10
    with pytest.raises(ValueError, match="is not within 64 levels of its estimate 900 on the lattice"):
        lat.level_at(lat.price(1000))
    with pytest.raises(ValueError, match="is not within 64 levels of its estimate -901 on the lattice"):
        lat.level_at(lat.price(-1000))


def test_bounds_include_the_levels_on_them_and_exclude_the_ones_beyond() -> None:
    lat = lattice(lower=D(80), upper=D(120))
    assert [lat.in_bounds(k) for k in (-3, -2, 0, 2, 3)] == [False, True, True, True, False]
    assert [lattice(upper=D(120)).in_bounds(k) for k in (-9, 2, 3)] == [True, True, False]
    assert [lattice(lower=D(80)).in_bounds(k) for k in (-3, -2, 50)] == [False, True, True]
    assert lattice().in_bounds(-100) and lattice().in_bounds(100)


def test_order_sizes_are_the_notional_down_to_the_lot() -> None:
    lat = lattice()  # notional 1000
    assert [lat.amount(k) for k in (-2, -1, 1, 2)] == [D("12.5"), D("11.111"), D("9.090"), D("8.333")]


def test_an_order_worth_exactly_the_minimum_notional_is_kept_and_one_below_it_is_not() -> None:
    lat = lattice(notional=D(5))  # 0.05 at 100 is worth 5 USDT, the market's minimum
    assert lat.amount(0) == D("0.050")
    assert lat.amount(1) == 0  # 0.045 at 110 is worth 4.95
    assert lattice(notional=D("0.09")).amount(0) == 0  # below the minimum amount (0.001) at 100


def test_sizes_are_contracts_worth_the_notional_and_the_minimum_notional_counts_the_contract_size() -> None:
    # A contract of 0.01 (OKX's BTC perpetual): 1000 USDT at 100 is 1000 contracts, not 10 (which
    # would trade a hundredth of what was configured).
    market = msgspec.structs.replace(MARKET, contract_size=D("0.01"))
    assert lattice(market=market, notional=D(1000)).amount(0) == D(1000)
    assert lattice(market=market, notional=D(100)).amount(1) == D("90.909")  # at 110, down to the 0.001 lot
    assert lattice(market=market, notional=D(5)).amount(0) == D(5)  # 5 contracts at 100: worth 5 USDT, the minimum
    assert lattice(market=market, notional=D("4.99")).amount(0) == 0  # 4.99 contracts: worth 4.99


def problems(price: str | int = 100, kind: str = "swap", **kw: Any) -> list[str]:
    return check_config(grid(**kw), msgspec.structs.replace(MARKET, kind=kind), D(price))


@pytest.mark.parametrize(
    "config, kind, price",
    [
        (dict(), "swap", 100),
        (dict(mode="long"), "spot", 100),
        (dict(notional=D(5)), "swap", 100),  # exactly the minimum at the anchor (not one level up)
        (dict(lower=D(50), upper=D(150)), "swap", 200),  # a configured anchor: the current price does not matter
        (dict(anchor=None, lower=D(100), upper=D(200)), "swap", 100),  # on the lower bound
        (dict(anchor=None, lower=D(100), upper=D(200)), "swap", 200),  # on the upper bound
        (dict(anchor=None, lower=D(100), upper=D(200)), "swap", 150),
        (dict(anchor=None, lower=D(50)), "swap", 100),
        (dict(anchor=None, upper=D(200)), "swap", 100),
    ],
)
def test_configs_that_can_trade_the_market_have_no_problems(config: dict[str, Any], kind: str, price: int) -> None:
    assert problems(price, kind, **config) == []


def test_a_spacing_that_merges_the_levels_below_the_anchor_is_refused() -> None:
    # 100 * 1.0005001 rounds to 100.1, but 100 / 1.0005001 = 99.950015 rounds back to 100.0.
    assert problems(spacing=D("0.0005001"), spacing_type="geometric") == [
        "spacing 0.0005001 (geometric) is below the tick size 0.1 at 100: neighbouring levels would share a price"
    ]


def test_a_spacing_that_merges_the_levels_above_the_anchor_is_refused() -> None:
    # 100.06 rounds up to 100.1, and so does 100.11; 100.01 rounds down to 100.0.
    assert problems(anchor=D("100.06"), spacing=D("0.05")) == [
        "spacing 0.05 (arithmetic) is below the tick size 0.1 at 100.06: neighbouring levels would share a price"
    ]


def test_a_notional_below_the_market_minimum_is_refused() -> None:
    assert problems(notional=D("4.99")) == [
        "notional 4.99 buys less than the market minimum at 100 (min amount 0.001, lot 0.001, min notional 5)"
    ]


def test_a_current_price_outside_the_range_is_refused_when_it_would_be_the_anchor() -> None:
    assert problems(100, anchor=None, lower=D(200), upper=D(300)) == ["lower: the current price 100 (the anchor) is outside [200, 300]"]
    assert problems(100, anchor=None, upper=D(90)) == ["upper: the current price 100 (the anchor) is outside [None, 90]"]
    assert problems(100, anchor=None, lower=D("100.1")) == ["lower: the current price 100 (the anchor) is outside [100.1, None]"]


@pytest.mark.parametrize("mode", ["short", "neutral"])
def test_a_grid_that_goes_short_needs_a_derivatives_market(mode: str) -> None:
    assert problems(kind="spot", mode=mode) == [f"mode '{mode}' needs a derivatives market to go short; BTC/USDT:USDT is spot"]


def test_the_id_prefix_is_the_instance_letters_and_digits_plus_a_digest() -> None:
    assert client_prefix("g1") == "g1h9pt"
    assert client_prefix("my-grid_1") == "mygrid1" + client_prefix("my-grid_1")[-4:]
    assert client_prefix("my-grid_1") != client_prefix("mygrid1")  # the digest tells them apart
    assert client_prefix("abcdefghijklmnopq") == "abcdefghijkleczl"  # 12 letters of the name at most


def test_client_order_ids_spell_role_sign_level_and_generation_in_hex() -> None:
    assert client_order_id("g1h9pt", "open", 0, 1) == "g1h9ptOp0G1"
    assert client_order_id("g1h9pt", "open", 1, 16) == "g1h9ptOp1G10"
    assert client_order_id("g1h9pt", "close", -10, 255) == "g1h9ptCnaGff"
    assert parse_client_order_id("g1h9pt", "g1h9ptOp0G1") == ("open", 0, 1)
    assert parse_client_order_id("g1h9pt", "g1h9ptCnaGff") == ("close", -10, 255)
    assert parse_client_order_id("g1h9pt", "g1h9ptXp0G1") is None
    assert parse_client_order_id("g1h9pt", "g2h9ptOp0G1") is None


def test_a_client_order_id_may_have_32_characters_but_not_33() -> None:
    prefix = client_prefix("abcdefghijklmnopq")  # 16 characters, the longest
    assert len(client_order_id(prefix, "open", 0xFFF, 0x123456789A)) == 32
    with pytest.raises(ValueError, match="is longer than 32 characters"):
        client_order_id(prefix, "open", 0xFFF, 0x123456789AB)
