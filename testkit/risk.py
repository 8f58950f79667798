"""A driver for the risk core: inputs go through the same admission as live (bus/contract.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from monitors.risk.config import RiskConfig
from monitors.risk.core import RiskCore
from monitors.risk.runner import risk_spec
from monitors.risk.state import RiskState, market_key
from schemas import ids
from schemas.account import Balance, Position
from schemas.commands import CancelAll
from schemas.market import Market
from schemas.ops import BreakerChange, Clock, ControlCommand, RiskAlert
from testkit.cores import Admitted
from testkit.events import order_update, place, ticker

T0 = 1_700_000_000_000


def markets_of(cfg: RiskConfig) -> dict[str, Market]:
    """Rules for every watched market: a tick of 0.01 (the sim's ETH and spot BTC)."""
    return {
        market_key(v, s): Market(symbol=s, kind="swap", base=s.split("/")[0], quote="USDT", tick_size=Decimal("0.01"),
                                 lot_size=Decimal("0.001"), min_amount=Decimal("0.001"), min_notional=Decimal(5))
        for v, s in cfg.markets()
    }  # fmt: skip


class RiskDriver(Admitted):
    def __init__(self, cfg: RiskConfig | None = None, **kw: Any) -> None:
        self.cfg = cfg or RiskConfig(**kw)
        super().__init__(RiskCore(self.cfg, markets_of(self.cfg)), risk_spec(self.cfg).rules())
        self.state: RiskState
        self.ts = T0

    def at(self, ts: int) -> list[Any]:
        self.ts = ts
        return self.feed(Clock(id=f"c{ts}", component="risk", instance=self.cfg.instance, ts=ts))

    def wait(self, ms: int) -> list[Any]:
        return self.at(self.ts + ms)

    def tick(self, price: str, symbol: str = "BTC/USDT:USDT", after: int = 250) -> list[Any]:
        self.ts += after
        return self.feed(ticker(price, ts=self.ts, symbol=symbol))

    def position(self, contracts: str, side: str = "long", symbol: str = "BTC/USDT:USDT", **kw: Any) -> list[Any]:
        self.ts += 1
        fields: dict[str, Any] = dict(venue="sim", account="main", symbol=symbol, side=side if Decimal(contracts) else None,
                                      contracts=Decimal(contracts), ts=self.ts, ts_local=self.ts)  # fmt: skip
        fields.update({k: Decimal(v) if isinstance(v, str) else v for k, v in kw.items()})
        return self.feed(Position(id=ids.content_id("pos", fields), **fields))

    def balance(self, total: str) -> list[Any]:
        self.ts += 1
        t = Decimal(total)
        fields: dict[str, Any] = dict(
            venue="sim", account="main", asset="USDT", free=t, used=Decimal(0), total=t, ts=self.ts, ts_local=self.ts
        )
        return self.feed(Balance(id=ids.content_id("bal", fields), **fields))

    def create(self, client_order_id: str, status: str = "open", took_ms: int = 10, reason: str | None = None) -> list[Any]:
        self.ts += 1
        sent = self.ts
        self.feed(place(client_order_id, ts=sent))
        self.ts += took_ms
        return self.feed(order_update(client_order_id, status, ts=self.ts, ts_local=self.ts, reason=reason))

    def control(self, action: str, scope: str | None = None, operator: str = "alice") -> list[Any]:
        self.ts += 1
        fields: dict[str, Any] = dict(target_component="risk", target_instance=self.cfg.instance, action=action, scope=scope,
                                      operator=operator, ts=self.ts)  # fmt: skip
        return self.feed(ControlCommand(id=ids.content_id("ctl", fields), **fields))

    def state_of(self, scope: str) -> str:
        change = self.state.published.get(scope)
        return change.state if change else "ok"


def changes(out: list[Any]) -> list[BreakerChange]:
    return [o for o in out if isinstance(o, BreakerChange)]


def cancel_alls(out: list[Any]) -> list[CancelAll]:
    return [o for o in out if isinstance(o, CancelAll)]


def alerts(out: list[Any]) -> list[RiskAlert]:
    return [o for o in out if isinstance(o, RiskAlert)]
