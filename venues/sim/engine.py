"""The simulated exchange's matching engine: a deterministic core over its journal.

`step(state, entry) -> (state, events)` with no clock and no randomness: time comes from
ticks, prices from the journal. It is as strict as a real venue, because strategies are
tested against it and what it forgives they would get wrong on one: takers walk a book of
finite depth and pay slippage, spot loans are capped, charged hourly and count against the
account's equity, perpetual positions are liquidated below maintenance margin, an order that
arrives after its deadline is refused, and client order ids stay unique per account.

The parts, each a module: `state` (what a checkpoint holds), `checks` (every reason to refuse
an order), `book` and `matching` (fills), `market_data` (prints into quotes and bars),
`charges` (funding and borrow interest), `liquidation`, `accounting` (read-only arithmetic)
and `views` (state as bus events). This module routes entries and answers the API's queries.

The state is mutated in place for speed, so each handler decides everything before its first
mutation: an entry is refused whole (no events, state untouched) or applied whole.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import msgspec

from bus.contract import Inbound
from schemas.account import ZERO, Balance, OrderUpdate, Position
from schemas.market import Candle, FundingRate, GapMarker, Market
from venues.sim.accounting import Accounting
from venues.sim.charges import Charges
from venues.sim.checks import PreTradeChecks
from venues.sim.config import SimConfig
from venues.sim.journal import MAX_PRICE, MAX_TS, Cancel, CancelAll, Entry, Fund, History, Place, Quote, SetFunding, Tick
from venues.sim.liquidation import Liquidator
from venues.sim.market_data import MarketData
from venues.sim.matching import Matcher
from venues.sim.paper import silence_reason
from venues.sim.state import MAX_BALANCE, MINUTE_MS, EngineState, MarketState, Rejection, SimAccount, SimOrder, SimPosition
from venues.sim.views import EventViews

__all__ = ["EngineState", "MarketState", "SimAccount", "SimEngine", "SimOrder", "SimPosition", "state_digest"]


class SimEngine:
    """Core[EngineState, Entry] of the consumer runtime."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.venue = config.venue
        self.markets: dict[str, Market] = config.market_map()
        self.accounting = Accounting(config, self.markets)
        self.views = EventViews(config, self.markets, self.accounting)
        self.checks = PreTradeChecks(config, self.markets, self.accounting)
        self.matcher = Matcher(config, self.markets, self.accounting, self.views)
        self.market_data = MarketData(config, self.markets, self.views)
        self.charges = Charges(config, self.markets, self.accounting, self.views)
        self.liquidator = Liquidator(config, self.markets, self.accounting, self.views)
        self.silence: str | None = None  # paper mode: what the gap marker of a quiet feed says
        if config.prices == "paper":
            # A real feed is quiet between trades for seconds (not every tick_ms): only a longer
            # silence, in the feed's own time, is a gap.
            self.market_data.gap_ms = config.paper_gap_ms
            self.silence = silence_reason(config)

    # ------------------------------------------------------------------ core

    def initial_state(self) -> EngineState:
        return EngineState(accounts={name: SimAccount(balances=dict(bal)) for name, bal in self.config.accounts.items()})

    def step(self, state: EngineState, inbound: Inbound[Entry]) -> tuple[EngineState, list[Any]]:
        out: list[Any] = []
        entry = inbound.event
        if isinstance(entry, (Place, Cancel)) and entry.silent:
            return state, self._silently(state, entry)
        match entry:
            case Tick():
                self._tick(state, entry, out)
            case Quote():
                out.extend(state.pending)
                state.pending = []
            case Place():
                self._place(state, entry, out)
            case Cancel():
                self._cancel(state, entry, out)
            case CancelAll():
                self._cancel_all(state, entry, out)
            case History():
                self.market_data.history(state, entry, out)
            case Fund():
                self._fund(state, entry, out)
            case SetFunding():
                self._set_funding(state, entry, inbound.seq, out)
        return state, out

    def _silently(self, state: EngineState, entry: Place | Cancel) -> list[Any]:
        """A test hook (`test_hooks`): the order changes, its account events are lost, as when a
        venue's private stream drops them. Without the flag (anyone can write the journal) the
        entry changes nothing."""
        if self.config.test_hooks:
            if isinstance(entry, Place):
                self._place(state, entry, [])
            else:
                self._cancel(state, entry, [])
        return []

    # ------------------------------------------------------------------ queries (for the API)

    def order_view(self, state: EngineState, account: str, client_order_id: str | None, order_id: str | None) -> OrderUpdate | None:
        acct = state.accounts.get(account)
        if acct is None:
            return None
        if order_id is None and client_order_id is not None:
            order_id = acct.by_cid.get(client_order_id)
        if order_id is None:
            return None
        order = acct.open.get(order_id) or acct.closed.get(order_id)
        return None if order is None else self.views.order(account, order)

    def open_orders(self, state: EngineState, account: str, symbol: str | None) -> list[OrderUpdate]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self.views.order(account, o) for o in acct.open.values() if symbol is None or o.symbol == symbol]

    def positions(self, state: EngineState, account: str) -> list[Position]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self.views.position(state, account, sym) for sym in sorted(acct.positions)]

    def balances(self, state: EngineState, account: str) -> list[Balance]:
        acct = state.accounts.get(account)
        if acct is None:
            return []
        return [self.views.balance(state, account, asset) for asset in sorted(acct.balances)]

    def candles(self, state: EngineState, symbol: str, since: int | None, limit: int | None) -> list[Candle]:
        ms = state.markets.get(symbol)
        if ms is None:
            return []
        bars = [b for b in ms.history if since is None or b.open_time >= since]
        if limit is not None:
            bars = bars[:limit] if since is not None else bars[-limit:]
        return [self.views.candle(symbol, b, b.open_time + MINUTE_MS - 1, True) for b in bars]

    def funding(self, state: EngineState, symbol: str, *, scripted: int | None = None) -> FundingRate | None:
        """The market's funding now (`scripted`: the journal seq of the test hook's entry that
        set it, whose FundingRate it is then, id included)."""
        ms = state.markets.get(symbol)
        if ms is None:
            return None
        return self.views.funding(symbol, ms, state.ts, scripted=scripted)

    def fund_problem(self, state: EngineState, entry: Fund) -> str | None:
        """Why a deposit or withdrawal cannot be applied (None: it can). The API asks first."""
        acct = state.accounts.get(entry.account)
        held = acct.balances.get(entry.asset, ZERO) if acct else ZERO
        if abs(held + entry.amount) > MAX_BALANCE:
            return f"a balance beyond {MAX_BALANCE} {entry.asset}"
        if entry.amount < 0:
            free = self.accounting.free_margin(state, acct, entry.asset) if acct else ZERO
            if -entry.amount > free:
                return f"withdrawing {-entry.amount} {entry.asset} with {max(free, ZERO)} free"
        return None

    def funding_problem(self, state: EngineState, entry: SetFunding) -> str | None:
        """Why a scripted funding rate cannot be applied (None: it can). The API asks first."""
        market = self.markets.get(entry.symbol)
        if market is None or market.kind != "swap":
            return f"{entry.symbol} is not a perpetual of {self.venue}: it has no funding"
        if entry.symbol not in state.markets:
            return f"{entry.symbol} has no price yet"
        return None

    def quiet_range(self, state: EngineState, symbol: str) -> tuple[Decimal, Decimal, int] | None:
        """(low, high, until): prints of `symbol` strictly between low and high and before time
        `until` change no account: no resting order traded through, no funding time or charged
        hour reached, no account liquidated. None when any print might. A backtest then skips
        such prints (backtest/session.py); the range holds until the state changes.

        Liquidation compares equity with maintenance margin, both linear in the price while
        nothing fills, so each account with a position has one price beyond which it would go."""
        ms = state.markets.get(symbol)
        market = self.markets.get(symbol)
        if ms is None or market is None or not ms.last_ts:
            return None
        until = MAX_TS
        if market.kind == "swap":
            if ms.next_funding_time == 0:
                return None
            until = ms.next_funding_time
        low, high = ZERO, MAX_PRICE
        for acct in state.accounts.values():
            if any(v > 0 for v in acct.borrowed.values()):
                until = min(until, state.next_interest)
            for order in acct.open.values():
                if order.symbol == symbol and order.price is not None:
                    if order.side == "buy":
                        low = max(low, order.price)
                    else:
                        high = min(high, order.price)
            pos = acct.positions.get(symbol)
            if market.kind == "swap" and pos is not None and pos.contracts:
                equity, maintenance = self.accounting.margin(state, acct, self.accounting.settle(market))
                size = market.contract_size
                slope = size * (pos.contracts - abs(pos.contracts) * self.config.maintenance_margin_rate)
                if slope == 0:
                    continue
                edge = ms.last - (equity - maintenance) / slope  # where equity would meet maintenance
                if slope > 0:
                    low = max(low, edge)
                else:
                    high = min(high, edge)
        return (low, high, until) if low < high else None

    # ------------------------------------------------------------------ prices

    def _tick(self, state: EngineState, tick: Tick, out: list[Any]) -> None:
        """A print fills resting orders now; its market data waits for the Quote entry.

        Two entries, so that a lock-step driver can let the fills (ACCOUNT) settle before the
        prices (MARKET) go out: a strategy then sees the two streams in one order every run.
        In real time the Quote follows at once."""
        prints = [p for p in tick.prints if p.symbol in self.markets]
        if tick.ts < state.ts or not prints:
            return  # time never goes back, and a tick of no market of ours is not a tick
        state.ts = tick.ts
        self.charges.interest(state, out)
        for p in prints:
            ms = self.market_data.market_state(state, p.symbol, p.price)
            quoted = len(state.pending)
            self.market_data.apply_print(state, ms, tick, p, out, state.pending)
            if self.silence is not None:
                self._reword_gap(state.pending, quoted)
            self.matcher.match_resting(state, p.symbol, p.price, p.volume * self.config.fill_ratio, tick.ts, out)
            if self.markets[p.symbol].kind == "swap":
                self.charges.funding(state, ms, p.symbol, tick.ts, out, state.pending)
            self.liquidator.check(state, out)

    def _reword_gap(self, md: list[Any], first: int) -> None:
        """A paper venue was running: its gap marker says the feed went quiet (same id)."""
        if len(md) > first and isinstance(md[first], GapMarker):
            md[first] = msgspec.structs.replace(md[first], reason=self.silence)

    # ------------------------------------------------------------------ orders

    def _place(self, state: EngineState, entry: Place, out: list[Any]) -> None:
        account, req = entry.account, entry.order
        acct = state.accounts.get(account)
        if acct is None or req.symbol not in self.markets:
            return  # the API refuses both before journaling: an entry that names them changes nothing
        if req.client_order_id in acct.by_cid:
            return  # idempotent: the existing order stands, the API returns it
        order = SimOrder(
            order_id=str(state.next_order),
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            price=req.price if req.order_type == "limit" else None,
            amount=req.amount,
            post_only=req.post_only,
            reduce_only=req.reduce_only,
            use_margin=req.use_margin,
            created=state.ts,
            updated=state.ts,
        )
        kept = self.config.orders_kept
        try:
            levels = self.checks.check(state, acct, req)
        except Rejection as rej:
            order.status, order.reason, order.message = "rejected", rej.reason, str(rej)
            event = self.views.order(account, order)  # built before the state changes: it validates
            state.next_order += 1
            acct.remember(order, kept)
            out.append(event)
            return
        state.next_order += 1
        acct.remember(order, kept)
        out.append(self.views.order(account, order))
        if levels:
            self.matcher.take(state, account, acct, order, levels, state.ts, out)
        if order.status == "open" and (req.order_type == "market" or req.time_in_force in ("IOC", "FOK")):
            # What did not fill at once does not rest.
            acct.end(order, "canceled" if req.order_type == "market" else "expired", state.ts, kept)
            out.append(self.views.order(account, order))

    def _cancel(self, state: EngineState, req: Cancel, out: list[Any]) -> None:
        acct = state.accounts.get(req.account)
        if acct is None:
            return
        oid = req.order_id or acct.by_cid.get(req.client_order_id or "")
        order = acct.open.get(oid or "")
        if order is None or order.symbol != req.symbol:
            return  # unknown or already ended: the API reports the order as it stands
        acct.end(order, "canceled", state.ts, self.config.orders_kept)
        out.append(self.views.order(req.account, order))

    def _cancel_all(self, state: EngineState, req: CancelAll, out: list[Any]) -> None:
        acct = state.accounts.get(req.account)
        if acct is None:
            return
        for order in [o for o in acct.open.values() if o.symbol == req.symbol]:
            acct.end(order, "canceled", state.ts, self.config.orders_kept)
            out.append(self.views.order(req.account, order))

    def _fund(self, state: EngineState, req: Fund, out: list[Any]) -> None:
        if self.fund_problem(state, req) is not None:
            return
        acct = state.accounts.setdefault(req.account, SimAccount(balances={}))
        balance = acct.balances[req.asset] = acct.balances.get(req.asset, ZERO) + req.amount
        if acct.borrowed.get(req.asset, ZERO) > 0:  # a deposit of a borrowed coin repays the loan
            acct.borrowed[req.asset] = max(-balance, ZERO)
        out.append(self.views.balance(state, req.account, req.asset))

    def _set_funding(self, state: EngineState, req: SetFunding, seq: int, out: list[Any]) -> None:
        """A test hook: without `test_hooks` (anyone can write the journal) it changes nothing."""
        if not self.config.test_hooks or self.funding_problem(state, req) is not None:
            return
        ms = state.markets[req.symbol]
        self.charges.process.pin(ms, req.symbol, req.rate, req.predicted_rate)
        out.append(self.funding(state, req.symbol, scripted=seq))  # at once, not at the next Quote


def state_digest(state: EngineState) -> str:
    """A short fingerprint of the whole engine state (two runs compare it)."""
    return hashlib.blake2b(msgspec.json.encode(state), digest_size=8).hexdigest()
