"""Hostile journal entries: anyone can publish on `venue.<venue>.journal.*`.

Each entry goes through what the exchange's consumer runtime does with a journal message
(`bus.contract.apply_input`: decode with validation, the subject's authority, the engine's
step, addressing every output). It must be refused at decode, or be applied as a no-op: no
events and the very same state digest (the engine mutates in place, so an entry that raised
half-way would show here). Either way, the engine then trades the next valid tick exactly like
an engine that never saw it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bus.contract import Rules, apply_input
from schemas import subjects
from tests.test_sim_helpers import SPOT, SWAP, T0, D, Sim, bars, seeded
from venues.sim.engine import state_digest
from venues.sim.journal import Entry, Print, Quote, Tick, journal_subject

RULES = Rules(
    input_type=Entry,
    outputs=(subjects.everything("md", "sim"), subjects.everything("acct", "sim")),
    route=lambda entry: journal_subject("sim", entry),
)
LATER = T0 + 10_000  # after the setup's clock


def tick(*prints: list[Any], step: int = 50, ts: int = LATER) -> dict[str, Any]:
    return {"type": "tick", "step": step, "ts": ts, "prints": list(prints)}


def order(**fields: Any) -> dict[str, Any]:
    body = {"symbol": SWAP, "client_order_id": "evil", "side": "buy", "order_type": "limit", "amount": "1", "price": "99"}
    return {"type": "place", "account": "main", "order": body | fields}


def fund(**fields: Any) -> dict[str, Any]:
    return {"type": "fund", "account": "main", "asset": "USDT", "amount": "1"} | fields


def history(**fields: Any) -> dict[str, Any]:
    bar = [[b.open_time, str(b.open), str(b.high), str(b.low), str(b.close), str(b.volume)] for b in bars(T0 - 120_000, ["100", "101"])]
    return {"type": "history", "symbol": SPOT, "bars": bar, "ts": T0} | fields  # SPOT has no history yet


HOSTILE: dict[str, dict[str, Any] | bytes] = {
    # prints
    "nan-price": tick([SWAP, "NaN", "1"]),
    "signalling-nan-price": tick([SWAP, "sNaN", "1"]),
    "infinite-price": tick([SWAP, "Infinity", "1"]),
    "negative-price": tick([SWAP, "-100", "1"]),
    "zero-price": tick([SWAP, "0", "1"]),
    "huge-price": tick([SWAP, "1e400", "1"]),
    "huge-price-as-a-number": b'{"type":"tick","step":50,"ts":1700000000000,"prints":[["BTC/USDT:USDT",1e400,"1"]]}',
    "nan-volume": tick([SWAP, "100", "NaN"]),
    "negative-volume": tick([SWAP, "100", "-1"]),
    "huge-volume": tick([SWAP, "100", "1e400"]),
    "empty-prints": tick(),
    "two-prints-of-one-symbol": tick([SWAP, "100", "1"], [SWAP, "101", "1"]),
    "malformed-symbol": tick(["BTC", "100", "1"]),
    "unknown-symbol": tick(["DOGE/USDT", "100", "1"]),
    "zero-step": tick([SWAP, "100", "1"], step=0),
    "negative-time": tick([SWAP, "100", "1"], ts=-5),
    "time-beyond-any-clock": tick([SWAP, "100", "1"], ts=10**17),
    "stale-time": tick([SWAP, "50", "100"], ts=T0 - 1),
    "negative-quote-step": {"type": "quote", "step": -1},
    "quote-with-nothing-pending": {"type": "quote", "step": 1},
    # orders
    "nan-order-price": order(price="NaN"),
    "infinite-order-price": order(price="-Infinity"),
    "negative-order-price": order(price="-99"),
    "huge-order-price": order(price="1e400"),
    "nan-amount": order(amount="NaN"),
    "negative-amount": order(amount="-1"),
    "huge-amount": order(amount="1e400"),
    "empty-client-id": order(client_order_id=""),
    "endless-client-id": order(client_order_id="x" * 500),
    "negative-deadline": order(deadline_ms=-1),
    "order-for-a-malformed-symbol": order(symbol="BTCUSDT"),
    "order-for-an-unknown-symbol": order(symbol="ETH/USDT:USDT"),
    "order-for-an-unknown-account": order() | {"account": "nobody"},
    "order-for-an-empty-account": order() | {"account": ""},
    "order-for-a-wildcard-account": order() | {"account": "*"},
    "order-for-an-account-no-subject-can-carry": order() | {"account": "Main Account"},
    "order-reusing-a-client-id": order(client_order_id="rest", price="98"),
    "cancel-for-an-unknown-account": {"type": "cancel", "account": "nobody", "symbol": SWAP, "client_order_id": "rest"},
    "cancel-of-an-unknown-order": {"type": "cancel", "account": "main", "symbol": SWAP, "client_order_id": "nope"},
    "cancel-for-a-malformed-symbol": {"type": "cancel", "account": "main", "symbol": "", "client_order_id": "rest"},
    "cancel-all-for-a-tail-wildcard-account": {"type": "cancel_all", "account": ">", "symbol": SWAP},
    "cancel-all-for-an-unknown-account": {"type": "cancel_all", "account": "nobody", "symbol": SWAP},
    # funds
    "nan-fund": fund(amount="NaN"),
    "infinite-fund": fund(amount="Infinity"),
    "huge-deposit": fund(amount="1e400"),
    "huge-withdrawal": fund(amount="-1e400"),
    "withdrawal-beyond-the-balance": fund(amount="-10000000"),
    "withdrawal-from-an-unknown-account": fund(account="nobody", amount="-1"),
    "empty-asset": fund(asset=""),
    "asset-with-a-space": fund(asset="US DT"),
    "fund-for-a-wildcard-account": fund(account="*"),
    # backfills
    "history-without-bars": history(bars=[]),
    "history-bar-low-above-high": history(bars=[[T0, "100", "99", "101", "100", "1"]]),
    "history-bar-nan": history(bars=[[T0, "NaN", "101", "99", "100", "1"]]),
    "history-bar-off-the-minute": history(bars=[[T0 + 1, "100", "101", "99", "100", "1"]]),
    "history-bars-out-of-order": history(bars=[[T0, "100", "101", "99", "100", "1"], [T0 - 60_000, "100", "101", "99", "100", "1"]]),
    "history-for-an-unknown-symbol": history(symbol="DOGE/USDT"),
    "history-for-a-market-already-backfilled": history(symbol=SWAP),
    # scripted funding (a test hook: without `test_hooks`, as here, even a valid one changes nothing)
    "set-funding-without-test-hooks": {"type": "set_funding", "symbol": SWAP, "rate": "0.001"},
    "set-funding-of-a-spot-market": {"type": "set_funding", "symbol": SPOT, "rate": "0.001"},
    "set-funding-nan-rate": {"type": "set_funding", "symbol": SWAP, "rate": "NaN"},
    "set-funding-huge-rate": {"type": "set_funding", "symbol": SWAP, "rate": "1e400"},
    "set-funding-predicted-without-a-rate": {"type": "set_funding", "symbol": SWAP, "predicted_rate": "0.001"},
    "set-funding-malformed-symbol": {"type": "set_funding", "symbol": "BTC", "rate": "0.001"},
    # not even an entry
    "not-json": b"{",
    "unknown-entry-type": {"type": "withdraw_everything", "account": "main"},
}


def prepared() -> Sim:
    """A venue with something to lose: a backfilled market, a resting order, a position, a loan."""
    sim = seeded()
    sim.apply(msgspec.json.decode(msgspec.json.encode(history(symbol=SWAP)), type=Entry))
    sim.place("rest", "buy", "1", "99")
    sim.place("long", "buy", "2")
    sim.place("short", "sell", "2", symbol=SPOT, use_margin=True)
    return sim


def valid_tick(sim: Sim) -> list[Any]:
    """A print through the resting buy at 99: it fills, the position is marked, funding may be due."""
    return sim.apply(Tick(step=100, ts=LATER + 500, prints=[Print(SWAP, D("98.5"), D("3"))])) + sim.apply(Quote(step=100))


def subject_of(data: bytes) -> str:
    """The subject an entry is journaled on (a payload that does not decode: any journal subject)."""
    try:
        return journal_subject("sim", msgspec.json.decode(data, type=Entry))
    except (msgspec.DecodeError, ValueError):
        return subjects.journal("sim", "tick")


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_journal_entry_is_refused_at_decode_or_changes_nothing(payload: dict[str, Any] | bytes) -> None:
    sim, control = prepared(), prepared()
    data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    before = state_digest(sim.state)

    state, outputs, reason = apply_input(sim.engine, sim.state, RULES, 1_000, subject_of(data), data)

    assert reason == "" or reason.startswith("undecodable input"), reason  # never a core that raised
    assert outputs == []
    assert state_digest(state) == before
    sim.state = state
    assert valid_tick(sim) == valid_tick(control)
    assert state_digest(sim.state) == state_digest(control.state)


def test_the_hostile_entries_include_refusals_at_decode_and_entries_the_engine_must_ignore() -> None:
    decoded = 0
    for payload in HOSTILE.values():
        try:
            msgspec.json.decode(payload if isinstance(payload, bytes) else msgspec.json.encode(payload), type=Entry)
            decoded += 1
        except msgspec.DecodeError:
            pass
    assert 10 <= decoded <= len(HOSTILE) - 40
    account = prepared().state.accounts["main"]
    assert account.borrowed["BTC"] > 0 and account.positions[SWAP].contracts == 2 and len(account.open) == 1
