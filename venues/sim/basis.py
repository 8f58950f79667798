"""A market that follows another: its price is the leader's times (1 + basis), on its own tick.

Spot and perpetual of one asset must move together, or whatever a spot-perp position earns is
lost in their drift apart. The basis is a seeded mean-reverting walk per follower,

    basis' = basis x (1 - basis_reversion) + basis_volatility x z,   capped at +-basis_cap,

with z the draw `normal(seed, follower, "basis", step)`, and the basis it starts from read off
the last prints (follower / leader - 1): there is no state to keep, so a restarted exchange, or
the paper feed's judge after a restart, continues from the prices the engine holds. The
follower's volume is its leader's print's, in its own lots (both trade the same coin).

Whatever the leader prints (the random walk, a candle file, a paper feed's trades) the follower
follows; its own backfilled history is the leader's bars on its tick.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from venues.sim.config import SimConfig, SimMarket
from venues.sim.draws import normal
from venues.sim.journal import Bar, Print


def on_tick(price: Decimal, spec: SimMarket) -> Decimal:
    return max(spec.tick_size, (price / spec.tick_size).to_integral_value() * spec.tick_size)


def on_lot(amount: Decimal, spec: SimMarket) -> Decimal:
    return max(spec.lot_size, (amount / spec.lot_size).to_integral_value(rounding=ROUND_DOWN) * spec.lot_size)


class Basis:
    def __init__(self, config: SimConfig) -> None:
        self.seeds = {m.symbol: config.seed_of(m) for m in config.markets}
        self.followers = config.followers()

    def follow(self, spec: SimMarket, step: int, leader: Print, leader_before: Decimal | None, before: Decimal | None) -> Print:
        """The follower's print in the tick (or paper trade) `step` where its leader printed `leader`;
        `leader_before` and `before` are both markets' previous prints (None: none yet)."""
        basis = float(before / leader_before - 1) if before is not None and leader_before is not None else 0.0
        z, _ = normal(self.seeds[spec.symbol], spec.symbol, "basis", step)
        cap = float(spec.basis_cap)
        basis = max(-cap, min(cap, basis * (1 - float(spec.basis_reversion)) + float(spec.basis_volatility) * z))
        price = on_tick(leader.price * (1 + Decimal(repr(basis))), spec)
        return Print(spec.symbol, price, on_lot(leader.volume, spec))

    def prints(self, step: int, leader: Print, last: dict[str, Decimal]) -> list[Print]:
        """The prints of every follower of `leader.symbol`, from the previous prints in `last`."""
        before = last.get(leader.symbol)
        return [self.follow(spec, step, leader, before, last.get(spec.symbol)) for spec in self.followers.get(leader.symbol, [])]

    @staticmethod
    def history(spec: SimMarket, leader_bars: list[Bar]) -> list[Bar]:
        """A follower's backfill: its leader's bars on its own tick and lots (basis zero)."""
        out = []
        for b in leader_bars:
            o, h, low, c = (on_tick(p, spec) for p in (b.open, b.high, b.low, b.close))
            out.append(Bar(b.open_time, o, h, low, c, on_lot(b.volume, spec)))
        return out
