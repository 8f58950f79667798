"""Shared helpers of the simulated exchange's engine tests: configs, a stepping driver, event pickers.

The engine has no clock and no I/O: every test builds a tiny explicit `SimConfig`, seeds
prices with a `Tick` and steps journal entries with increasing sequence numbers.

Reference market (swap `BTC/USDT:USDT` and spot `BTC/USDT`, both seeded at 100):
tick 0.1, one-tick half spread, so the quotes are bid 99.9 / ask 100.1.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bus.contract import Inbound
from schemas.account import Balance, OrderUpdate, Position
from venues.protocol import OrderRequest
from venues.sim.config import SimConfig, SimMarket
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Bar, Place, Print, Quote, Tick, journal_subject


def place(account: str, **order: Any) -> Place:
    """A journal entry placing one order."""
    return Place(account=account, order=OrderRequest(**order))


D = Decimal

SWAP = "BTC/USDT:USDT"
SPOT = "BTC/USDT"
T0 = 1_699_999_200_000  # an hour boundary, hence also a minute boundary
MINUTE = 60_000
HOUR = 3_600_000

SWAP_MAKER, SWAP_TAKER = D("0.0002"), D("0.0005")
SPOT_MAKER, SPOT_TAKER = D("0.001"), D("0.002")


# ---------------------------------------------------------------------------- helpers


def swap_market(**overrides: Any) -> SimMarket:
    fields: dict[str, Any] = dict(
        symbol=SWAP,
        kind="swap",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.002"),  # above the lot, so "below min amount" is distinguishable from "off lot"
        min_notional=D("5"),
        maker_fee=SWAP_MAKER,
        taker_fee=SWAP_TAKER,
        start_price=D("100"),
        tick_volume=D("1"),
        spread_ticks=1,
        funding_interval_h=8,
    )
    fields.update(overrides)
    return SimMarket(**fields)


def spot_market(**overrides: Any) -> SimMarket:
    fields: dict[str, Any] = dict(
        symbol=SPOT,
        kind="spot",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.001"),
        min_notional=D("5"),
        maker_fee=SPOT_MAKER,
        taker_fee=SPOT_TAKER,
        start_price=D("100"),
        tick_volume=D("1"),
        spread_ticks=1,
    )
    fields.update(overrides)
    return SimMarket(**fields)


def make_config(
    *, markets: list[SimMarket] | None = None, accounts: dict[str, dict[str, Decimal]] | None = None, **overrides: Any
) -> SimConfig:
    fields: dict[str, Any] = dict(
        venue="sim",
        seed=1,
        tick_ms=500,
        fill_ratio=D("1"),
        leverage=D("5"),
        markets=markets if markets is not None else [swap_market(), spot_market()],
        accounts=accounts if accounts is not None else {"main": {"USDT": D("10000"), "BTC": D("1")}},
    )
    fields.update(overrides)
    return SimConfig(**fields)


class Sim:
    """One engine and its state, stepped with increasing journal sequence numbers."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.engine = SimEngine(config or make_config())
        self.state: EngineState = self.engine.initial_state()
        self.seq = 0
        self.step_no = 0
        self.ts = T0

    def apply(self, entry: Any) -> list[Any]:
        self.seq += 1
        self.state, events = self.engine.step(self.state, Inbound(self.seq, journal_subject("sim", entry), entry))
        return list(events)

    def ticks(self, prints: list[tuple[str, str, str]], *, ts: int | None = None) -> list[Any]:
        """One tick with several prints `(symbol, price, volume)`; 500 ms after the last by default."""
        self.ts = ts if ts is not None else self.ts + 500
        self.step_no += 1
        fills = self.apply(Tick(step=self.step_no, ts=self.ts, prints=[Print(s, D(p), D(v)) for s, p, v in prints]))
        return fills + self.apply(Quote(step=self.step_no))  # a tick's fills, then its market data

    def tick(self, price: str, volume: str = "10", *, symbol: str = SWAP, ts: int | None = None) -> list[Any]:
        return self.ticks([(symbol, price, volume)], ts=ts)

    def place(
        self,
        cid: str,
        side: str,
        amount: str,
        price: str | None = None,
        *,
        account: str = "main",
        symbol: str = SWAP,
        order_type: str | None = None,
        **flags: Any,
    ) -> list[Any]:
        return self.apply(
            place(
                account,
                symbol=symbol,
                client_order_id=cid,
                side=side,
                order_type=order_type or ("market" if price is None else "limit"),
                amount=D(amount),
                price=None if price is None else D(price),
                **flags,
            )
        )

    def balance(self, asset: str, account: str = "main") -> Balance:
        return next(b for b in self.engine.balances(self.state, account) if b.asset == asset)

    def position(self, symbol: str = SWAP, account: str = "main") -> Position:
        return next(p for p in self.engine.positions(self.state, account) if p.symbol == symbol)

    def order(self, cid: str, account: str = "main") -> OrderUpdate | None:
        return self.engine.order_view(self.state, account, cid, None)


def seeded(config: SimConfig | None = None, *, ts: int = T0, swap: str = "100", spot: str | None = "100") -> Sim:
    """A sim whose markets have a first price (quotes: price -/+ one tick)."""
    sim = Sim(config)
    prints = [(SWAP, swap, "10")] + ([(SPOT, spot, "10")] if spot is not None else [])
    sim.ticks(prints, ts=ts)
    return sim


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def one(events: list[Any], cls: type) -> Any:
    found = of(events, cls)
    assert len(found) == 1, f"expected one {cls.__name__}, got {found}"
    return found[0]


def bars(first: int, closes: list[str]) -> list[Bar]:
    return [Bar(first + i * MINUTE, D(c), D(c) + 1, D(c) - 1, D(c), D("2")) for i, c in enumerate(closes)]
