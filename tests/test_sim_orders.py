"""Order bookkeeping a client relies on: create deadlines, and client ids answered with their real order."""

from __future__ import annotations

import msgspec

from schemas.account import OrderUpdate
from tests.test_sim_helpers import SWAP, T0, Sim, make_config, of, one, seeded
from venues.sim.engine import EngineState
from venues.sim.journal import Cancel


def test_an_order_that_reaches_the_venue_after_its_deadline_is_rejected_as_expired_and_its_id_stays_taken() -> None:
    sim = seeded()  # the venue's clock is T0
    update = one(sim.place("late", "buy", "1", "99", deadline_ms=T0 - 1), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "expired")
    assert str(T0 - 1) in (update.message or "") and "deadline" in (update.message or "")
    assert sim.engine.open_orders(sim.state, "main", None) == []
    assert sim.place("late", "buy", "1", "99") == []  # the id is taken: a retry learns the outcome
    assert sim.order("late") == update


def test_an_order_at_or_before_its_deadline_is_accepted() -> None:
    sim = seeded()
    assert one(sim.place("on-time", "buy", "1", "99", deadline_ms=T0), OrderUpdate).status == "open"
    assert one(sim.place("early", "buy", "1", "99", deadline_ms=T0 + 5_000), OrderUpdate).status == "open"


def test_the_deadline_is_checked_against_the_clock_the_journal_moved_to() -> None:
    sim = seeded()
    sim.tick("100", ts=T0 + 1_000)
    assert one(sim.place("a", "buy", "1", "99", deadline_ms=T0 + 999), OrderUpdate).reason == "expired"
    assert one(sim.place("b", "buy", "1", "99", deadline_ms=T0 + 1_000), OrderUpdate).status == "open"


def closed_churn(sim: Sim, prefix: str, count: int) -> None:
    for i in range(count):
        sim.place(f"{prefix}{i}", "buy", "0.1", "90")
        sim.apply(Cancel(account="main", symbol=SWAP, client_order_id=f"{prefix}{i}"))


def test_a_remembered_client_id_always_answers_with_its_real_order() -> None:
    sim = seeded(make_config(orders_kept=3))
    closed_churn(sim, "c", 5)
    account = sim.state.accounts["main"]
    assert sorted(account.by_cid) == ["c2", "c3", "c4"]
    assert list(account.closed) == [account.by_cid[c] for c in ("c2", "c3", "c4")]
    for cid in account.by_cid:
        view = sim.order(cid)
        assert view is not None and (view.client_order_id, view.status) == (cid, "canceled")
    assert sim.order("c0") is None  # forgotten together with its order, like on a venue


def test_open_orders_keep_their_client_ids_however_many_orders_close_after_them() -> None:
    sim = seeded(make_config(orders_kept=2))
    sim.place("resting", "buy", "0.1", "80")
    closed_churn(sim, "c", 10)
    assert sim.order("resting") is not None and sim.order("resting").status == "open"
    assert sim.place("resting", "buy", "0.1", "81") == []  # still a duplicate
    account = sim.state.accounts["main"]
    assert len(account.closed) == 2 and len(account.by_cid) == 3


def test_remembered_orders_bound_the_checkpoint() -> None:
    sim = seeded(make_config(orders_kept=20))
    closed_churn(sim, "a", 20)
    size = len(msgspec.json.encode(sim.state))
    closed_churn(sim, "b", 200)
    grown = len(msgspec.json.encode(sim.state)) - size
    assert grown < size // 10  # ids a digit longer; 200 orders kept would add 30 KB
    restored = msgspec.json.decode(msgspec.json.encode(sim.state), type=EngineState)
    assert sim.engine.order_view(restored, "main", "b199", None) == sim.order("b199")


def test_a_rejected_order_is_remembered_like_any_other() -> None:
    sim = seeded(make_config(orders_kept=1))
    rejected = one(sim.place("bad", "buy", "1", "99.95"), OrderUpdate)
    assert sim.order("bad") == rejected
    closed_churn(sim, "c", 1)
    assert sim.order("bad") is None and sim.place("bad", "buy", "1", "99") != []
    assert of(sim.place("bad2", "buy", "1", "99"), OrderUpdate)[0].status == "open"
