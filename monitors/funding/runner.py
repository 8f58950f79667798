"""`sqt run funding`: the thin shell around the funding core.

It asks each leg's venue for its market rules (the kind of market, its taker fee, its tick),
declares the monitor's input stream (the one total order of everything it judges: each leg's
funding and ticker from MARKET, and its own clock from OPS), runs the core under the consumer
runtime (checkpoints, dead letters, recovery), and puts the time into the input stream
(`Clock`, every `clock_ms`) so that a leg going silent is judged from the log and replays the
same. Snapshots go to `ops.funding.<symbol>.spread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client

from bus import clock
from bus.connection import connect
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec
from bus.service import register
from bus.settings import BusSettings
from bus.streams import DAY, MINUTE, Source, StreamSpec, prepare
from monitors.funding.config import FundingConfig
from monitors.funding.core import FundingCore
from monitors.funding.metrics import FundingMetrics
from monitors.funding.state import FundingState, leg_key
from schemas import subjects
from schemas.market import FundingRate, Market, Ticker
from schemas.ops import Clock
from venues import rules
from venues.factory import open_venue

log = logging.getLogger("funding")

FundingInput = FundingRate | Ticker | Clock
CLOCK_COMPONENT = "funding-monitor"  # not `funding`: `ops.funding.<symbol>.spread` is the snapshots' tree
RULES_ACCOUNT = "main"  # market rules are public: any account of the venue answers the same


class FundingConfigError(ValueError):
    """The monitor cannot watch what its config names (the message names the pair and the leg)."""


def clock_subject(cfg: FundingConfig) -> str:
    return subjects.ops(CLOCK_COMPONENT, cfg.instance, "clock")


def input_stream(cfg: FundingConfig) -> StreamSpec:
    md = tuple(subjects.md(v, s, kind) for v, s in cfg.legs() for kind in ("funding", "ticker"))
    return StreamSpec(
        name=f"IN_FUNDING_{cfg.instance.upper()}",
        subjects=(),
        description=f"inputs of funding monitor {cfg.instance}, in the one order its core judges them",
        max_age=7 * DAY,
        duplicate_window=2 * MINUTE,
        sources=(Source("MARKET", md), Source("OPS", (clock_subject(cfg),))),
        sources_from_now=True,
    )


def funding_spec(cfg: FundingConfig) -> ConsumerSpec:
    symbols = sorted({leg.symbol for p in cfg.pairs for leg in p.legs})
    return ConsumerSpec(
        name=f"funding-{cfg.instance}",
        stream=input_stream(cfg).name,
        input_type=FundingInput,
        state_type=FundingState,
        # Each pair's subject is its first perpetual's, known only with the market rules: every
        # leg's symbol is declared (a spot symbol's subject is simply never used).
        outputs=tuple(subjects.funding_spread(s) for s in symbols),
        input_stream=input_stream(cfg),
        batch=256,
        checkpoint_every=2_000,
        checkpoint_interval=2.0,
    )


def clock_event(instance: str, now_ms: int) -> Clock:
    return clock.clock_event(CLOCK_COMPONENT, instance, now_ms)


async def market_rules(nc: Client, cfg: FundingConfig, settings: BusSettings, stop: asyncio.Event) -> dict[str, Market] | None:
    """Every leg's market rules, asking each venue until it answers (None if stopped first)."""
    if not cfg.pairs:
        raise FundingConfigError("funding.pairs is empty: configure at least one [[funding.pairs]] with two legs")
    out: dict[str, Market] = {}
    for venue_name in sorted({v for v, _ in cfg.legs()}):
        try:
            venue = open_venue(nc, venue_name, RULES_ACCOUNT, settings)
        except ValueError as exc:
            raise FundingConfigError(f"funding.pairs: {exc}") from None
        try:
            markets = await rules.market_rules(venue, stop)
        finally:
            await venue.close()
        if markets is None:
            return None
        for pair in cfg.pairs:
            for i, leg in enumerate(pair.legs):
                if leg.venue != venue_name:
                    continue
                if leg.symbol not in markets:
                    raise FundingConfigError(
                        f"funding pair {pair.name!r}, leg {i + 1}: {venue_name} has no market {leg.symbol} "
                        f"(it has {', '.join(sorted(markets))})"
                    )
                out[leg_key(venue_name, leg.symbol)] = markets[leg.symbol]
    for pair in cfg.pairs:
        if all(out[leg_key(leg.venue, leg.symbol)].kind != "swap" for leg in pair.legs):
            raise FundingConfigError(f"funding pair {pair.name!r}: neither leg is a perpetual, so there is no funding to collect")
    return out


async def build_funding(
    nc: Client, cfg: FundingConfig, markets: dict[str, Market], publisher: Publisher | None = None
) -> ConsumerRuntime[FundingState, Any]:
    """The monitor's runtime, its input stream declared, not yet running."""
    spec = funding_spec(cfg)
    assert spec.input_stream is not None
    await prepare(nc, (spec.input_stream,), ())
    core = FundingCore(cfg, markets)
    return ConsumerRuntime(nc, spec, core, publisher or await Publisher(nc).start())


def status_of(runtime: ConsumerRuntime[FundingState, Any], cfg: FundingConfig) -> dict[str, Any]:
    st = runtime.state
    return {
        "component": "funding",
        "instance": cfg.instance,
        **runtime.progress(),
        "judged_until": st.now,
        "pairs": {
            name: {"state": s.state, "net_apr": None if s.net_apr is None else str(s.net_apr), "reason": s.reason}
            for name, s in sorted(st.snapshots.items())
        },
    }


async def run_funding(settings: BusSettings, cfg: FundingConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-funding-{cfg.instance}", role="strategy")
    try:
        await prepare(nc, settings.streams())
        markets = await market_rules(nc, cfg, settings, stop)
        if markets is None:
            return
        runtime = await build_funding(nc, cfg, markets)
        assert runtime.publisher is not None
        core = runtime.core
        assert isinstance(core, FundingCore)

        def status() -> dict[str, Any]:
            return status_of(runtime, cfg)

        http = await maybe_serve(cfg.metrics_port, FundingMetrics(core, lambda: runtime.state).registry, status)
        service = await register(nc, "funding", cfg.instance, f"funding monitor over {len(cfg.pairs)} pairs", status, http=address(http))
        ticking = asyncio.create_task(
            clock.tick(runtime.publisher, CLOCK_COMPONENT, cfg.instance, cfg.clock_ms, stop), name="funding-clock"
        )
        try:
            await runtime.run(stop)
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ticking
            await service.stop()
            if http is not None:
                await http.cleanup()
    finally:
        await nc.close()
