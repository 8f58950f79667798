"""The funding arbitrage's decision core: `step(state, event) -> (state, outputs)`, pure.

No clock, no I/O, no randomness: time comes from the events (the pair's spread snapshots, the
legs' tickers, the runner's clock ticks), so replaying the recorded inputs reproduces every
decision, and every order has a client id computed from them (strategies/arbitrage/legs.py).

One position per instance, one saga in flight (strategies/arbitrage/saga.py). Entry when the
pair's net APR has stayed at or above `entry_apr` for `entry_hold_ms`, both legs fresh, no
breaker open on either and no block; exit when it falls below `exit_apr`, the funding flips,
the spread stays stale, a breaker opens, or an operator asks. Every order event for one of its
client ids is booked into its leg, whoever sent it, so what it holds is always what the venue
executed; legs that disagree (a late fill, a restart) are brought back together by an unwind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from msgspec.structs import replace

from bus.contract import Inbound, InputRejected
from schemas import ids
from schemas.account import ZERO, BorrowInterest, FundingPayment, OrderUpdate
from schemas.base import Side
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, Clock, ControlCommand, FundingSpread, RiskAlert, StrategyState, StrategyStatus
from schemas.subjects import ALL_INSTANCES, breaker_scopes
from strategies.arbitrage import legs as L
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.saga import SagaSteps
from strategies.arbitrage.state import MARGIN_REASONS, TERMINAL, ArbOrder, ArbState, Book, Ended, LegBook, Saga
from strategies.grid.lattice import client_prefix

COMPONENT = "arbitrage"
PUBLISH_EVERY_MS = 30_000  # price-only changes (the open basis) are published this often; decisions at once
ENDED_KEPT = 100  # ended orders remembered (a saga has a handful): late copies are recognised
HEDGE_RETRY_MS = 250  # a hedge that filled nothing is sent again this soon (it has `naked_ms` in all)


class ArbCore:
    def __init__(self, config: ArbConfig, markets: list[Market]) -> None:
        if len(config.legs) != 2 or len(markets) != 2:
            raise ValueError("an arbitrage needs its two legs (filled from its pair) and their markets")
        self.cfg = config
        self.markets = markets
        self.prefix = client_prefix(config.instance)
        self.saga = SagaSteps(config, self.prefix)
        self.leg_scopes = [set(breaker_scopes(leg.venue, leg.symbol, config.account)) for leg in config.legs]
        self.scopes = self.leg_scopes[0] | self.leg_scopes[1]
        self.keys = [(leg.venue, leg.symbol) for leg in config.legs]

    def initial_state(self) -> ArbState:
        c = self.cfg
        books = [LegBook(venue=leg.venue, symbol=leg.symbol, market=m) for leg, m in zip(c.legs, self.markets)]
        return ArbState(instance=c.instance, account=c.account, pair=c.pair, legs=books)

    def step(self, state: ArbState, inbound: Inbound[Any]) -> tuple[ArbState, list[Any]]:
        ev = inbound.event
        kind = type(ev)
        st = state
        if kind is Ticker:
            st = self.on_ticker(st, ev)
        elif kind is FundingSpread:
            st = self.on_spread(st, ev)
        elif kind is OrderUpdate:
            try:
                st, out = self.on_order(st, ev)
            except InputRejected:
                raise
            except Exception as exc:  # noqa: BLE001 - a fill we cannot book must not vanish into the DLQ
                fault = f"OrderUpdate {ev.client_order_id}: {type(exc).__name__}: {exc}"
                return self.decide(replace(st, fault=fault, halted=True, seq=inbound.seq), True, state.blocked)
            st, more = self.decide(replace(st, seq=inbound.seq, ts=max(st.ts, ev.ts)), True, state.blocked)
            return st, out + more
        elif kind is FundingPayment:
            st = self.on_funding(st, ev)
        elif kind is BorrowInterest:
            st = self.on_interest(st, ev)
        elif kind is BreakerChange:
            st = self.on_breaker(st, ev)
        elif kind is ControlCommand:
            st = self.on_control(st, ev)
        elif kind is Clock:
            if ev.component != COMPONENT or ev.instance != st.instance or ev.ts <= st.ts:
                return st, []
            st = replace(st, ts=ev.ts)  # time passes: a naked leg's deadline, an entry's wait
        else:
            return st, []
        if st is state:
            return st, []  # not about this instance
        changed = kind not in (Ticker, Clock, FundingSpread)
        return self.decide(replace(st, seq=inbound.seq, ts=max(st.ts, ev.ts)), changed, state.blocked)

    # ------------------------------------------------------------------ inputs

    def leg_of(self, venue: str, symbol: str) -> int:
        try:
            return self.keys.index((venue, symbol))
        except ValueError:
            return -1

    def on_ticker(self, st: ArbState, ev: Ticker) -> ArbState:
        i = self.leg_of(ev.venue, ev.symbol)
        if i < 0 or ev.ts < st.legs[i].book_ts:
            return st
        bid, ask = ev.bid or ev.last, ev.ask or ev.last
        if bid > ask:
            raise InputRejected(f"crossed book: bid {bid} above ask {ask}")
        legs = list(st.legs)
        legs[i] = replace(legs[i], bid=bid, ask=ask, book_ts=ev.ts)
        return replace(st, legs=legs)

    def on_spread(self, st: ArbState, ev: FundingSpread) -> ArbState:
        if ev.pair != st.pair or ev.monitor != self.cfg.monitor:
            return st
        long_leg, short_leg = self.leg_of(ev.long.venue, ev.long.symbol), self.leg_of(ev.short.venue, ev.short.symbol)
        if {long_leg, short_leg} != {0, 1}:
            raise InputRejected(
                f"pair {ev.pair}'s legs are {ev.long.venue}/{ev.long.symbol} and {ev.short.venue}/{ev.short.symbol}, "
                f"but arbitrage {st.instance} trades {self.keys}"
            )
        if ev.state == "ok" and ev.net_apr is None:
            raise InputRejected("an ok spread snapshot without its net APR")
        if st.spread is not None and ev.ts < st.spread.ts:
            return st  # older than the one we acted on
        above_since, above_long = 0, -1
        if ev.state == "ok" and ev.net_apr is not None and ev.net_apr >= self.cfg.entry_apr:
            # The wait continues only in one direction and without a gap in the snapshots.
            unbroken = st.spread is not None and ev.ts - st.spread.ts <= self.cfg.spread_fresh_ms
            same = st.above_since and st.above_long == long_leg and unbroken
            above_since, above_long = (st.above_since if same else ev.ts), long_leg
        ok_ts = ev.ts if ev.state == "ok" else st.spread_ok_ts
        st = replace(st, spread=ev, spread_ok_ts=ok_ts, above_since=above_since, above_long=above_long)
        if st.blocked in MARGIN_REASONS and ev.state == "ok" and st.blocked_long >= 0 and long_leg != st.blocked_long:
            st = replace(st, blocked=None, blocked_long=-1)  # conditions changed: the other direction needs no margin
        return st

    def on_order(self, st: ArbState, ev: OrderUpdate) -> tuple[ArbState, list[Any]]:
        parsed = L.parse_client_order_id(self.prefix, ev.client_order_id)
        if parsed is None or ev.account != st.account:
            return st, []
        leg, side, number = parsed
        book = st.legs[leg]
        if (ev.venue, ev.symbol) != (book.venue, book.symbol) or ev.side != side:
            raise InputRejected(
                f"order {ev.client_order_id} names leg {leg} ({book.venue}/{book.symbol} {side}), "
                f"the event is {ev.venue}/{ev.symbol} {ev.side}"
            )
        for i, order in enumerate(st.orders):
            if order.client_order_id == ev.client_order_id:
                return self._live_order(st, i, order, ev)
        known = st.ended.get(ev.client_order_id)
        if known is not None and ev.filled <= known.filled and ev.fee_cost <= known.fee:
            return st, []  # a late copy of what was booked when it ended
        if known is None and (ev.status == "unknown" or number < st.forgotten_below):
            # Ended so long ago that its booking is forgotten: a late copy of it, not news.
            return replace(st, stale_events=st.stale_events + 1), []
        # Alive again after its end, or never tracked (sent by a run whose state is gone): book
        # what it executed beyond what was booked, and cancel it if it rests.
        known = known or Ended(leg, side, ZERO, ZERO, ZERO)
        st = self.book(st, leg, side, ev, known.filled, known.cost, known.fee)
        ended = dict(st.ended)
        newer = ev.filled > known.filled
        filled, cost = (ev.filled, self._cost(book, ev)) if newer else (known.filled, known.cost)
        ended[ev.client_order_id] = Ended(leg, side, filled, cost, max(ev.fee_cost, known.fee))
        st = replace(st, ended=ended)
        if ev.status == "open":
            order = ArbOrder(
                client_order_id=ev.client_order_id,
                leg=leg,
                purpose="unwind",
                side=side,
                amount=ev.amount,
                price=ev.price or Decimal(1),
                order_id=ev.order_id,
                sent_ts=st.ts,
            )
            return st, [self.saga.cancel(st, order, "an order of ours that nothing tracks")]
        return st, []

    def _live_order(self, st: ArbState, i: int, order: ArbOrder, ev: OrderUpdate) -> tuple[ArbState, list[Any]]:
        st = self.book(st, order.leg, order.side, ev, order.filled, order.cost, order.fee)
        # A late, older copy (less filled) changes nothing of what was booked, its value included.
        newer = ev.filled > order.filled
        filled, cost = (ev.filled, self._cost(st.legs[order.leg], ev)) if newer else (order.filled, order.cost)
        fee = max(ev.fee_cost, order.fee)
        orders = list(st.orders)
        if ev.status not in TERMINAL:
            status = "canceling" if order.status == "canceling" else ("open" if ev.status == "open" else order.status)
            orders[i] = replace(order, order_id=ev.order_id or order.order_id, filled=filled, cost=cost, fee=fee, status=status)
            return replace(st, orders=orders), []
        del orders[i]
        ended = dict(st.ended)
        ended[ev.client_order_id] = Ended(order.leg, order.side, filled, cost, fee)
        forgotten = st.forgotten_below
        if len(ended) > ENDED_KEPT:
            for key in list(ended)[: len(ended) - ENDED_KEPT]:
                del ended[key]
                parsed = L.parse_client_order_id(self.prefix, key)
                forgotten = max(forgotten, parsed[2] + 1) if parsed else forgotten
        st = replace(st, orders=orders, ended=ended, forgotten_below=forgotten)
        return self._ended(st, order, ev, filled), []

    def _ended(self, st: ArbState, order: ArbOrder, ev: OrderUpdate, filled: Decimal) -> ArbState:
        """What the end of one of the saga's orders means for the saga and for new entries."""
        saga = st.saga
        # Refused: the executor or the venue said no. An IOC that expired found too little within
        # its band: what it filled counts, and what is missing is tried again.
        refused = ev.status == "rejected"
        if refused and ev.reason in MARGIN_REASONS and st.blocked is None:
            direction = saga.long_leg if saga is not None else -1
            st = replace(st, blocked=ev.reason, blocked_long=direction)
        if saga is None:
            return st
        # A refused hedge unwinds at once; an expired one is tried again until the naked deadline.
        if order.purpose == "hedge" and refused:
            return replace(st, saga=replace(saga, refused=f"the hedge was refused: {ev.reason or ev.status} {ev.message or ''}".strip()))
        if order.purpose == "hedge":
            return replace(st, saga=replace(saga, retry_at=st.ts if filled > order.filled else st.ts + HEDGE_RETRY_MS))
        if order.purpose in ("unwind", "exit") and (refused or filled <= 0):
            return replace(st, saga=replace(saga, retry_at=st.ts + self.cfg.retry_ms))
        return st

    @staticmethod
    def _cost(book: LegBook, ev: OrderUpdate) -> Decimal:
        price = ev.average or ev.price or ZERO
        return price * ev.filled * book.market.contract_size

    def book(self, st: ArbState, leg: int, side: Side, ev: OrderUpdate, filled: Decimal, cost: Decimal, fee: Decimal) -> ArbState:
        """Book what `ev` executed beyond `filled` (worth `cost`, charged `fee`) into its leg."""
        book = st.legs[leg]
        units = ev.filled - filled
        fee_delta = ev.fee_cost - fee if ev.fee_cost > fee else ZERO
        if ev.fee_currency is not None and ev.fee_currency == book.market.base and fee_delta:
            fee_delta *= ev.average or ev.price or ZERO  # charged in the base: valued at the fill
        position, total = st.position, st.total
        if fee_delta:
            position, total = replace(position, fees=position.fees + fee_delta), replace(total, fees=total.fees + fee_delta)
        if units <= 0:
            return replace(st, position=position, total=total)
        base = L.to_base(book, units)
        value = self._cost(book, ev) - cost
        signed, cash = (base, value) if side == "buy" else (-base, -value)
        legs = list(st.legs)
        legs[leg] = replace(book, held=book.held + signed, cash=book.cash + cash)
        return replace(st, legs=legs, position=position, total=total, fills=st.fills + 1)

    def on_funding(self, st: ArbState, ev: FundingPayment) -> ArbState:
        if ev.account != st.account or self.leg_of(ev.venue, ev.symbol) < 0:
            return st
        return replace(
            st,
            position=replace(st.position, funding=st.position.funding + ev.amount),
            total=replace(st.total, funding=st.total.funding + ev.amount),
        )

    def on_interest(self, st: ArbState, ev: BorrowInterest) -> ArbState:
        """Interest on a margin short is charged in the coin: the account owes that much more of
        it, so the spot leg holds that much less (an exit then sells only what the account has).
        Its value at the charge is booked as borrow; its later price moves are basis."""
        if ev.account != st.account:
            return st
        for i, book in enumerate(st.legs):
            if book.spot and book.venue == ev.venue and book.market.base == ev.asset:
                value = ev.interest * (book.mark or ZERO)
                legs = list(st.legs)
                legs[i] = replace(book, held=book.held - ev.interest, cash=book.cash - value)
                return replace(
                    st,
                    legs=legs,
                    position=replace(st.position, borrow=st.position.borrow + value),
                    total=replace(st.total, borrow=st.total.borrow + value),
                )
        return st

    def on_breaker(self, st: ArbState, ev: BreakerChange) -> ArbState:
        if ev.scope not in self.scopes:
            return st
        breakers = dict(st.breakers)
        breakers[ev.scope] = ev.state
        return replace(st, breakers=breakers)

    def on_control(self, st: ArbState, ev: ControlCommand) -> ArbState:
        if ev.target_component != COMPONENT or ev.target_instance not in (st.instance, ALL_INSTANCES):
            return st
        match ev.action:
            case "pause":
                return replace(st, paused=True)
            case "resume":
                return replace(st, paused=False)
            case "halt":
                return replace(st, halted=True)
            case "exit":  # close the position and enter no more until resumed
                return replace(st, paused=True, exit_requested=True)
            case "reset":  # clears blocks and faults, once an operator has looked
                return replace(st, paused=False, halted=False, fault=None, blocked=None, blocked_long=-1, unwinds=[])
        return st

    # ------------------------------------------------------------------ decisions

    def status_of(self, st: ArbState) -> StrategyStatus:
        if any(b.book_ts == 0 for b in st.legs):
            return "starting"
        if st.halted or st.fault:
            return "halted"
        if st.paused:
            return "paused"
        if st.blocked or any(s != "ok" for s in st.breakers.values()):
            return "reduce_only"
        return "running"

    def decide(self, st: ArbState, changed: bool, blocked_before: str | None) -> tuple[ArbState, list[Any]]:
        """Take the saga on, start the next one, and publish the state if it moved; a block new
        since the input (`blocked_before` is what it was) is alerted once."""
        out: list[Any] = []
        if st.saga is not None:
            st, out = self.saga.advance(st)
            changed = changed or bool(out)
        if st.saga is None:
            st, more = self.next_saga(st)
            if more or st.saga is not None:
                st, again = self.saga.advance(st)
                out += more + again
                changed = True
        status = self.status_of(st)
        if status != st.status:
            st, changed = replace(st, status=status), True
        if st.blocked != blocked_before and st.blocked is not None:
            out.append(self.alert(st))
            changed = True
        if changed or st.ts - st.published_ts >= PUBLISH_EVERY_MS:
            st = replace(st, published_ts=st.ts)
            out.append(self.state_event(st))
        return st, out

    def next_saga(self, st: ArbState) -> tuple[ArbState, list[Any]]:
        """With no saga in flight: rebalance, exit or enter, in that order of urgency."""
        if st.status == "starting" and any(b.book_ts == 0 for b in st.legs):
            return st, []
        key = (st.spread.next_funding_time if st.spread is not None else 0) or st.ts
        flat = not st.legs[0].held and not st.legs[1].held  # the common case: nothing to rebalance or close
        if not flat and any(self.saga.excess(st)):
            long_leg = 0 if st.legs[0].held > 0 else 1
            saga = Saga(kind="enter", key=key, step="unwind", first=0, long_leg=long_leg, started_ts=st.ts, reason="legs apart")
            return replace(st, saga=saga), []
        # What is left after an exit or an unwind that the venue would refuse to trade (below its
        # minimum notional at the mark) is dust, not a position; an open position stays one even
        # if a price move takes a leg below that minimum (it is not entered again on top).
        holding = not flat and any(L.tradable(b, L.lot_floor(b, b.held), b.mark if st.holding_long < 0 else None) for b in st.legs)
        if holding:
            why = self.exit_reason(st)
            if why is None:
                return st, []
            first = next((i for i, b in enumerate(st.legs) if b.spot), 0)
            long_leg = 0 if st.legs[0].held > 0 else 1
            saga = Saga(kind="exit", key=key, step="close1", first=first, long_leg=long_leg, started_ts=st.ts, reason=why)
            return replace(st, saga=saga, exit_requested=False), []
        if st.holding_long >= 0 or st.exit_requested:
            st = replace(st, holding_long=-1, exit_requested=False)
        return self.maybe_enter(st, key)

    def exit_reason(self, st: ArbState) -> str | None:
        if st.exit_requested:
            return "an operator asked"
        if st.halted or st.fault:
            return "halted"
        for scope, state in sorted(st.breakers.items()):
            if state != "ok":
                return f"breaker {scope} is {state}"
        sp = st.spread
        if sp is None or st.ts - st.spread_ok_ts > self.cfg.stale_exit_ms:
            if st.ts - st.spread_ok_ts > self.cfg.stale_exit_ms:
                return f"the spread has not been fresh for {self.cfg.stale_exit_ms} ms"
            return None
        if sp.state != "ok" or sp.net_apr is None:
            return None
        if self.leg_of(sp.long.venue, sp.long.symbol) != st.holding_long and st.holding_long >= 0:
            return "the funding flipped"
        if sp.net_apr < self.cfg.exit_apr:
            return f"net APR {sp.net_apr} below {self.cfg.exit_apr}"
        return None

    def maybe_enter(self, st: ArbState, key: int) -> tuple[ArbState, list[Any]]:
        sp, c = st.spread, self.cfg
        if st.paused or st.halted or st.fault or sp is None or sp.state != "ok" or not st.above_since:
            return st, []
        if any(s != "ok" for s in st.breakers.values()):
            return st, []
        if st.ts - sp.ts > c.spread_fresh_ms or st.ts - st.above_since < c.entry_hold_ms:
            return st, []
        if any(st.ts - b.book_ts > c.spread_fresh_ms for b in st.legs):
            return st, []
        long_leg = st.above_long
        short_book = st.legs[1 - long_leg]
        if st.blocked is not None and (st.blocked_long < 0 or st.blocked_long == long_leg):
            return st, []
        if short_book.spot and not c.use_margin:
            # Negative funding on spot-perp needs a margin short: fail fast, before any order.
            return replace(st, blocked="margin_unavailable", blocked_long=long_leg), []
        first = 0
        cash = sum((b.cash for b in st.legs), ZERO)
        saga = Saga(kind="enter", key=key, step="leg1", first=first, long_leg=long_leg, started_ts=st.ts, reason=f"net APR {sp.net_apr}")
        st = replace(st, saga=saga, position=Book(), basis_cash=cash, above_since=0)
        side: Side = "buy" if first == long_leg else "sell"
        base = L.lot_floor(st.legs[first], c.amount)
        st, out = self.saga.place(st, first, "enter", side, base, c.band)
        if not out:
            return replace(st, saga=None), []  # no book or below the minimums: nothing to do
        return st, out

    # ------------------------------------------------------------------ outputs

    def books(self, st: ArbState) -> tuple[Book, Book]:
        """(the open position's, all positions') books, with both legs' price PnL at the mid."""
        cash = sum((b.cash for b in st.legs), ZERO)
        value = sum((b.held * (b.mark or ZERO) for b in st.legs), ZERO)
        # `basis_cash` is what the legs had cost when the position's entry began: the position's
        # price PnL is what changed since (open or, once flat, closed), the total's all of it.
        return replace(st.position, basis=value - (cash - st.basis_cash)), replace(st.total, basis=value - cash)

    def alert(self, st: ArbState) -> RiskAlert:
        why = {
            "failure_budget": f"{len(st.unwinds)} unwinds within an hour (budget {self.cfg.unwinds_per_hour}): entries blocked until an operator resets",
            "margin_unavailable": "a margin short is needed and margin is unavailable: entries in that direction blocked",
            "insufficient_collateral": "the venue refused the margin loan: entries in that direction blocked",
        }.get(st.blocked or "", f"entries blocked: {st.blocked}")
        fields: dict[str, Any] = dict(
            component=COMPONENT,
            instance=st.instance,
            severity="critical",
            kind=f"arbitrage_{st.blocked}",
            message=f"arbitrage {st.instance} ({st.pair}): {why}",
            venue=st.legs[0].venue,
            symbol=st.legs[0].symbol,
            ts=st.ts,
        )
        return RiskAlert(id=ids.content_id(f"arb-alert:{st.instance}", fields), **fields)

    def state_event(self, st: ArbState) -> StrategyState:
        position, total = self.books(st)
        holding = st.holding_long >= 0 or st.saga is not None
        perp = next((b for b in st.legs if not b.spot), st.legs[0])
        return StrategyState(
            id=ids.state_id(COMPONENT, st.instance, st.seq),
            component=COMPONENT,
            instance=st.instance,
            venue=perp.venue,
            account=st.account,
            symbol=perp.symbol,
            status=st.status,
            input_seq=st.seq,
            position=perp.held,
            realized_pnl=total.net - (position.basis if holding else ZERO),
            unrealized_pnl=position.basis if holding else ZERO,
            open_orders=len(st.orders),
            fills=st.fills,
            state=msgspec.to_builtins(st) | {"books": {"position": msgspec.to_builtins(position), "total": msgspec.to_builtins(total)}},
            ts=st.ts,
        )
