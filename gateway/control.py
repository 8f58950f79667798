"""An operator's control from the page: published on ops.control.* with who sent it, then
answered with what the strategies reported; and an operator's change to the instance registry,
through the same operations as `sqt grid` (orchestration/operations.py).

`pause` and `resume` map to the grid's own actions; `cancel_all` halts the grids of the market
(a halted grid takes every order off, closing orders too, and places nothing until reset), so
nothing puts the orders back behind the operator's back; `resume` of a halted grid resets it.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as Nats

from bus.auth import may_publish
from bus.settings import BusSettings
from bus.streams import REGISTRY
from gateway.auth import Identity
from gateway.frames import ControlResult, GridStateData, Market, RegistryResult
from gateway.inbound import Control, RegistryOp
from gateway.view import View
from orchestration.operations import Refused, add_grid, grid_from, request_removal, set_desired
from orchestration.registry import Registry
from schemas import ids, subjects
from schemas.codec import encode
from schemas.ops import ControlAction, ControlCommand
from schemas.subjects import subject_of

REPORTS = {"pause": ("paused",), "cancel_all": ("halted",), "resume": ("running", "reduce_only")}


def grid_action(requested: str, grid: GridStateData) -> ControlAction:
    if requested == "cancel_all":
        return "halt"
    if requested == "resume" and grid.status == "halted":
        return "reset"
    return "pause" if requested == "pause" else "resume"


async def apply_control(nc: Nats, view: View, who: Identity, ctl: Control, wait: float) -> ControlResult:
    market = Market(ctl.venue, ctl.symbol)
    held = view.markets.get(market)
    grids = [g for g in (held.grids.values() if held else ()) if g.component == "grid" and ctl.instance in (None, g.instance)]
    if not grids:
        which = f"grid {ctl.instance}" if ctl.instance else "grid"
        return ControlResult(
            action=ctl.action, venue=ctl.venue, symbol=ctl.symbol, ok=False, message=f"no {which} on {ctl.venue} {ctl.symbol}"
        )
    now = int(time.time() * 1000)
    stored = []
    for g in grids:
        action = grid_action(ctl.action, g)
        cmd = ControlCommand(
            id=ids.content_id("control", (g.instance, action, who.name, now)),
            target_component="grid",
            target_instance=g.instance,
            action=action,
            reason=f"{ctl.action} from the live page",
            operator=who.name,
            ts=now,
        )
        ack = await nc.jetstream().publish(subject_of(cmd), encode(cmd), headers={"Nats-Msg-Id": cmd.id})
        stored.append(ack.seq)
    names = [g.instance for g in grids]
    deadline = time.monotonic() + wait
    while True:
        statuses = {n: s.status for n in names if (s := view.markets[market].grids.get(f"grid/{n}")) is not None}
        done = all(statuses.get(n) in REPORTS[ctl.action] for n in names)
        if done or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    message = "done" if done else f"stored, but not every grid reported {' or '.join(REPORTS[ctl.action])} within {wait:g}s"
    return ControlResult(action=ctl.action, venue=ctl.venue, symbol=ctl.symbol, ok=done, message=message, stored=stored, statuses=statuses)


async def apply_registry(nc: Nats, settings: BusSettings, who: Identity, op: RegistryOp) -> RegistryResult:
    """Add, pause, resume or remove a grid, written by `who`; what happened, or why not."""
    if not may_publish(getattr(nc, "logged_in_as", None), subjects.kv(REGISTRY.name, f"instance.grid.{op.instance}")):
        # Under least privilege the gateway writes no bucket (docs/adr/0026): refused at once,
        # rather than after the server's silent refusal times the write out.
        return RegistryResult(
            op=op.op, instance=op.instance, ok=False, message="the gateway's NATS user may not write the registry: use `sqt grid`"
        )
    registry = Registry(nc)
    try:
        match op.op:
            case "add":
                grid = grid_from({**op.params, "instance": op.instance, "venue": op.venue, "account": op.account, "symbol": op.symbol})
                await add_grid(nc, settings, registry, grid, [], who.name)
                message = f"added grid {grid.instance} on {grid.venue}/{grid.account} {grid.symbol}"
            case "pause" | "resume":
                message = await set_desired(registry, op.instance, "paused" if op.op == "pause" else "running", who.name)
            case _:
                assert op.policy is not None  # the frame's own check
                message = await request_removal(registry, op.instance, op.policy, who.name)
    except Refused as exc:
        return RegistryResult(op=op.op, instance=op.instance, ok=False, message=str(exc))
    finally:
        await registry.close()
    return RegistryResult(op=op.op, instance=op.instance, ok=True, message=message)
