"""`sqt run risk`: the thin shell around the risk core.

It declares the monitor's input stream (the one total order of everything it judges: watched
tickers, the accounts' order, position and balance events, place commands, operator controls,
reconciler alerts, and its own clock, sourced from MARKET, ACCOUNT, COMMAND and OPS), runs the
core under the consumer runtime, and adds three things the core cannot do itself:

- it puts the time into the input stream (`Clock`, every `clock_ms`), so silence is judged
  from the log and replays the same;
- it writes each breaker change into the `breakers` bucket before the change itself is
  published (both are outputs the runtime waits for before acking the input, so a crash
  between them is repaired by the replay after restart), and on start it rewrites any scope
  whose bucket value differs from what the log says;
- it writes the `heartbeat` key while its core keeps up with the clock: the executors treat a
  stale heartbeat as `reduce_only` (a risk monitor that is not judging is itself a condition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from bus.clock import tick
from bus.connection import connect
from bus.consumer import Outgoing
from bus.http import address, maybe_serve
from bus.publisher import PubAck, Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec
from bus.service import register
from bus.settings import BusSettings
from bus.streams import BREAKERS, DAY, MINUTE, Source, StreamSpec, prepare
from monitors.risk.config import RiskConfig
from monitors.risk.core import RiskCore
from monitors.risk.metrics import RiskMetrics
from monitors.risk.state import RiskState, market_key
from schemas import subjects
from schemas.account import Balance, OrderUpdate, Position
from schemas.codec import encode
from schemas.commands import PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, Clock, ControlCommand, RiskAlert, RiskHeartbeat
from schemas.subjects import HEARTBEAT_KEY
from venues import rules
from venues.factory import open_venue

log = logging.getLogger("risk")

RiskInput = Ticker | OrderUpdate | Position | Balance | PlaceOrder | Clock | ControlCommand | RiskAlert


def input_stream(cfg: RiskConfig) -> StreamSpec:
    md = tuple(subjects.md(v, s, "ticker") for v, s in cfg.markets())
    acct: list[str] = []
    commands: list[str] = []
    for w in cfg.watch:
        acct += [subjects.acct(w.venue, w.account, "*", "order"), subjects.acct(w.venue, w.account, "*", "position")]
        acct.append(subjects.balance(w.venue, w.account, w.quote))
        commands.append(subjects.cmd(w.venue, w.account, "*", "place"))
    return StreamSpec(
        name=f"IN_RISK_{cfg.instance.upper()}",
        subjects=(),
        description=f"inputs of risk monitor {cfg.instance}, in the one order its core judges them",
        max_age=7 * DAY,
        duplicate_window=2 * MINUTE,
        sources=(
            Source("MARKET", md),
            Source("ACCOUNT", tuple(dict.fromkeys(acct))),
            Source("COMMAND", tuple(dict.fromkeys(commands))),
            Source(
                "OPS",
                (
                    subjects.control("risk", cfg.instance),
                    subjects.control("risk"),
                    subjects.ops("risk", cfg.instance, "clock"),
                    subjects.ops("reconciler", "*", "alert"),
                ),
            ),
        ),
        sources_from_now=True,
    )


def risk_spec(cfg: RiskConfig) -> ConsumerSpec:
    cancels = tuple(dict.fromkeys(subjects.cmd(w.venue, w.account, "*", "cancel_all") for w in cfg.watch))
    return ConsumerSpec(
        name=f"risk-{cfg.instance}",
        stream=input_stream(cfg).name,
        input_type=RiskInput,
        state_type=RiskState,
        outputs=(subjects.ops("risk", cfg.instance, "breaker"), subjects.ops("risk", cfg.instance, "alert"), *cancels),
        input_stream=input_stream(cfg),
        batch=256,
        checkpoint_every=2_000,
        checkpoint_interval=2.0,
    )


class RiskRuntime(ConsumerRuntime[RiskState, Any]):
    """The consumer runtime, writing each breaker change into the bucket just before publishing it."""

    async def send_outputs(self, outputs: Sequence[Outgoing], futures: list[asyncio.Future[PubAck]]) -> None:
        assert self.publisher is not None
        for out in outputs:
            if type(out.message) is BreakerChange:
                # Same payload and id as the event: a replay after a crash rewrites it harmlessly.
                futures.append(await self.publisher.send(subjects.kv(BREAKERS.name, out.message.scope), out.payload, out.msg_id))
            futures.append(await self.publisher.send(out.subject, out.payload, out.msg_id))

    async def sync_bucket(self) -> int:
        """Rewrite every scope whose bucket value is not the last change the log says: how many.

        It runs beside the live runtime, which may write a newer change of a scope meanwhile:
        the last change is read again just before each write, and the write only replaces the
        revision that was read (a conflict means the runtime wrote it: the newer value stays)."""
        kv = await self.js.key_value(BREAKERS.name)
        fixed = 0
        for scope in sorted(self.state.published):
            try:
                entry = await kv.get(scope)
                value, revision = entry.value, entry.revision or 0
            except (KeyNotFoundError, NotFoundError):
                value, revision = None, 0
            change = self.state.published.get(scope)
            if change is None or value == (payload := encode(change)):
                continue
            try:
                await kv.update(scope, payload, last=revision)
            except KeyWrongLastSequenceError:
                continue  # the live runtime wrote this scope since: its value is the newer one
            fixed += 1
        return fixed


async def heartbeat(nc: Client, runtime: RiskRuntime, cfg: RiskConfig, stop: asyncio.Event) -> None:
    """Say we are alive while the core keeps up with the clock; go quiet when it does not."""
    keeps_up = max(2_000, 4 * cfg.clock_ms)
    while not stop.is_set():
        now = int(time.time() * 1000)
        behind = now - runtime.state.now
        if runtime.state.now and behind <= keeps_up:
            beat = RiskHeartbeat(instance=cfg.instance, ts=now, input_seq=runtime.seq)
            try:
                kv = await nc.jetstream().key_value(BREAKERS.name)
                await kv.put(HEARTBEAT_KEY, msgspec.json.encode(beat))
            except Exception as exc:  # noqa: BLE001 - a missed beat makes executors careful, not wrong
                log.warning("heartbeat not written: %s", exc)
        else:
            log.debug("no heartbeat: the core is %d ms behind the clock", behind)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), cfg.heartbeat_ms / 1000)


class RiskConfigError(RuntimeError):
    """The monitor cannot watch what its config names (the message names the market)."""


async def market_rules(nc: Client, cfg: RiskConfig, settings: BusSettings, stop: asyncio.Event) -> dict[str, Market] | None:
    """Every watched market's rules, asking each venue until it answers (None if stopped first).

    Until then no heartbeat is written, so the executors stay reduce-only: the safe side."""
    out: dict[str, Market] = {}
    for w in cfg.watch:
        venue = open_venue(nc, w.venue, w.account, settings)
        try:
            markets = await rules.market_rules(venue, stop)
        finally:
            await venue.close()
        if markets is None:
            return None
        for symbol in w.symbols:
            if symbol not in markets:
                raise RiskConfigError(f"risk.watch: {w.venue} has no market {symbol} (it has {', '.join(sorted(markets))})")
            out[market_key(w.venue, symbol)] = markets[symbol]
    return out


async def build_risk(nc: Client, cfg: RiskConfig, markets: dict[str, Market], publisher: Publisher | None = None) -> RiskRuntime:
    spec = risk_spec(cfg)
    assert spec.input_stream is not None
    await prepare(nc, (spec.input_stream,), ())
    core = RiskCore(cfg, markets)
    return RiskRuntime(nc, spec, core, publisher or await Publisher(nc).start())


async def run_risk(settings: BusSettings, cfg: RiskConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-risk-{cfg.instance}", role="risk")
    try:
        await prepare(nc, settings.streams())
        markets = await market_rules(nc, cfg, settings, stop)
        if markets is None:
            return
        runtime = await build_risk(nc, cfg, markets)
        assert runtime.publisher is not None

        def status() -> dict[str, Any]:
            st = runtime.state
            return {
                "component": "risk",
                "instance": cfg.instance,
                **runtime.progress(),
                "judged_until": st.now,
                "breakers": {scope: change.state for scope, change in st.published.items() if change.state != "ok"},
            }

        http = await maybe_serve(cfg.metrics_port, RiskMetrics(cfg, lambda: runtime.state).registry, status)
        service = await register(nc, "risk", cfg.instance, f"risk monitor over {len(cfg.markets())} markets", status, http=address(http))
        tasks = [asyncio.create_task(tick(runtime.publisher, "risk", cfg.instance, cfg.clock_ms, stop), name="risk-clock")]

        async def once_recovered() -> None:
            await runtime.caught_up.wait()  # recovered from checkpoint and log, and live
            delay = 0.5
            while not stop.is_set():  # no heartbeat before the bucket says what the log says
                try:
                    fixed = await runtime.sync_bucket()
                    break
                except Exception as exc:  # noqa: BLE001 - nats errors share no narrower base; retried
                    log.warning("cannot bring the breakers bucket in line with the log (%s); again in %.1fs", exc, delay)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(delay * 2, 10.0)
            else:
                return
            if fixed:
                log.warning("rewrote %d breaker scope(s) in the bucket from the log", fixed)
            await heartbeat(nc, runtime, cfg, stop)

        tasks.append(asyncio.create_task(once_recovered(), name="risk-heartbeat"))
        try:
            await runtime.run(stop)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await service.stop()
            if http is not None:
                await http.cleanup()
    finally:
        await nc.close()
