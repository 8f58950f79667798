"""What every backtest shares: one simulated exchange's engine, the executor's part, and the
breadth-first order in which the bus delivers in live trading driven in lock-step.

- `apply(entry)`: the engine takes one journal entry; its events go to `route` at once, in the
  order the engine made them (the exchange publishes all of one entry's events before anything
  they cause can reach it);
- what the consumers decide queues (the COMMAND stream, and events one consumer publishes for
  another, such as the funding monitor's spreads for the arbitrage), and `settle()` takes the
  queue in order: a command goes to the engine (the executor), each one's events routed in turn,
  an event to the consumer it is for; what either causes queues behind.

The executor's part is its pure pre-trade check (executors/validate.py) and its rejection event;
breakers, deadlines and retries do not arise without a network.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bus.contract import Inbound
from executors.answers import order_event
from executors.validate import check_place, order_request
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from venues.sim.config import SimConfig
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Cancel, Entry, Place
from venues.sim.journal import CancelAll as CancelAllEntry

Command = PlaceOrder | CancelOrder | CancelAll


class BacktestError(ValueError):
    """A backtest that cannot run as configured (names the parameter)."""


class Later:
    """An event queued for one consumer (`deliver`), behind what was queued before it."""

    __slots__ = ("deliver", "event")

    def __init__(self, deliver: Callable[[Any], None], event: Any) -> None:
        self.deliver = deliver
        self.event = event


class Wiring:
    """One engine, its state, and the queue of what its consumers decided."""

    def __init__(self, engine: SimEngine, route: Callable[[list[Any]], None], reject: Callable[[Any], None]) -> None:
        """`route` takes the events of each entry; `reject` the executor's refusal of a command
        (an order event, as the executor publishes it)."""
        self.engine = engine
        self.route = route
        self.reject = reject
        self.est: EngineState = engine.initial_state()
        self.seq = 0  # journal entries applied
        self.queue: deque[Any] = deque()  # commands, and `Later` events
        self.decided: list[Command] = []  # every command, in the order it reached the executor

    def apply(self, entry: Entry) -> None:
        self.seq += 1
        self.est, events = self.engine.step(self.est, Inbound(self.seq, "journal", entry))
        self.route(events)

    def settle(self) -> None:
        """Take the queue in order, as the executor and the bus do; what each item causes queues behind."""
        queue = self.queue
        while queue:
            item = queue.popleft()
            if type(item) is Later:
                item.deliver(item.event)
            else:
                self.decided.append(item)
                self.execute(item)

    def execute(self, cmd: Command) -> None:
        if isinstance(cmd, PlaceOrder):
            problem = check_place(cmd, self.engine.markets.get(cmd.symbol))
            if problem is not None:
                self.reject(order_event(cmd, "rejected", problem[0], problem[1], cmd.ts / 1000))
                return
            self.apply(Place(account=cmd.account, order=order_request(cmd, cmd.ts + cmd.ttl_ms)))
        elif isinstance(cmd, CancelOrder):
            self.apply(Cancel(account=cmd.account, symbol=cmd.symbol, client_order_id=cmd.client_order_id, order_id=cmd.order_id))
        else:
            self.apply(CancelAllEntry(account=cmd.account, symbol=cmd.symbol))


def start_equity(sim: SimConfig, account: str, asset: str, capital: Decimal | None) -> Decimal:
    """The money a run's return is measured against: `capital`, or the account's balance of the
    asset its market settles in."""
    equity = capital if capital is not None else sim.accounts[account].get(asset, Decimal(0))
    if equity <= 0:
        raise BacktestError(f"capital: the account {account!r} holds no {asset}; pass --capital")
    return equity
