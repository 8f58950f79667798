"""The risk monitor's pure core: inputs in, breaker changes and cancel-alls out.

Time comes from the inputs (the venue's times on market and account events, and the `Clock`
its shell stores in the input stream), so a replay of the input stream makes every decision
again, at the same input. Each scope (`global`, `venue.<v>`, `account.<v>.<a>`,
`symbol.<v>.<s>`) is in one of NautilusTrader's trading states, spelled as the executor and
the grid already read them: `ok` (active), `reduce_only` (reducing) or `halted`.

A breaker trips when its condition holds (monitors/risk/conditions.py) and is latched: it stays
until an operator resets it or, where its rule has a cool-down, that long after its condition
stopped holding, and never while the condition still holds. A scope's state is the worst of
its latched breakers; every change is published with the trips as evidence, and a scope that
halts gets a cancel-all for every market it covers.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from bus.contract import Inbound, InputRejected
from monitors.risk.conditions import DAY_MS, Holding, holding, symbol_scope
from monitors.risk.config import RiskConfig, Rule
from monitors.risk.state import Held, Latch, RiskState, Seen, account_key, market_key, position_key
from schemas import ids
from schemas.account import Balance, OrderUpdate, Position
from schemas.commands import CancelAll, PlaceOrder
from schemas.market import Market, Ticker
from schemas.ops import BreakerChange, BreakerState, Clock, ControlCommand, RiskAlert, Trip, worst_breaker
from schemas.sanity import PriceBand, check_ticker
from schemas.subjects import ALL_INSTANCES, breaker_scopes

# Refusals that say nothing about the venue's or our health: the grid meets them in normal trading.
BENIGN = frozenset({"post_only_would_take", "breaker_open", "reduce_only_would_increase", "expired"})
PLACED_KEPT_MS = 300_000  # a create without an answer this long stops waiting for its latency
CANCEL_TTL_MS = 300_000  # a cancel is never harmful late: it may wait out a frozen venue
OPERATOR = Rule(state="halted")  # an operator's or a reconciler's trip: only an operator closes it
RULES = {"reject_rate": "rejects"}  # breaker name -> its config key, where they differ


class RiskCore:
    def __init__(self, config: RiskConfig, markets: dict[str, Market]) -> None:
        """`markets`: the venues' rules of every watched market, by `venue|symbol` (market-data
        sanity needs the tick: a first price below one would anchor the guard's band on garbage)."""
        self.cfg = config
        self.watched = {market_key(v, s) for v, s in config.markets()}
        missing = sorted(self.watched - markets.keys())
        if missing:
            raise ValueError(f"no market rules for {', '.join(missing)}")
        self.accounts = {account_key(v, a) for v, a in config.accounts()}
        self.quotes = {account_key(w.venue, w.account): w.quote for w in config.watch}
        self.markets = {key: markets[key] for key in self.watched}
        self.band = PriceBand()
        self.scopes = config.scopes()
        self.origin = f"risk:{config.instance}"

    def initial_state(self) -> RiskState:
        return RiskState(instance=self.cfg.instance)

    # ------------------------------------------------------------------ inputs

    def step(self, st: RiskState, inbound: Inbound[Any]) -> tuple[RiskState, list[Any]]:
        ev, seq = inbound.event, inbound.seq
        kind = type(ev)
        alerts: list[Any] = []
        if kind is Ticker:
            st = self.on_ticker(st, ev, seq)
        elif kind is Position:
            st = self.on_position(st, ev, seq)
        elif kind is OrderUpdate:
            st = self.on_order(st, ev, seq)
        elif kind is PlaceOrder:
            st = self.on_place(st, ev, seq)
        elif kind is Balance:
            st = self.on_balance(st, ev)
        elif kind is ControlCommand:
            st, alerts = self.on_control(st, ev, seq)
        elif kind is RiskAlert:
            st = self.on_alert(st, ev, seq)
        elif kind is not Clock:
            return st, []
        # Time moves with the monitor's own clock and the watched markets' tickers only: an
        # operator's, a strategy's or a reconciler's clock a few seconds fast must not make every
        # feed look stale (the admission check lets an input run up to 5 s ahead).
        st = self.advance(st, ev.ts if kind is Clock or kind is Ticker else st.now, seq)
        st, outputs = self.judge(st, seq)
        return st, alerts + outputs

    def advance(self, st: RiskState, ts: int, seq: int) -> RiskState:
        now = max(st.now, ts)
        started = st.started or now
        if not now:  # no time yet (an account event before the first clock or ticker)
            return replace(st, seq=seq)
        if now // DAY_MS != st.day:  # a new UTC day: every position's PnL now is its baseline
            marks = {k: h.realized + h.unrealized for k, h in st.positions.items()}
            return replace(st, now=now, started=started, seq=seq, day=now // DAY_MS, day_marks=marks)
        return replace(st, now=now, started=started, seq=seq)

    def on_ticker(self, st: RiskState, ev: Ticker, seq: int) -> RiskState:
        key = market_key(ev.venue, ev.symbol)
        if key not in self.watched:
            return st
        seen = st.markets.get(key) or Seen()
        if ev.ts < seen.last_ts:
            return st  # older than what we have: it says nothing about now
        problem = check_ticker(ev, self.markets[key], seen.price, seen.last_ts, self.band)
        if problem:
            raise InputRejected(problem)
        horizon = ev.ts - self.cfg.flash_crash.window_ms
        window = tuple(p for p in seen.window if p[0] >= horizon) + ((ev.ts, ev.last, seq),)
        markets = dict(st.markets)
        markets[key] = Seen(last_ts=ev.ts, last_seq=seq, price=ev.last, window=window)
        return replace(st, markets=markets)

    def on_position(self, st: RiskState, ev: Position, seq: int) -> RiskState:
        if account_key(ev.venue, ev.account) not in self.accounts:
            return st
        sign = -1 if ev.side == "short" else 1
        held = Held(
            base=sign * ev.contracts * ev.contract_size,
            mark=ev.mark_price,
            liquidation=ev.liquidation_price,
            unrealized=ev.unrealized_pnl,
            realized=ev.realized_pnl,
            seq=seq,
        )
        key = position_key(ev.venue, ev.account, ev.symbol)
        positions = dict(st.positions)
        positions[key] = held
        if key in st.day_marks:
            return replace(st, positions=positions)
        marks = dict(st.day_marks)
        marks[key] = held.realized + held.unrealized  # first seen today: the day begins here for it
        return replace(st, positions=positions, day_marks=marks)

    def on_balance(self, st: RiskState, ev: Balance) -> RiskState:
        key = account_key(ev.venue, ev.account)
        if self.quotes.get(key) != ev.asset:
            return st
        equity = dict(st.equity)
        equity[key] = ev.total
        return replace(st, equity=equity)

    def on_place(self, st: RiskState, ev: PlaceOrder, seq: int) -> RiskState:
        if account_key(ev.venue, ev.account) not in self.accounts:
            return st
        horizon = max(st.now, ev.ts) - PLACED_KEPT_MS
        placed = {k: v for k, v in st.placed.items() if v[0] >= horizon}
        placed[ev.client_order_id] = (ev.ts, ev.venue, ev.account, seq)
        return replace(st, placed=placed)

    def on_order(self, st: RiskState, ev: OrderUpdate, seq: int) -> RiskState:
        """The first answer to one of the creates we saw: its latency, and whether it was refused."""
        sent = st.placed.get(ev.client_order_id)
        if sent is None or sent[1] != ev.venue or sent[2] != ev.account:
            return st
        placed = dict(st.placed)
        del placed[ev.client_order_id]
        if ev.status == "rejected" and ev.reason in BENIGN:  # says nothing about anyone's health
            return replace(st, placed=placed)
        refused = ev.status in ("unknown", "rejected")
        acct = account_key(ev.venue, ev.account)
        keep_from = ev.ts_local - self.cfg.rejects.window_ms
        outcomes = dict(st.outcomes)
        outcomes[acct] = tuple(o for o in st.outcomes.get(acct, ()) if o[0] >= keep_from) + ((ev.ts_local, refused, seq),)
        answers = dict(st.answers)
        kept = answers.get(ev.venue, ())[-(self.cfg.latency.samples * 4) :]
        answers[ev.venue] = (*kept, (ev.ts_local, max(0, ev.ts_local - sent[0]), seq))
        return replace(st, placed=placed, outcomes=outcomes, answers=answers)

    def on_alert(self, st: RiskState, ev: RiskAlert, seq: int) -> RiskState:
        """A reconciler's position drift: the market reduces until an operator looks."""
        if ev.kind != "position_drift" or ev.venue is None or ev.symbol is None or market_key(ev.venue, ev.symbol) not in self.watched:
            return st
        scope = symbol_scope(ev.venue, ev.symbol)
        trip = Trip(breaker="drift", state="reduce_only", value=ev.value, limit=ev.threshold, detail=ev.message, since=ev.ts, events=[seq])
        return self.latch(st, scope, trip, holding=False)

    def on_control(self, st: RiskState, ev: ControlCommand, seq: int) -> tuple[RiskState, list[Any]]:
        if ev.target_component != "risk" or ev.target_instance not in (self.cfg.instance, ALL_INSTANCES):
            return st, []
        if ev.scope is not None and ev.scope not in self.scopes:
            return st, [self.unknown_scope(ev, seq)]
        if ev.action in ("halt", "pause"):
            scope = ev.scope or "global"
            state: BreakerState = "halted" if ev.action == "halt" else "reduce_only"
            held = st.latches.get(scope, {}).get("operator")
            if held is not None and held.trip.state == "halted" and state != "halted":
                return st, []  # a pause does not lower an operator's halt: a reset does
            trip = Trip(breaker="operator", state=state, detail=f"{ev.operator}: {ev.reason or ev.action}", since=ev.ts, events=[seq])
            return self.latch(st, scope, trip, holding=False), []
        # reset / resume: close what no longer holds; say what cannot be closed and why
        latches = {s: dict(b) for s, b in st.latches.items()}
        refused: list[Any] = []
        for scope, breakers in sorted(latches.items()):
            if ev.scope is not None and scope != ev.scope:
                continue
            for name, latch in sorted(breakers.items()):
                if latch.holding:
                    refused.append(self.refusal(ev, scope, latch.trip, seq))
                else:
                    del breakers[name]
        return replace(st, latches={s: b for s, b in latches.items() if b}), refused

    def unknown_scope(self, ev: ControlCommand, seq: int) -> RiskAlert:
        """An operator named a scope no watched market has: refused, said, nothing latched."""
        fields: dict[str, Any] = dict(
            component="risk",
            instance=self.cfg.instance,
            severity="warning",
            kind="unknown_scope",
            message=f"{ev.operator} asked to {ev.action} {ev.scope!r}, which is none of: {', '.join(sorted(self.scopes))}"[:1000],
            ts=ev.ts,
        )
        return RiskAlert(id=ids.content_id(f"risk-scope:{self.cfg.instance}", {**fields, "seq": seq}), **fields)

    def refusal(self, ev: ControlCommand, scope: str, trip: Trip, seq: int) -> RiskAlert:
        fields: dict[str, Any] = dict(
            component="risk",
            instance=self.cfg.instance,
            severity="warning",
            kind="reset_refused",
            message=f"{ev.operator} asked to close {trip.breaker} on {scope}, but it still holds: {trip.detail}",
            value=trip.value,
            threshold=trip.limit,
            ts=ev.ts,
        )
        return RiskAlert(id=ids.content_id(f"risk-refusal:{self.cfg.instance}", {**fields, "seq": seq}), **fields)

    # ------------------------------------------------------------------ decisions

    def latch(self, st: RiskState, scope: str, trip: Trip, holding: bool) -> RiskState:
        latches = dict(st.latches)
        breakers = dict(latches.get(scope, {}))
        breakers[trip.breaker] = Latch(trip=trip, holding=holding, cleared_at=0 if holding else trip.since)
        latches[scope] = breakers
        return replace(st, latches=latches)

    def rule(self, breaker: str) -> Rule:
        rule = getattr(self.cfg, RULES.get(breaker, breaker), None)
        return rule if isinstance(rule, Rule) else OPERATOR

    def judge(self, st: RiskState, seq: int) -> tuple[RiskState, list[Any]]:
        now = holding(self.cfg, st)
        latches = self.relatch(st, now)
        if latches is not st.latches:
            st = replace(st, latches=latches)
        return self.publish(st, seq)

    def relatch(self, st: RiskState, now: Holding) -> dict[str, dict[str, Latch]]:
        """Latches after this input: new trips latched, ended conditions marked, cool-downs done."""
        changed = False
        out: dict[str, dict[str, Latch]] = {}
        for scope in sorted(st.latches.keys() | now.keys()):  # sorted: the same order whatever the hash seed
            old = st.latches.get(scope, {})
            found = now.get(scope, {})
            breakers: dict[str, Latch] = {}
            for name in sorted(old.keys() | found.keys()):
                latch, trip = old.get(name), found.get(name)
                if trip is not None:
                    kept = Latch(trip=trip if latch is None or not latch.holding else latch.trip, holding=True)
                    breakers[name] = kept
                    changed |= latch is None or not latch.holding
                    continue
                assert latch is not None
                if latch.holding:
                    breakers[name] = replace(latch, holding=False, cleared_at=st.now)
                    changed = True
                    continue
                cooldown = self.rule(name).cooldown_ms
                if cooldown and st.now - latch.cleared_at >= cooldown:
                    changed = True  # closed by its cool-down
                    continue
                breakers[name] = latch
            if breakers:
                out[scope] = breakers
        return out if changed else st.latches

    def publish(self, st: RiskState, seq: int) -> tuple[RiskState, list[Any]]:
        outputs: list[Any] = []
        published = st.published
        for scope in sorted(st.latches.keys() | published.keys()):
            latches = st.latches.get(scope, {})
            state = worst_breaker(latch.trip.state for latch in latches.values())
            last = published.get(scope)
            previous: BreakerState = last.state if last is not None else "ok"
            if state == previous:
                continue
            trips = sorted((latch.trip for latch in latches.values()), key=lambda t: t.breaker)
            reason = "; ".join(f"{t.breaker}: {t.detail}" for t in trips) if trips else "every condition cleared and closed"
            fields: dict[str, Any] = dict(
                instance=self.cfg.instance, scope=scope, state=state, previous=previous, reason=reason, trips=trips, ts=st.now
            )
            change = BreakerChange(id=ids.content_id(f"breaker:{self.cfg.instance}", {**fields, "seq": seq}), **fields)
            if published is st.published:
                published = dict(published)
            published[scope] = change
            outputs.append(change)
            if state == "halted" and self.cfg.cancel_on_halt:
                outputs.extend(self.cancel_all(scope, reason, st.now, seq))
        if published is not st.published:
            st = replace(st, published=published)
        return st, outputs

    def cancel_all(self, scope: str, reason: str, now: int, seq: int) -> list[CancelAll]:
        """A cancel-all for every watched market the scope covers, on every watched account."""
        out = []
        for w in self.cfg.watch:
            for symbol in w.symbols:
                if scope in breaker_scopes(w.venue, symbol, w.account):
                    fields: dict[str, Any] = dict(
                        venue=w.venue,
                        account=w.account,
                        symbol=symbol,
                        origin=self.origin,
                        reason=f"{scope} halted: {reason}"[:500],
                        ts=now,
                        ttl_ms=CANCEL_TTL_MS,
                    )
                    out.append(CancelAll(id=ids.content_id(f"risk-cancel:{self.cfg.instance}", {**fields, "seq": seq}), **fields))
        return out
