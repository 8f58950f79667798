"""A slot's phase follows from what it holds and the status of its live order; an ended order
leaves only the inventory and what the next order needs; free slots are not remembered."""

from __future__ import annotations

from decimal import Decimal as D

from msgspec.structs import replace

from strategies.grid.state import GridSlot, freed, kept, phase_of, settle

LIVE = GridSlot(
    index=-1,
    phase="open",
    generation=7,
    client_order_id="g1h9ptOn1G7",
    order_id="x7",
    role="open",
    side="buy",
    price=D(90),
    amount=D(10),
    filled=D(4),
    cost=D(360),
    fee=D("0.1"),
    status="open",
    sent_seq=12,
    post_only_rejects=1,
    rejects=2,
    retry_at=500,
)


def test_the_phase_is_filled_while_holding_else_the_status_else_free() -> None:
    assert [phase_of(D(1), "open"), phase_of(D(-1), None), phase_of(D(0), "pending"), phase_of(D(0), None)] == [
        "filled",
        "filled",
        "pending",
        "free",
    ]


def test_settling_recomputes_the_phase_from_the_changes() -> None:
    assert settle(LIVE, status="canceling") == replace(LIVE, status="canceling", phase="canceling")
    assert settle(LIVE, holding=D(4)) == replace(LIVE, holding=D(4), phase="filled")
    assert settle(LIVE, sent_seq=13) == replace(LIVE, sent_seq=13)


def test_an_ended_order_leaves_the_inventory_and_the_slots_history_but_nothing_of_the_order() -> None:
    assert freed(LIVE, holding=D(4), entry_price=D(90)) == GridSlot(
        index=-1,
        phase="filled",
        generation=7,
        sent_seq=12,
        holding=D(4),
        entry_price=D(90),
        post_only_rejects=1,
        rejects=2,
        retry_at=500,
    )
    assert freed(LIVE, post_only_rejects=0, rejects=0, retry_at=0) == GridSlot(index=-1, generation=7, sent_seq=12)


def test_free_slots_are_forgotten_unless_they_remember_refusals() -> None:
    free = GridSlot(index=0)
    waiting = GridSlot(index=1, rejects=1, retry_at=9)
    post_only = GridSlot(index=2, post_only_rejects=1)
    assert kept({3: LIVE, 0: free, 2: post_only, 1: waiting}) == [waiting, post_only, LIVE]
