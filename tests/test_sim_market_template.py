"""Many simulated markets from one description: `[sim.market_template]` (docs/adr/0023)."""

from __future__ import annotations

import asyncio
import math
import pickle
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from cli.config import ConfigError, load
from schemas import subjects
from schemas.codec import decode
from schemas.market import Ticker
from testkit.bus import eventually
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import HISTORY_KEPT, SimConfig
from venues.sim.prices import MarketPrices
from venues.sim.service import SimService

TEMPLATE: dict[str, Any] = dict(
    count=5,
    symbol="S{n:03d}/USDT:USDT",
    kind="swap",
    tick_size="0.01",
    lot_size="0.001",
    min_amount="0.001",
    start_price="100",
    maker_fee="0.0001",
    volatility="0.001",
    seed=7,
)
EXPLICIT: dict[str, Any] = dict(symbol="BTC/USDT:USDT", tick_size="0.1", lot_size="0.001", min_amount="0.001", start_price="60000")


def config(
    markets: list[dict[str, Any]] | None = None, venue_seed: int = 42, settings: dict[str, Any] | None = None, **template: Any
) -> SimConfig:
    """A venue with `markets` (default: one BTC perpetual) and the template changed by `template`."""
    raw: dict[str, Any] = {
        "seed": venue_seed,
        "markets": [EXPLICIT] if markets is None else markets,
        "market_template": TEMPLATE | template,
    }
    return msgspec.convert(raw | (settings or {}), SimConfig, strict=False)


def paths(cfg: SimConfig, steps: int = 200, start: dict[str, Decimal] | None = None) -> dict[str, list[Decimal]]:
    """Every market's prints over `steps` ticks, as the service draws them after `start`
    (each market's last price before: its backfill's last close; none: its `start_price`)."""
    prices = MarketPrices(cfg)
    last: dict[str, Decimal] = dict(start or {})
    out: dict[str, list[Decimal]] = {m.symbol: [] for m in cfg.markets}
    for step in range(1, steps + 1):
        for p in prices.next_prints(step, last):
            last[p.symbol] = p.price
            out[p.symbol].append(p.price)
    return out


def test_a_template_written_as_a_trader_would_adds_numbered_markets_with_its_rules() -> None:
    text = """
    [[markets]]
    symbol = "BTC/USDT:USDT"
    tick_size = "0.1"
    lot_size = "0.001"
    min_amount = "0.001"
    start_price = 60000

    [market_template]
    count = 3
    symbol = "S{n:03d}/USDT:USDT"
    kind = "swap"
    tick_size = "0.01"
    lot_size = "0.001"
    min_amount = "0.002"
    start_price = 100
    taker_fee = "0.0004"
    seed = 7
    """
    cfg = msgspec.convert(tomllib.loads(text), SimConfig, strict=False)
    generated = ["S000/USDT:USDT", "S001/USDT:USDT", "S002/USDT:USDT"]
    assert [m.symbol for m in cfg.markets] == ["BTC/USDT:USDT", *generated]  # added after the listed ones
    assert cfg.template_symbols() == generated
    markets = cfg.market_map()
    for symbol in generated:
        m = markets[symbol]
        assert (m.kind, m.base, m.quote, m.settle) == ("swap", symbol[:4], "USDT", "USDT")
        assert (m.tick_size, m.lot_size, m.min_amount, m.taker_fee) == (
            Decimal("0.01"),
            Decimal("0.001"),
            Decimal("0.002"),
            Decimal("0.0004"),
        )
    specs = {m.symbol: m for m in cfg.markets}
    assert {specs[s].start_price for s in generated} == {Decimal(100)}  # no spread: one start price
    assert {specs[s].seed for s in generated} == {7}
    assert specs["BTC/USDT:USDT"].seed is None and cfg.seed_of(specs["BTC/USDT:USDT"]) == 42


def test_a_template_without_a_seed_draws_from_the_venues_seed() -> None:
    cfg = config(venue_seed=11, seed=None)
    assert {cfg.seed_of(m) for m in cfg.markets} == {11}


def test_without_a_template_the_markets_are_the_listed_ones() -> None:
    cfg = msgspec.convert({"markets": [EXPLICIT]}, SimConfig, strict=False)
    assert [m.symbol for m in cfg.markets] == ["BTC/USDT:USDT"] and cfg.template_symbols() == []
    assert config(count=0).template_symbols() == [] and len(config(count=0).markets) == 1


def test_generated_markets_can_be_all_the_markets() -> None:
    cfg = config(markets=[], count=100)
    assert len(cfg.markets) == 100 and cfg.markets[-1].symbol == "S099/USDT:USDT"


def test_each_generated_market_walks_its_own_path_and_its_seed_repeats_it() -> None:
    first = paths(config())
    generated = config().template_symbols()
    moves = [tuple(first[s]) for s in generated]
    assert len(set(moves)) == len(moves)  # no two markets share a path
    for s in generated:
        assert len(set(first[s])) > 10  # and each one moves
    returns = [[math.log(b / a) for a, b in zip(first[s], first[s][1:])] for s in generated]
    for a, b in zip(returns, returns[1:]):
        corr = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        assert abs(corr) < 0.3  # independent, not one path shifted or scaled
    assert paths(config()) == first  # the same seed: the same paths, run to run
    other = paths(config(seed=8))
    assert all(other[s] != first[s] for s in generated)  # the template's seed changes them
    assert other["BTC/USDT:USDT"] == first["BTC/USDT:USDT"]  # and not the listed market's (the venue's seed)
    history = MarketPrices(config())
    bars = [history.history(s, 1_700_000_000_000, 30) for s in generated]
    assert len({tuple(b.close for b in bs) for bs in bars}) == len(generated)  # backfills differ too


def test_a_start_price_spread_gives_each_market_its_own_seeded_start_on_its_tick() -> None:
    cfg = config(count=50, start_price_spread="0.3")
    starts = [m.start_price for m in cfg.markets[1:]]
    assert len(set(starts)) > 45
    assert all(p % Decimal("0.01") == 0 and Decimal(20) < p < Decimal(500) for p in starts)
    assert [m.start_price for m in config(count=50, start_price_spread="0.3").markets] == [m.start_price for m in cfg.markets]
    assert [m.start_price for m in config(count=50, start_price_spread="0.3", seed=8).markets[1:]] != starts


@pytest.mark.parametrize(
    ("template", "key", "says"),
    [
        ({"count": -1}, "count", "0..2000"),
        ({"count": 2001}, "count", "0..2000"),
        ({"symbol": "S/USDT:USDT"}, "symbol", "{n}"),
        ({"symbol": "S{m}/USDT:USDT"}, "symbol", "{n}"),
        ({"symbol": "S{n:q}/USDT:USDT"}, "symbol", "pattern"),
        ({"symbol": "S{n}-USDT"}, "symbol", "unified symbol"),
        ({"tick_size": "-0.01"}, "tick_size", "positive"),
        ({"start_price": "0"}, "start_price", "positive"),
        ({"book_levels": 0}, "book_levels", "1..1000"),
        ({"follows": "BTC/USDT:USDT"}, "follows", "cannot be templated"),
        ({"start_price_spread": "2"}, "start_price_spread", "[0, 1]"),
    ],
)
def test_a_bad_template_field_names_its_key(template: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        config(**template)
    assert f"`{key}`" in str(caught.value) and says in str(caught.value)
    assert str(caught.value).endswith("at `$.market_template`")


def test_the_config_loader_names_the_full_key(tmp_path: Path) -> None:
    path = tmp_path / "sqt.toml"
    path.write_text(
        '[sim.market_template]\ncount = 5000\nsymbol = "S{n}/USDT:USDT"\ntick_size = "0.01"\nlot_size = "0.001"\nmin_amount = "0.001"\nstart_price = 100\n'
    )
    with pytest.raises(ConfigError, match=r"config key sim\.market_template\.count .*0\.\.2000, got 5000"):
        load(path, environ={})
    path.write_text(path.read_text().replace("5000", "100"))
    cfg = load(path, environ={})
    assert cfg.sim.template_symbols()[-1] == "S99/USDT:USDT" and len(cfg.sim.markets) == 103  # beside the default markets


def test_a_generated_name_that_is_also_listed_is_refused() -> None:
    listed = EXPLICIT | {"symbol": "S003/USDT:USDT"}
    with pytest.raises(msgspec.ValidationError, match=r"`market_template.symbol`: S003/USDT:USDT is also listed in `markets`"):
        config(markets=[listed])
    with pytest.raises(msgspec.ValidationError, match="a symbol twice"):
        config(markets=[listed, listed], count=0)


def test_a_config_rebuilt_from_an_expanded_one_generates_nothing_twice() -> None:
    cfg = config(start_price_spread="0.1")
    assert pickle.loads(pickle.dumps(cfg)).markets == cfg.markets
    assert msgspec.structs.replace(cfg, history_minutes=0).markets == cfg.markets
    assert msgspec.convert(msgspec.to_builtins(cfg), SimConfig, strict=False).markets == cfg.markets
    # As `sqt backtest` does: the generated markets changed in place, under their names.
    changed = [msgspec.structs.replace(m, funding_volatility=Decimal(0)) for m in cfg.markets]
    assert msgspec.structs.replace(cfg, markets=changed).markets == changed


def test_many_markets_keep_fewer_bars_each_so_the_checkpoint_stays_small() -> None:
    assert config().history_kept == HISTORY_KEPT
    assert config(markets=[], count=100).history_kept == 600
    assert config(markets=[], count=2000).history_kept == 30


# ---------------------------------------------------------------------------- the running exchange


async def test_a_generated_market_serves_tickers_and_candles_and_matches_an_order(bus: Client) -> None:
    cfg = config(markets=[], count=3, seed=5, settings=dict(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=20))
    service = SimService(bus, cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    venue = SimVenue(bus)
    try:
        await eventually(lambda: service.service is not None, what="the simulated exchange to register")
        symbol = "S002/USDT:USDT"
        tickers: dict[str, list[Ticker]] = {}

        async def seen(msg: Msg) -> None:
            t = decode(msg.data)
            assert isinstance(t, Ticker)
            tickers.setdefault(t.symbol, []).append(t)

        sub = await bus.subscribe(subjects.md("sim", "*", "ticker"), cb=seen)
        markets = await venue.markets()
        assert sorted(markets) == cfg.template_symbols()
        assert markets[symbol].tick_size == Decimal("0.01") and markets[symbol].kind == "swap"
        backfills = {s: await venue.fetch_ohlcv(s) for s in cfg.template_symbols()}
        assert [len(b) for b in backfills.values()] == [20, 20, 20]
        await venue.step(3)
        await eventually(lambda: all(len(tickers.get(s, [])) == 3 for s in cfg.template_symbols()), what="three tickers per market")
        await sub.unsubscribe()
        lasts = {s: [t.last for t in tickers[s]] for s in tickers}
        assert len({tuple(v) for v in lasts.values()}) == 3  # each market printed its own prices
        expected = paths(cfg, 3, {s: b[-1].close for s, b in backfills.items()})
        assert lasts == expected  # exactly the seeded paths

        order = await venue.create_order(
            OrderRequest(symbol=symbol, client_order_id="t1", side="buy", amount=Decimal("0.5"), order_type="market")
        )
        assert order.status == "closed" and order.filled == Decimal("0.5")
        positions = {p.symbol: p for p in await venue.fetch_positions()}
        assert positions[symbol].contracts == Decimal("0.5")
        assert not any(p.contracts for s, p in positions.items() if s != symbol)
        rest = await venue.create_order(
            OrderRequest(
                symbol="S000/USDT:USDT", client_order_id="t2", side="sell", amount=Decimal("1"), price=Decimal("5000"), post_only=True
            )
        )
        assert rest.status == "open"
        assert [o.client_order_id for o in await venue.fetch_open_orders("S000/USDT:USDT")] == ["t2"]
    finally:
        stop.set()
        await task
        await venue.close()


def test_with_phases_each_market_prints_once_a_tick_in_its_own_group_on_its_own_path() -> None:
    """tick_phases = 2: the clock steps every tick_ms / 2, and each step prints half the markets."""
    cfg = config(markets=[], count=5, settings=dict(tick_ms=500, tick_phases=2))
    assert cfg.cadence_ms == 250
    prices = MarketPrices(cfg)
    last: dict[str, Decimal] = {}
    printed: list[list[str]] = []
    for step in range(1, 7):
        prints = prices.next_prints(step, last)
        printed.append([p.symbol for p in prints])
        last.update((p.symbol, p.price) for p in prints)
    odd, even = ["S001/USDT:USDT", "S003/USDT:USDT"], ["S000/USDT:USDT", "S002/USDT:USDT", "S004/USDT:USDT"]
    assert printed == [odd, even] * 3  # every market once per two clock steps, never two at once
    # Each market walks the path it walks without phases (its n-th print is its n-th draw).
    alone = paths(config(markets=[], count=5, settings=dict(tick_ms=500)), 3)
    with_phases = MarketPrices(cfg)
    last = {}
    got: dict[str, list[Decimal]] = {}
    for step in range(1, 7):
        for p in with_phases.next_prints(step, last):
            last[p.symbol] = p.price
            got.setdefault(p.symbol, []).append(p.price)
    assert got == alone


@pytest.mark.parametrize("phases", [0, 3])
def test_phases_must_divide_the_tick(phases: int) -> None:
    with pytest.raises(msgspec.ValidationError, match="tick_phases"):
        config(settings=dict(tick_ms=500, tick_phases=phases))
