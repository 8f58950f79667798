"""`sqt run arbitrage --instance ID`: the thin shell around one funding-arbitrage core.

It asks both legs' venues for their market rules (refusing a config that cannot trade them,
naming the field), declares the instance's input stream (the one total order of its inputs:
its pair's spread snapshots, both legs' tickers and order events, the perpetual's funding
payments, the spot leg's borrow interest, breakers, operator controls and its own clock ticks,
sourced from MARKET, ACCOUNT and OPS), and runs the core under the consumer runtime. The clock
ticks put time into the log, so a naked leg's deadline is decided, and replayed, from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from nats.aio.client import Client

from bus.clock import tick
from bus.connection import connect
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec
from bus.service import register
from bus.settings import BusSettings
from bus.streams import DAY, MINUTE, Source, StreamSpec, prepare
from schemas import subjects
from schemas.account import BorrowInterest, FundingPayment, OrderUpdate
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, Clock, ControlCommand, FundingSpread
from strategies.arbitrage import legs as L
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.core import COMPONENT, ArbCore
from strategies.arbitrage.metrics import ArbMetrics
from strategies.arbitrage.state import ArbState
from strategies.grid.lattice import client_prefix
from venues import rules
from venues.factory import open_venue
from venues.protocol import Venue

log = logging.getLogger("arbitrage")

ArbInput = FundingSpread | Ticker | OrderUpdate | FundingPayment | BorrowInterest | BreakerChange | ControlCommand | Clock
CLOCK_MS = 500


class ArbConfigError(RuntimeError):
    """The arbitrage cannot trade these markets with this config (the message names the field)."""


def spread_symbol(cfg: ArbConfig) -> str:
    """The symbol the funding monitor publishes the pair's spread under: its first perpetual. The
    stream is declared before the venues say which market is which, so this reads ccxt's unified
    symbol (a contract's has a settle currency after ':'); `check_config` holds it to the rules."""
    return next((leg.symbol for leg in cfg.legs if ":" in leg.symbol), cfg.legs[0].symbol)


def input_stream(cfg: ArbConfig) -> StreamSpec:
    market, account = [], []
    for leg in cfg.legs:
        market.append(subjects.md(leg.venue, leg.symbol, "ticker"))
        account += [
            subjects.acct(leg.venue, cfg.account, leg.symbol, "order"),
            subjects.acct(leg.venue, cfg.account, leg.symbol, "funding"),
        ]
        base = leg.symbol.partition("/")[0]
        if ":" not in leg.symbol:  # a spot leg: interest on its margin loan
            account.append(subjects.balance(leg.venue, cfg.account, base, "interest"))
    return StreamSpec(
        name=f"IN_ARB_{cfg.instance.upper()}",
        subjects=(),
        description=f"inputs of funding arbitrage {cfg.instance}, in the one order its core sees them",
        max_age=7 * DAY,
        duplicate_window=2 * MINUTE,
        sources=(
            Source("MARKET", tuple(market)),
            Source("ACCOUNT", tuple(account)),
            Source(
                "OPS",
                (
                    subjects.funding_spread(spread_symbol(cfg)),
                    subjects.control(COMPONENT, cfg.instance),
                    subjects.control(COMPONENT),
                    subjects.ops("risk", "*", "breaker"),
                    subjects.ops(COMPONENT, cfg.instance, "clock"),
                ),
            ),
        ),
        sources_from_now=True,  # a new instance trades from now on, not on the past
    )


def arb_spec(cfg: ArbConfig) -> ConsumerSpec:
    outputs = tuple(subjects.cmd(leg.venue, cfg.account, leg.symbol, "*") for leg in cfg.legs)
    return ConsumerSpec(
        name=f"arbitrage-{cfg.instance}",
        stream=input_stream(cfg).name,
        input_type=ArbInput,
        state_type=ArbState,
        outputs=(*outputs, subjects.ops(COMPONENT, cfg.instance, "state"), subjects.ops(COMPONENT, cfg.instance, "alert")),
        input_stream=input_stream(cfg),
        checkpoint_every=1_000,
        checkpoint_interval=1.0,
    )


async def leg_markets(venues: list[Venue], cfg: ArbConfig, stop: asyncio.Event) -> list[Market] | None:
    """Both legs' market rules, waiting for venues that do not answer yet."""
    asked: dict[int, dict[str, Market]] = {}  # one ask per venue, however many legs it has
    found = []
    for i, (venue, leg) in enumerate(zip(venues, cfg.legs)):
        markets = asked.get(id(venue))
        if markets is None:
            markets = await rules.market_rules(venue, stop)
            if markets is None:
                return None
            asked[id(venue)] = markets
        if leg.symbol not in markets:
            raise ArbConfigError(f"arbitrage {cfg.instance}: legs[{i}]: {leg.venue} has no market {leg.symbol}")
        found.append(markets[leg.symbol])
    return found


def check_config(cfg: ArbConfig, markets: list[Market], id_limits: list[int]) -> list[str]:
    """What makes the config untradable on these markets, each naming its field."""
    problems = []
    perpetuals = [m.symbol for m in markets if m.kind == "swap"]
    if not perpetuals:
        problems.append("legs: one leg at least must be a perpetual (spot-perp or perp-perp)")
    elif perpetuals[0] != spread_symbol(cfg):
        problems.append(f"legs: {spread_symbol(cfg)} reads as the perpetual, but the venue says {perpetuals[0]} is")
    if markets[0].base != markets[1].base:
        problems.append(f"legs: both legs must be the same asset ({markets[0].symbol} and {markets[1].symbol})")
    books = ArbCore(cfg, markets).initial_state().legs
    for i, book in enumerate(books):
        if L.lot_floor(book, cfg.amount) != cfg.amount:
            problems.append(
                f"amount: {cfg.amount} is not a whole number of legs[{i}]'s lots ({book.market.lot_size} x {book.market.contract_size})"
            )
        elif not L.tradable(book, cfg.amount, None):
            problems.append(f"amount: {cfg.amount} is below legs[{i}]'s minimum ({book.market.min_amount})")
    longest = L.longest_id(client_prefix(cfg.instance))
    for i, limit in enumerate(id_limits):
        if longest > limit:
            problems.append(
                f"instance: its client order ids grow to {longest} characters and legs[{i}]'s venue holds {limit}: use a shorter id"
            )
    return problems


async def build_arbitrage(
    nc: Client, venues: list[Venue], cfg: ArbConfig, stop: asyncio.Event, publisher: Publisher | None = None
) -> ConsumerRuntime[ArbState, Any] | None:
    """The instance's consumer, ready to run; None if `stop` was set while a venue did not answer."""
    markets = await leg_markets(venues, cfg, stop)
    if markets is None:
        return None
    problems = check_config(cfg, markets, [getattr(v, "client_id_max", 32) for v in venues])
    if problems:
        raise ArbConfigError(f"arbitrage {cfg.instance}: " + "; ".join(problems))
    spec = arb_spec(cfg)
    assert spec.input_stream is not None
    await prepare(nc, (spec.input_stream,), ())
    return ConsumerRuntime(nc, spec, ArbCore(cfg, markets), publisher or await Publisher(nc).start())


async def run_arbitrage(settings: BusSettings, cfg: ArbConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-arbitrage-{cfg.instance}", role="strategy")
    try:
        await prepare(nc, settings.streams())
        # The venues are asked for their market rules only: one per venue (a spot-perp pair is one
        # venue), closed once the rules are known (a ccxt venue holds an HTTP session).
        opened = {name: open_venue(nc, name, cfg.account, settings) for name in dict.fromkeys(leg.venue for leg in cfg.legs)}
        publisher = await Publisher(nc).start()
        try:
            runtime = await build_arbitrage(nc, [opened[leg.venue] for leg in cfg.legs], cfg, stop, publisher)
        finally:
            for venue in opened.values():
                await venue.close()
        if runtime is None:
            return
        started = time.time()
        core = runtime.core
        assert isinstance(core, ArbCore)

        def status() -> dict[str, Any]:
            st: ArbState = runtime.state
            position, total = core.books(st)
            return {
                "component": COMPONENT,
                "instance": cfg.instance,
                "pair": cfg.pair,
                "status": st.status,
                "saga": st.saga.step if st.saga else None,
                "held": {f"{b.venue}/{b.symbol}": str(b.held) for b in st.legs},
                "blocked": st.blocked,
                "entries": st.entries,
                "exits": st.exits,
                "unwinds_last_hour": len(st.unwinds),
                "net_apr": str(st.spread.net_apr) if st.spread is not None else None,
                "position_books": {**msgspec.to_builtins(position), "net": str(position.net)},
                "total_books": {**msgspec.to_builtins(total), "net": str(total.net)},
                **runtime.progress(),
                "fault": st.fault,
                "uptime_s": round(time.time() - started, 1),
            }

        http = await maybe_serve(cfg.metrics_port, ArbMetrics(core, lambda: runtime.state).registry, status)
        service = await register(nc, COMPONENT, cfg.instance, f"funding arbitrage on {cfg.pair}", status, http=address(http))
        # Time in the log: a naked leg's deadline passes even when no market data comes.
        clock = asyncio.create_task(tick(publisher, COMPONENT, cfg.instance, CLOCK_MS, stop), name="arbitrage-clock")
        try:
            await runtime.run(stop)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            await service.stop()
            if http is not None:
                await http.cleanup()
    finally:
        await nc.close()
