"""A funding arbitrage's core driven without a bus: its markets, spread snapshots, and a scripted
venue that answers each of its commands the way a test (or hypothesis) says.

    h = ArbHarness()                       # spot-perp on sim, 0.01 BTC per entry
    h.spread(net_apr="0.3")                # positive funding: long spot, short perp
    h.tick(11_000)                         # the APR held long enough: leg 1 goes out
    h.answer(fill="1")                     # the venue fills it completely ... and so on
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bus.contract import Inbound
from schemas import ids
from schemas.account import ZERO, BorrowInterest, FundingPayment, OrderUpdate
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import (
    BreakerChange,
    BreakerState,
    Clock,
    ControlAction,
    ControlCommand,
    FundingSpread,
    RiskAlert,
    SpreadLeg,
    StrategyState,
)
from schemas.subjects import breaker_scopes
from strategies.arbitrage.config import ArbConfig, ArbLeg
from strategies.arbitrage.core import COMPONENT, ArbCore
from strategies.arbitrage.state import ArbState

T0 = 1_767_225_600_000  # 2026-01-01
SPOT = Market(
    symbol="BTC/USDT",
    kind="spot",
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.01"),
    lot_size=Decimal("0.00001"),
    min_amount=Decimal("0.00001"),
    min_notional=Decimal(5),
    maker_fee=Decimal("0.001"),
    taker_fee=Decimal("0.001"),
)
PERP = Market(
    symbol="BTC/USDT:USDT",
    kind="swap",
    base="BTC",
    quote="USDT",
    settle="USDT",
    tick_size=Decimal("0.1"),
    lot_size=Decimal("0.001"),
    min_amount=Decimal("0.001"),
    min_notional=Decimal(5),
    maker_fee=Decimal("0.0002"),
    taker_fee=Decimal("0.0005"),
)


def arb_config(**kw: Any) -> ArbConfig:
    fields: dict[str, Any] = dict(
        instance="t",
        pair="btc",
        legs=[ArbLeg(venue="sim", symbol=SPOT.symbol), ArbLeg(venue="sim", symbol=PERP.symbol)],
        amount=Decimal("0.01"),
    )
    return ArbConfig(**(fields | kw))


class ArbHarness:
    """The core, its state, and the commands it sent that the venue has not answered yet."""

    def __init__(self, cfg: ArbConfig | None = None, markets: list[Market] | None = None, price: Decimal = Decimal(60000)) -> None:
        self.cfg = cfg or arb_config()
        self.core = ArbCore(self.cfg, markets or [SPOT, PERP])
        self.state: ArbState = self.core.initial_state()
        self.seq = 0
        self.now = T0
        self.price = price
        self.pending: list[PlaceOrder] = []  # places the venue has not answered
        self.cancels: list[CancelOrder] = []
        self.sent: list[PlaceOrder] = []
        self.states: list[StrategyState] = []
        self.outputs: list[Any] = []
        self.venue_held = [ZERO, ZERO]  # what the venue executed per leg (base), for comparisons
        self._order_ids = 0
        for i in range(2):
            self.book(i)

    # ------------------------------------------------------------------ inputs

    def feed(self, event: Any, subject: str = "") -> list[Any]:
        self.seq += 1
        self.state, out = self.core.step(self.state, Inbound(self.seq, subject, event))
        for o in out:
            if isinstance(o, PlaceOrder):
                self.pending.append(o)
                self.sent.append(o)
            elif isinstance(o, CancelOrder):
                self.cancels.append(o)
            elif isinstance(o, StrategyState):
                self.states.append(o)
        self.outputs += out
        return out

    def book(self, leg: int, price: Decimal | None = None, spread: Decimal = Decimal(1)) -> list[Any]:
        p = price or self.price
        cfg_leg = self.cfg.legs[leg]
        return self.feed(
            Ticker(
                id=ids.ticker_id(cfg_leg.venue, cfg_leg.symbol, self.now),
                venue=cfg_leg.venue,
                symbol=cfg_leg.symbol,
                bid=p - spread / 2,
                ask=p + spread / 2,
                last=p,
                ts=self.now,
                ts_local=self.now,
            )
        )

    def spread(self, net_apr: str = "0.3", long_leg: int = 0, state: str = "ok", next_funding_time: int | None = None) -> list[Any]:
        legs = [
            SpreadLeg(venue=leg.venue, symbol=leg.symbol, kind=m.kind, funding_ts=self.now, book_ts=self.now)
            for leg, m in zip(self.cfg.legs, self.core.markets)
        ]
        ok = state == "ok"
        apr = Decimal(net_apr)
        fields: dict[str, Any] = dict(
            monitor=self.cfg.monitor,
            pair=self.cfg.pair,
            symbol=PERP.symbol,
            state=state,
            long=legs[long_leg],
            short=legs[1 - long_leg],
            use_margin=legs[1 - long_leg].kind == "spot",
            apr=apr if ok else None,
            net_apr=apr if ok else None,
            next_funding_time=next_funding_time or (self.now - self.now % 28_800_000 + 28_800_000),
            ts=self.now,
        )
        return self.feed(FundingSpread(id=ids.content_id("spread", fields), **fields))

    def tick(self, ms: int = 0) -> list[Any]:
        """Time passes (a clock tick `ms` later)."""
        self.now += ms
        return self.feed(Clock(id=f"clock:{self.now}", component=COMPONENT, instance=self.cfg.instance, ts=self.now))

    def control(self, action: ControlAction) -> list[Any]:
        fields: dict[str, Any] = dict(
            target_component=COMPONENT, target_instance=self.cfg.instance, action=action, operator="op", ts=self.now
        )
        return self.feed(ControlCommand(id=ids.content_id("ctl", fields), **fields))

    def funding(self, leg: int, amount: str) -> list[Any]:
        c = self.cfg.legs[leg]
        return self.feed(
            FundingPayment(
                id=f"fp:{self.now}:{leg}",
                venue=c.venue,
                account=self.cfg.account,
                symbol=c.symbol,
                asset="USDT",
                amount=Decimal(amount),
                funding_rate=Decimal("0.0001"),
                contracts=self.venue_held[leg],
                funding_time=self.now,
                ts=self.now,
                ts_local=self.now,
            )
        )

    # ------------------------------------------------------------------ the venue

    def answer(
        self,
        fill: Decimal | str = "1",
        status: str | None = None,
        reason: str | None = None,
        which: int = 0,
        price: Decimal | None = None,
    ) -> list[Any]:
        """The venue answers the `which`-th unanswered place: `fill` of it executes (a share),
        and the IOC ends (closed when fully filled, else canceled, or `expired` as the simulated
        exchange ends a limit IOC's remainder), or it is refused (`rejected`, nothing executed)."""
        cmd = self.pending.pop(which)
        leg = next(i for i, c in enumerate(self.cfg.legs) if (c.venue, c.symbol) == (cmd.venue, cmd.symbol))
        market = self.core.markets[leg]
        if status == "rejected":
            return self.feed(self.update(cmd, ZERO, status, reason=reason or "upstream_rejected"))
        share = Decimal(fill)
        filled = (cmd.amount * share / market.lot_size).to_integral_value(rounding="ROUND_FLOOR") * market.lot_size
        at = price or cmd.price
        assert at is not None
        base = filled * market.contract_size
        self.venue_held[leg] += base if cmd.side == "buy" else -base
        end = status or ("closed" if filled == cmd.amount else "canceled")
        extra = {"reason": reason} if reason else {}
        return self.feed(self.update(cmd, filled, end, average=at if filled else None, **extra))

    def update(self, cmd: PlaceOrder, filled: Decimal, status: str, **kw: Any) -> OrderUpdate:
        self._order_ids += 1
        market = next(m for m in self.core.markets if m.symbol == cmd.symbol)
        fee = (kw.get("average") or ZERO) * filled * market.contract_size * market.taker_fee
        return OrderUpdate(
            id=ids.order_event_id(cmd.venue, cmd.account, cmd.client_order_id, status, filled),
            venue=cmd.venue,
            account=cmd.account,
            symbol=cmd.symbol,
            order_id=None if status in ("rejected", "expired") else str(self._order_ids),
            client_order_id=cmd.client_order_id,
            side=cmd.side,
            price=cmd.price,
            amount=cmd.amount,
            filled=filled,
            remaining=cmd.amount - filled,
            status=status,  # type: ignore[arg-type]
            reduce_only=cmd.reduce_only,
            fee_cost=fee,
            fee_currency="USDT",
            ts=self.now,
            ts_local=self.now,
            **kw,
        )

    def answer_all(self, fill: Decimal | str = "1") -> None:
        while self.pending:
            self.answer(fill)

    def run_until(self, done: Callable[[], bool], step_ms: int = 500, limit: int = 200, fill: str = "1") -> None:
        for _ in range(limit):
            if done():
                return
            if self.pending:
                self.answer(fill)
            else:
                self.tick(step_ms)
        raise AssertionError("the scenario did not settle")

    # ------------------------------------------------------------------ reading

    @property
    def held(self) -> list[Decimal]:
        return [b.held for b in self.state.legs]

    # ------------------------------------------------------------------ more inputs (added for the core's tests)

    def breaker(self, scope: str, state: BreakerState, previous: BreakerState = "ok") -> list[Any]:
        """A risk breaker moves (`scope` as in the breakers bucket, e.g. from `scopes(leg)`)."""
        fields: dict[str, Any] = dict(instance="risk", scope=scope, state=state, previous=previous, reason="test", ts=self.now)
        return self.feed(BreakerChange(id=ids.content_id("breaker", fields), **fields))

    def scopes(self, leg: int) -> tuple[str, ...]:
        """Every breaker scope that covers `leg` (global, venue, account, symbol)."""
        c = self.cfg.legs[leg]
        return breaker_scopes(c.venue, c.symbol, self.cfg.account)

    def interest(self, interest: str, leg: int = 0, borrowed: str = "0.01", asset: str | None = None) -> list[Any]:
        """Interest charged on the margin loan of the spot leg `leg` (in its base asset)."""
        c = self.cfg.legs[leg]
        return self.feed(
            BorrowInterest(
                id=f"bi:{self.now}:{leg}:{interest}",
                venue=c.venue,
                account=self.cfg.account,
                asset=asset or self.core.markets[leg].base,
                amount_borrowed=Decimal(borrowed),
                interest=Decimal(interest),
                interest_rate=Decimal("0.0001"),
                ts=self.now,
                ts_local=self.now,
            )
        )

    def end(self, cmd: PlaceOrder, filled: Decimal | str, status: str, price: Decimal | None = None, **kw: Any) -> list[Any]:
        """The venue reports `cmd` at `filled` (venue units, cumulative) and `status`, whether or not
        it is still pending here; what it executed beyond what this harness recorded moves
        `venue_held`. For late, repeated or reordered events: `answer` is the usual way."""
        leg = next(i for i, c in enumerate(self.cfg.legs) if (c.venue, c.symbol) == (cmd.venue, cmd.symbol))
        f = Decimal(filled)
        before = self._executed.get(cmd.client_order_id, ZERO)
        if f > before:
            base = (f - before) * self.core.markets[leg].contract_size
            self.venue_held[leg] += base if cmd.side == "buy" else -base
            self._executed[cmd.client_order_id] = f
        at = price or cmd.price
        return self.feed(self.update(cmd, f, status, average=at if f else None, **kw))

    @property
    def _executed(self) -> dict[str, Decimal]:
        if not hasattr(self, "_executed_map"):
            self._executed_map: dict[str, Decimal] = {}
        return self._executed_map

    @property
    def alerts(self) -> list[RiskAlert]:
        return [o for o in self.outputs if isinstance(o, RiskAlert)]


class RecordingArbHarness(ArbHarness):
    """An ArbHarness that keeps every input it fed its core, in order (to replay them)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.inputs: list[Inbound[Any]] = []
        super().__init__(*args, **kw)

    def feed(self, event: Any, subject: str = "") -> list[Any]:
        self.inputs.append(Inbound(self.seq + 1, subject, event))
        return super().feed(event, subject)


def replay(cfg: ArbConfig, markets: list[Market], inputs: list[Inbound[Any]]) -> tuple[ArbState, list[list[Any]]]:
    """Feed `inputs` into a fresh core: its final state and its outputs per input."""
    core = ArbCore(cfg, markets)
    state = core.initial_state()
    outs = []
    for inbound in inputs:
        state, out = core.step(state, inbound)
        outs.append(out)
    return state, outs
