"""Pre-trade checks: every reason a venue refuses an order, decided before anything changes.

A check raises `Rejection` with a stable category; the engine turns it into a rejected order
event (the client id stays taken, as on a real venue). A marketable order comes back with the
book levels it will fill at, so the margin it needs is priced at the prices it will pay.
"""

from __future__ import annotations

from decimal import Decimal

from schemas.account import ZERO
from schemas.market import Market
from venues.protocol import OrderRequest
from venues.sim.accounting import Accounting
from venues.sim.book import Level, walk
from venues.sim.config import SimConfig, SimMarket
from venues.sim.state import MAX_NOTIONAL, EngineState, MarketState, Rejection, SimAccount, money


class PreTradeChecks:
    def __init__(self, config: SimConfig, markets: dict[str, Market], accounting: Accounting) -> None:
        self.config = config
        self.markets = markets
        self.specs: dict[str, SimMarket] = {m.symbol: m for m in config.markets}
        self.accounting = accounting

    def check(self, state: EngineState, acct: SimAccount, req: OrderRequest) -> list[Level] | None:
        """Raise Rejection for any reason to refuse; else the levels a taker fills at (None: it rests)."""
        market = self.markets[req.symbol]
        if req.deadline_ms is not None and state.ts > req.deadline_ms:
            # The promise a deadline buys: once the venue's clock has passed it, this order can
            # no longer be accepted, so a client that still finds nothing knows it never will.
            raise Rejection("expired", f"the order reached the venue at {state.ts}, after its deadline {req.deadline_ms}")
        ms = state.markets.get(req.symbol)
        if ms is None:
            raise Rejection("upstream_rejected", f"{req.symbol} has no price yet")
        if req.amount <= 0:
            raise Rejection("invalid", f"amount must be positive, got {req.amount}")
        if req.amount < market.min_amount:
            raise Rejection("below_min", f"amount {req.amount} is below the minimum {market.min_amount}")
        if not market.on_lot(req.amount):
            raise Rejection("invalid", f"amount {req.amount} is not a multiple of the lot size {market.lot_size}")
        limit = req.price if req.order_type == "limit" else None
        if req.order_type == "limit":
            if limit is None:
                raise Rejection("invalid", "a limit order needs a positive price")
            if not market.on_tick(limit):
                raise Rejection("off_tick", f"price {limit} is not on the tick size {market.tick_size}")
        ref_price = limit if limit is not None else ms.last
        notional = ref_price * req.amount * market.contract_size
        if notional > MAX_NOTIONAL:
            raise Rejection("invalid", f"notional {notional} is above what the venue accepts ({MAX_NOTIONAL})")
        if notional < market.min_notional:
            raise Rejection("below_min", f"notional {notional} is below the minimum {market.min_notional}")
        touch = ms.ask if req.side == "buy" else ms.bid
        marketable = limit is None or (limit >= touch if req.side == "buy" else limit <= touch)
        if marketable and (req.post_only or req.time_in_force == "PO"):
            raise Rejection("post_only_would_take", f"post-only {req.side} at {req.price} would take against {touch}")
        if req.time_in_force == "FOK" and not marketable:
            raise Rejection("upstream_rejected", "fill-or-kill order cannot fill now")
        levels = self._levels(acct, req, market, ms, limit) if marketable else None
        fillable = sum((lv.amount for lv in levels or ()), ZERO)
        if req.time_in_force == "FOK" and fillable < req.amount:
            raise Rejection("upstream_rejected", f"fill-or-kill order for {req.amount} finds {fillable} within its price")
        # Priced as it will trade: the levels it takes, then what rests at its limit.
        cost = sum((lv.price * lv.amount for lv in levels or ()), ZERO)
        if limit is not None and req.time_in_force not in ("IOC", "FOK"):
            cost += limit * (req.amount - fillable)
        if market.kind == "swap":
            self._check_swap(state, acct, req, market, cost)
        else:
            self._check_spot(state, acct, req, market, ms, cost)
        return levels

    def _levels(self, acct: SimAccount, req: OrderRequest, market: Market, ms: MarketState, limit: Decimal | None) -> list[Level]:
        amount = req.amount
        if market.kind == "swap" and req.reduce_only:
            pos = acct.positions.get(req.symbol)
            contracts = pos.contracts if pos else ZERO
            amount = min(amount, max(contracts if req.side == "sell" else -contracts, ZERO))  # never beyond the position
        return walk(self.specs[req.symbol], market, ms, req.side, amount, limit)

    def _check_swap(self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market, cost: Decimal) -> None:
        pos = acct.positions.get(req.symbol)
        contracts = pos.contracts if pos else ZERO
        if req.reduce_only:
            reducing = (contracts > 0 and req.side == "sell") or (contracts < 0 and req.side == "buy")
            if not reducing:
                raise Rejection("reduce_only_would_increase", f"reduce-only {req.side} with position {contracts}")
            return
        settle = self.accounting.settle(market)
        notional = cost * market.contract_size
        needed = notional / self.config.leverage + notional * market.taker_fee
        free = self.accounting.free_margin(state, acct, settle)
        if needed > free:
            raise Rejection("insufficient_balance", f"needs {money(needed)} {settle} of margin, {money(free)} free")

    def _check_spot(self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market, ms: MarketState, cost: Decimal) -> None:
        if req.side == "buy":
            needed = cost * (1 + market.taker_fee) - self._repaid_collateral(state, acct, req, market)
            free = self.accounting.free_margin(state, acct, market.quote)  # spot buys and swap margin share it
            if needed > free:
                raise Rejection("insufficient_balance", f"needs {money(needed)} {market.quote}, {money(free)} free")
            return
        # Every open sell locks base, margin sells included, so two sells never spend one coin.
        free = acct.balances.get(market.base, ZERO) - self.accounting.spot_locked(acct, market.base)
        if req.amount <= free:
            return
        if not req.use_margin:
            raise Rejection("insufficient_balance", f"needs {req.amount} {market.base}, {money(max(free, ZERO))} free")
        self._check_borrow(state, acct, req, market, ms, loan=req.amount - free)

    def _check_borrow(
        self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market, ms: MarketState, loan: Decimal
    ) -> None:
        """`loan`: what the account would owe in base once this and every resting sell filled."""
        base = market.base
        if not self.config.margin_enabled:
            raise Rejection("margin_unavailable", "margin trading is disabled on this venue")
        limit = self.accounting.borrow_limits.get(base, ZERO)
        if limit <= 0:
            raise Rejection("margin_unavailable", f"{base} cannot be borrowed")
        if loan > limit:
            raise Rejection("insufficient_collateral", f"a loan of {loan} {base} would exceed the limit {limit}")
        # Each coin borrowed beyond today's loan needs `spot_margin_ratio` of its value free in
        # the quote it is valued in: equity must keep backing the whole loan.
        loan_market = self.accounting.loan_markets[base]
        price = (state.markets.get(loan_market.symbol) or ms).last
        needed = (loan - acct.borrowed.get(base, ZERO)) * price * self.config.spot_margin_ratio
        free = self.accounting.free_margin(state, acct, loan_market.quote)
        if needed > free:
            raise Rejection(
                "insufficient_collateral",
                f"a loan of {loan} {base} needs {money(needed)} {loan_market.quote} more collateral, {money(max(free, ZERO))} free",
            )

    def _repaid_collateral(self, state: EngineState, acct: SimAccount, req: OrderRequest, market: Market) -> Decimal:
        """The collateral a buy frees by repaying a loan (so a short can always be bought back)."""
        debt = acct.borrowed.get(market.base, ZERO)
        loan_market = self.accounting.loan_markets.get(market.base)
        if debt <= 0 or loan_market is None or loan_market.quote != market.quote:
            return ZERO
        for o in acct.open.values():  # what resting buys will repay is theirs, not this order's
            m = self.markets[o.symbol]
            if o.side == "buy" and m.kind == "spot" and m.base == market.base:
                debt -= o.remaining
        ms = state.markets.get(loan_market.symbol)
        if debt <= 0 or ms is None:
            return ZERO
        return min(req.amount, debt) * ms.last * (1 + self.config.spot_margin_ratio)
