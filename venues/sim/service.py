"""The simulated exchange as its own process (`sqt run sim`).

It answers the Venue calls over NATS request/reply (a micro service, `venue.<venue>.api.*`)
and publishes `md.*` and `acct.*` events like a real exchange's publisher. Every input
to the matching engine (a tick, an order, a cancel) is first written to its journal stream
and then applied by the engine, which is an ordinary consumer of that journal: a reply is
sent only after the engine applied the request and its events were stored, so whatever the
exchange acknowledged survives `kill -9`, and a restarted exchange resumes from its
checkpoint plus the journal tail with the same orders, balances and price path.

Clock: `realtime` ticks every `tick_ms` of wall time; `lockstep` ticks only when asked
(`venue.<venue>.api.step`), so a test can drive two runs through identical events. In paper
mode (`prices = "paper"`) nothing ticks here: each trade of the real venue's feed is journaled
as a tick by the feed consumer (venues/sim/paper_feed.py), and the clock is the feed's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
from aiohttp import web
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from bus.errors import PublishError
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec
from bus.service import answerable, guard_verbs, package_version
from bus.streams import prepare
from schemas import subjects
from schemas.account import OrderUpdate
from schemas.codec import encode
from venues.sim import api
from venues.sim.config import SimConfig
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import (
    Cancel,
    CancelAll,
    Entry,
    Fund,
    History,
    Place,
    Quote,
    SetFunding,
    Tick,
    journal_id,
    journal_stream,
    journal_subject,
)
from venues.sim.metrics import CountingEngine, SimMetrics
from venues.sim.paper_feed import PaperFeed
from venues.sim.prices import MarketPrices

log = logging.getLogger("sim")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


class SimService:
    def __init__(self, nc: Client, config: SimConfig, publisher: Publisher | None = None) -> None:
        self.nc = nc
        self.config = config
        self.venue = config.venue
        self.engine = SimEngine(config)
        self.prices = MarketPrices(config)
        self.journal = journal_stream(self.venue)
        self.publisher = publisher
        spec = ConsumerSpec(
            name=f"venue-{self.venue}",
            stream=self.journal.name,
            input_type=Entry,
            state_type=EngineState,
            outputs=(subjects.everything("md", self.venue), subjects.everything("acct", self.venue)),
            route=self._journal_subject,
            checkpoint_every=5_000,
            checkpoint_interval=5.0,
        )
        # Metrics only: the engine's events are counted while the consumer is live (not in replays).
        self.counting = CountingEngine(self.engine, lambda: self.runtime.live_feed is not None)
        self.runtime: ConsumerRuntime[EngineState, Entry] = ConsumerRuntime(nc, spec, self.counting, publisher, on_state=self._applied)
        self.metrics = SimMetrics(self.venue, self.engine, self.counting, lambda: self.runtime.state)
        self.started = time.time()
        self.http: web.AppRunner | None = None  # /health, /status, /metrics when served
        self._applied_event = asyncio.Event()
        self._journal_lock = asyncio.Lock()
        self._appended = 0  # the last journal sequence this process wrote
        self._unjournaled: Tick | None = None  # a tick whose append failed: sent again, unchanged
        self._step = 0
        self._last: dict[str, Any] = {}
        self._next_ts = 0
        self.service: Service | None = None
        # Paper trading: the consumer that journals the real venue's trades as ticks.
        self.feed = PaperFeed(nc, config, self, publisher) if config.prices == "paper" else None

    def _journal_subject(self, entry: Entry) -> str:
        return journal_subject(self.venue, entry)

    @property
    def state(self) -> EngineState:
        return self.runtime.state

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        if self.publisher is None:
            self.publisher = await Publisher(self.nc).start()
            self.runtime.publisher = self.publisher
            if self.feed is not None:
                self.feed.publisher = self.publisher
        await prepare(self.nc, (self.journal,), ())
        http = self.http = await maybe_serve(self.config.metrics_port, self.metrics.registry, self.status)
        runtime_task = asyncio.create_task(self.runtime.run(stop), name="sim-engine")
        try:
            await self._wait_caught_up(stop)
            if stop.is_set():
                return
            self._resume_clock()
            await self._backfill()
            self.service = await self._register()
            log.info(
                "simulated exchange %r ready: %d markets, prices %s, clock %s, step %d, journal seq %d",
                self.venue,
                len(self.engine.markets),
                self.config.prices if self.feed is None else f"paper from {self.config.paper_venue}",
                self.config.clock,
                self._step,
                self.runtime.seq,
            )
            if self.config.clock == "realtime" and self.state.pending:  # a tick matched before a crash still owes its market data
                await self.apply(Quote(step=self._step))
            if self.feed is not None:
                await self.feed.run(stop)
            elif self.config.clock == "realtime":
                await self._realtime(stop)
            else:
                await stop.wait()
        finally:
            if self.service is not None:
                await self.service.stop()
            stop.set()
            await runtime_task
            if http is not None:
                await http.cleanup()

    def status(self) -> dict[str, Any]:
        """What `/status` says (also the micro service's stats)."""
        st, s = self.state, self.runtime.stats
        return {
            "component": "sim",
            "venue": self.venue,
            "clock": self.config.clock,
            "step": self._step,
            "ts": st.ts,
            "journal_seq": self.runtime.seq,
            "caught_up": self.runtime.caught_up.is_set(),
            "open_orders": sum(len(a.open) for a in st.accounts.values()),
            "processed": s.processed,
            "sessions": s.sessions,
            "last_error": s.last_error,
            "uptime_s": round(time.time() - self.started, 1),
            **({"feed": self.feed.status()} if self.feed is not None else {}),
        }

    async def _wait_caught_up(self, stop: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(self.runtime.caught_up.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()

    def _resume_clock(self) -> None:
        """Continue the price path and the clock from what the engine has applied."""
        st = self.state
        self._step = max((m.step for m in st.markets.values()), default=0)
        self._last = {s: m.last for s, m in st.markets.items()}
        tick = self.config.cadence_ms
        if st.ts:
            self._next_ts = st.ts - st.ts % tick + tick
        else:
            start = self.config.start_time_ms or int(time.time() * 1000)
            self._next_ts = start - start % tick + tick

    async def _backfill(self) -> None:
        """A fresh exchange gets a day of 1-minute history so charts and strategies have context."""
        end = self._next_ts - self.config.tick_ms
        for spec in self.config.markets:
            if spec.symbol in self.state.markets and self.state.markets[spec.symbol].history:
                continue
            # Only the bars a market keeps are journaled (and published as candles): with many
            # markets that is fewer than `history_minutes` (SimConfig.history_kept).
            bars = self.prices.history(spec.symbol, end, self.config.history_minutes)[-self.config.history_kept :]
            if bars:
                await self.apply(History(symbol=spec.symbol, bars=bars, ts=end))
                self._last[spec.symbol] = bars[-1].close
                log.info("backfilled %d minutes of %s", len(bars), spec.symbol)

    # ------------------------------------------------------------------ journal

    def _applied(self, _state: EngineState, _seq: int) -> None:
        self._applied_event.set()

    async def append(self, entry: Entry) -> tuple[int, bool]:
        """Write an entry to the journal; (sequence, whether the stream already had it)."""
        assert self.publisher is not None
        async with self._journal_lock:  # one writer at a time keeps the journal in request order
            fut = await self.publisher.send(journal_subject(self.venue, entry), encode(entry), journal_id(self.venue, entry))
        ack = await fut
        self._appended = max(self._appended, ack.seq)
        return ack.seq, bool(ack.duplicate)

    async def wait_applied(self, seq: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.runtime.seq < seq:
            self._applied_event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError(api.UNAVAILABLE, "venue_error", f"engine did not apply journal seq {seq} in time")
            try:
                await asyncio.wait_for(self._applied_event.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    async def apply(self, entry: Entry) -> bool:
        seq, duplicate = await self.append(entry)
        await self.wait_applied(seq)
        return duplicate

    # ------------------------------------------------------------------ clock

    def _next_tick(self) -> Tick:
        if self._unjournaled is not None:  # its prices are already drawn: never draw them twice
            return self._unjournaled
        self._step += 1
        prints = self.prices.next_prints(self._step, self._last)
        self._last.update((p.symbol, p.price) for p in prints)
        tick = Tick(step=self._step, ts=self._next_ts, prints=prints)
        self._next_ts += self.config.cadence_ms
        return tick

    async def _realtime(self, stop: asyncio.Event) -> None:
        tick_s = self.config.cadence_ms / 1000
        while not stop.is_set():
            now = time.time()
            if self._next_ts / 1000 > now:
                try:
                    await asyncio.wait_for(stop.wait(), self._next_ts / 1000 - now)
                    return
                except asyncio.TimeoutError:
                    pass
            elif now - self._next_ts / 1000 > 5 * self.config.tick_ms / 1000:
                # We were away (restart, stall): resume at the present; the engine marks the gap.
                self._next_ts = int(now * 1000) - int(now * 1000) % self.config.cadence_ms
            tick = self._next_tick()
            try:
                await self.append(tick)
            except Exception as exc:  # noqa: BLE001 - the bus is down: the same tick goes again
                log.warning("could not journal tick %d: %s", tick.step, exc)
                self._unjournaled = tick
                await asyncio.sleep(tick_s)
                continue
            self._unjournaled = None
            try:
                await self.append(Quote(step=tick.step))
            except Exception as exc:  # noqa: BLE001 - the next tick's quote publishes it
                log.warning("could not journal a quote: %s", exc)

    async def step(self, ticks: int, phase: str = "both") -> None:
        seq = 0
        if phase == "quote":
            seq, _ = await self.append(Quote(step=self._step))
        elif phase == "match":
            seq, _ = await self.append(self._next_tick())
        else:
            for _ in range(ticks):
                tick = self._next_tick()
                await self.append(tick)
                seq, _ = await self.append(Quote(step=tick.step))
        await self.wait_applied(seq)

    # ------------------------------------------------------------------ API

    async def _register(self) -> Service:
        service = await add_service(
            self.nc,
            name=f"sqt-venue-{self.venue}",
            version=package_version(),
            description=f"simulated exchange {self.venue!r}: the Venue API over request/reply",
            metadata={
                "venue": self.venue,
                "clock": self.config.clock,
                "component": "sim",
                "instance": self.venue,
                **({"http": address(self.http) or ""} if self.http is not None else {}),
            },
            stats_handler=lambda _endpoint: self.status(),
        )
        guard_verbs(service)
        routes: dict[str, Callable[[bytes], Awaitable[msgspec.Struct]]] = {
            "create_order": self._create_order,
            "cancel_order": self._cancel_order,
            "cancel_all": self._cancel_all,
            "fetch_order": self._fetch_order,
            "open_orders": self._open_orders,
            "positions": self._positions,
            "balance": self._balance,
            "ohlcv": self._ohlcv,
            "funding": self._funding,
            "markets": self._markets,
            "time": self._time,
            "step": self._step_api,
            "fund": self._fund,
        }
        if self.config.test_hooks:  # tests only: orders changed without their account events, scripted funding
            routes["hidden_create_order"] = lambda data: self._create_order(data, silent=True)
            routes["hidden_cancel_order"] = lambda data: self._cancel_order(data, silent=True)
            routes["set_funding"] = self._set_funding
        for name, handler in routes.items():
            await service.add_endpoint(name=name, subject=api.api_subject(self.venue, name), handler=self._endpoint(handler))
        return service

    def _endpoint(self, handler: Callable[[bytes], Awaitable[msgspec.Struct]]) -> Callable[[Request], Awaitable[None]]:
        async def handle(request: Request) -> None:
            if not answerable(request):
                return
            began = time.perf_counter()
            code = await answer(request)
            self.metrics.answered(request.subject.rsplit(".", 1)[-1], code, time.perf_counter() - began)

        async def answer(request: Request) -> str:
            """Answer one request; the error code sent, or "" for a success."""
            try:
                if not self.runtime.caught_up.is_set():
                    # Rebuilding from its journal (a broken session): the state is older than
                    # what it already told clients, so it answers nothing until caught up.
                    raise ApiError(api.UNAVAILABLE, "venue_error", "the exchange is recovering; try again")
                # Every answer reflects every entry already written, including those a
                # client's timed-out request wrote: no "not found" for an order in the journal.
                await self.wait_applied(self._appended)
                reply = await handler(request.data)
            except ApiError as exc:
                await request.respond_error(str(exc.code), f"{exc.reason}: {exc}")
                return str(exc.code)
            except msgspec.ValidationError as exc:
                await request.respond_error(str(api.BAD_REQUEST), f"invalid: {exc}")
                return str(api.BAD_REQUEST)
            except msgspec.DecodeError as exc:
                await request.respond_error(str(api.BAD_REQUEST), f"invalid: {exc}")
                return str(api.BAD_REQUEST)
            except (PublishError, nats.errors.Error, asyncio.TimeoutError) as exc:
                # The bus went away while the request was journaled (a restarting nats-server):
                # expected, retryable, and the journal says later whether it was written.
                log.warning("%s: the journal is unreachable (%s: %s); answered as unavailable", request.subject, type(exc).__name__, exc)
                await request.respond_error(
                    str(api.UNAVAILABLE), f"venue_error: the exchange's journal is unreachable: {type(exc).__name__}"
                )
                return str(api.UNAVAILABLE)
            except Exception as exc:  # noqa: BLE001 - a failed handler is our fault, not the request's
                # Retryable, never a rejection: the request may well succeed once we recover,
                # and a create we cannot vouch for must not be reported as refused.
                log.exception("%s: handler failed", request.subject)
                await request.respond_error(str(api.UNAVAILABLE), f"venue_error: handler failed: {type(exc).__name__}: {exc}")
                return str(api.UNAVAILABLE)
            await request.respond(encode(reply))
            return ""

        return handle

    def _account(self, name: str) -> None:
        if name not in self.state.accounts:
            raise ApiError(api.REJECTED, "invalid", f"unknown account {name!r}")

    async def _create_order(self, data: bytes, silent: bool = False) -> api.OrderReply:
        req = msgspec.json.decode(data, type=api.CreateOrder)
        self._account(req.account)
        o = req.order
        if o.symbol not in self.engine.markets:
            raise ApiError(api.REJECTED, "unknown_symbol", f"unknown symbol {o.symbol}")
        # A repeated client id is caught twice: known to the engine already, or (two requests at
        # once, neither applied yet) dropped by the journal stream as a duplicate id.
        duplicate = o.client_order_id in self.state.accounts[req.account].by_cid
        if not duplicate:
            try:
                entry = Place(account=req.account, order=o, silent=silent)
            except ValueError as exc:  # a value no order can carry (NaN, a negative amount)
                raise ApiError(api.REJECTED, "invalid", str(exc)) from None
            duplicate = await self.apply(entry)
        view = self.engine.order_view(self.state, req.account, o.client_order_id, None)
        if view is None:
            raise ApiError(api.UNAVAILABLE, "venue_error", "order not recorded")
        return api.OrderReply(order=view, duplicate=duplicate)

    def _order(self, ref: api.OrderRef) -> OrderUpdate:
        self._account(ref.account)
        view = self.engine.order_view(self.state, ref.account, ref.client_order_id, ref.order_id)
        if view is None:
            raise ApiError(api.NOT_FOUND, "not_found", f"no order {ref.client_order_id or ref.order_id}")
        return view

    async def _cancel_order(self, data: bytes, silent: bool = False) -> api.OrderReply:
        ref = msgspec.json.decode(data, type=api.OrderRef)
        if self._order(ref).status == "open":
            await self.apply(
                Cancel(account=ref.account, symbol=ref.symbol, client_order_id=ref.client_order_id, order_id=ref.order_id, silent=silent)
            )
        return api.OrderReply(order=self._order(ref))

    async def _cancel_all(self, data: bytes) -> api.OrdersReply:
        q = msgspec.json.decode(data, type=api.AccountQuery)
        self._account(q.account)
        if q.symbol is None:
            raise ApiError(api.BAD_REQUEST, "invalid", "cancel_all needs a symbol")
        before = self.engine.open_orders(self.state, q.account, q.symbol)
        if before:
            await self.apply(CancelAll(account=q.account, symbol=q.symbol))
        after = [self.engine.order_view(self.state, q.account, None, o.order_id) for o in before]
        return api.OrdersReply(orders=[o for o in after if o is not None])

    async def _fetch_order(self, data: bytes) -> api.OrderReply:
        return api.OrderReply(order=self._order(msgspec.json.decode(data, type=api.OrderRef)))

    async def _open_orders(self, data: bytes) -> api.OrdersReply:
        q = msgspec.json.decode(data, type=api.AccountQuery)
        self._account(q.account)
        return api.OrdersReply(orders=self.engine.open_orders(self.state, q.account, q.symbol))

    async def _positions(self, data: bytes) -> api.PositionsReply:
        q = msgspec.json.decode(data, type=api.AccountQuery)
        self._account(q.account)
        return api.PositionsReply(positions=self.engine.positions(self.state, q.account))

    async def _balance(self, data: bytes) -> api.BalancesReply:
        q = msgspec.json.decode(data, type=api.AccountQuery)
        self._account(q.account)
        return api.BalancesReply(balances=self.engine.balances(self.state, q.account))

    async def _ohlcv(self, data: bytes) -> api.CandlesReply:
        q = msgspec.json.decode(data, type=api.OhlcvQuery)
        if q.symbol not in self.engine.markets:
            raise ApiError(api.REJECTED, "unknown_symbol", f"unknown symbol {q.symbol}")
        return api.CandlesReply(candles=self.engine.candles(self.state, q.symbol, q.since, q.limit))

    async def _funding(self, data: bytes) -> api.FundingReply:
        q = msgspec.json.decode(data, type=api.SymbolQuery)
        rate = self.engine.funding(self.state, q.symbol)
        if rate is None:
            raise ApiError(api.REJECTED, "unknown_symbol", f"unknown symbol {q.symbol}")
        return api.FundingReply(funding=rate)

    async def _markets(self, _data: bytes) -> api.MarketsReply:
        return api.MarketsReply(markets=list(self.engine.markets.values()))

    async def _time(self, _data: bytes) -> api.TimeReply:
        return api.TimeReply(
            ts=self.state.ts, step=self._step, clock=self.config.clock, journal_seq=self.runtime.seq, unquoted=bool(self.state.pending)
        )

    async def _step_api(self, data: bytes) -> api.TimeReply:
        if self.config.clock != "lockstep":
            raise ApiError(api.REJECTED, "invalid", 'step is only available with clock = "lockstep"')
        req = msgspec.json.decode(data or b"{}", type=api.StepRequest)
        if not 1 <= req.ticks <= 100_000:
            raise ApiError(api.BAD_REQUEST, "invalid", "ticks must be 1..100000")
        if req.phase != "both" and req.ticks != 1:
            raise ApiError(api.BAD_REQUEST, "invalid", "phases step one tick at a time")
        await self.step(req.ticks, req.phase)
        return await self._time(b"")

    async def _fund(self, data: bytes) -> api.BalancesReply:
        req = msgspec.json.decode(data, type=api.FundRequest)
        try:
            entry = Fund(account=req.account, asset=req.asset, amount=req.amount)
        except ValueError as exc:
            raise ApiError(api.REJECTED, "invalid", str(exc)) from None
        problem = self.engine.fund_problem(self.state, entry)
        if problem is not None:
            raise ApiError(api.REJECTED, "insufficient_balance" if entry.amount < 0 else "invalid", problem)
        await self.apply(entry)
        return api.BalancesReply(balances=self.engine.balances(self.state, req.account))

    async def _set_funding(self, data: bytes) -> api.FundingReply:
        """Tests only (`test_hooks`): pin a perpetual's funding rate, or unpin it (rate null)."""
        req = msgspec.json.decode(data, type=api.SetFundingRequest)
        try:
            entry = SetFunding(symbol=req.symbol, rate=req.rate, predicted_rate=req.predicted_rate)
        except ValueError as exc:
            raise ApiError(api.REJECTED, "invalid", str(exc)) from None
        problem = self.engine.funding_problem(self.state, entry)
        if problem is not None:
            raise ApiError(api.REJECTED, "unknown_symbol" if req.symbol not in self.engine.markets else "invalid", problem)
        seq, _ = await self.append(entry)
        await self.wait_applied(seq)
        rate = self.engine.funding(self.state, req.symbol, scripted=seq)  # the FundingRate it published (in lockstep, exactly)
        assert rate is not None  # the market has a price: checked above
        return api.FundingReply(funding=rate)
