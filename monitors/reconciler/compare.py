"""The comparison itself, pure: our record and the venue's answers in, differences out.

No clock, no I/O: the caller passes both clocks (ours, to judge our record's activity; the
venue's, to judge the venue's own update times). A difference that involves recent activity on
either side is `deferred` (checked again at the next pass), never reported: an event in flight
looks exactly like a lost one for a moment. What remains are `Difference`s, each still to be
confirmed by a direct fetch before anything is reported or done.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from monitors.reconciler.record import ENDED, OrderRec, PositionRec, Record, signed
from schemas.account import ZERO, OrderUpdate, Position
from schemas.ops import FindingKind


@dataclass(frozen=True)
class Settings:
    grace_ms: int
    position_tolerance: Decimal
    unknown_after_ms: int


@dataclass(frozen=True)
class Difference:
    kind: FindingKind  # ghost_order | missing_order | missing_fill | unresolved_unknown | position_drift
    key: str  # client order id, or the symbol for a position
    symbol: str
    detail: str
    venue_order: OrderUpdate | None = None
    ours: OrderRec | None = None
    venue_position: Decimal | None = None  # signed contracts
    our_position: Decimal | None = None


@dataclass(frozen=True)
class Deferred:
    kind: FindingKind
    key: str
    why: str


@dataclass(frozen=True)
class Comparison:
    differences: list[Difference]
    deferred: list[Deferred]

    @property
    def in_sync(self) -> bool:
        return not self.differences and not self.deferred


def compare(
    record: Record,
    open_orders: list[OrderUpdate],
    positions: list[Position],
    now_ms: int,
    venue_now_ms: int,
    settings: Settings,
) -> Comparison:
    diffs: list[Difference] = []
    deferred: list[Deferred] = []
    grace = settings.grace_ms

    def ours_recent(rec: OrderRec | None) -> bool:
        return rec is not None and now_ms - rec.seen < grace

    def theirs_recent(order: OrderUpdate) -> bool:
        return venue_now_ms - order.ts < grace

    def judge(diff: Difference, recent: str) -> None:
        if recent:
            deferred.append(Deferred(diff.kind, diff.key, recent))
        else:
            diffs.append(diff)

    at_venue: set[str] = set()
    for v in open_orders:
        cid = v.client_order_id
        at_venue.add(cid)
        rec = record.orders.get(cid)
        recent = "active here" if ours_recent(rec) else "updated at the venue" if theirs_recent(v) else ""
        if rec is None:
            judge(Difference("ghost_order", cid, v.symbol, "open at the venue, unknown to our record", venue_order=v), recent)
        elif rec.status in ENDED:
            judge(Difference("ghost_order", cid, v.symbol, f"open at the venue, {rec.status} in our record", v, rec), recent)
        elif rec.status == "unknown":
            # The venue has it: its outcome is known now (the pass settles it, whatever its age).
            judge(Difference("unresolved_unknown", cid, v.symbol, "unknown in our record, open at the venue", v, rec), recent)
        elif v.filled > rec.booked:
            judge(Difference("missing_fill", cid, v.symbol, f"filled {v.filled} at the venue, {rec.booked} in our record", v, rec), recent)

    for cid, rec in record.orders.items():
        if cid in at_venue or rec.status in ENDED:
            continue
        if rec.status == "unknown":
            if now_ms - rec.seen < max(grace, settings.unknown_after_ms):
                deferred.append(Deferred("unresolved_unknown", cid, "not yet due"))
            else:
                diffs.append(Difference("unresolved_unknown", cid, rec.symbol, "unknown in our record, not open at the venue", ours=rec))
        elif ours_recent(rec):
            deferred.append(Deferred("missing_order", cid, "active here"))
        else:
            diffs.append(Difference("missing_order", cid, rec.symbol, f"{rec.status} in our record, not open at the venue", ours=rec))

    theirs = {p.symbol: signed(p) for p in positions}
    for symbol in sorted(set(theirs) | set(record.positions)):
        mine = _ours(record.positions.get(symbol))
        venue = theirs.get(symbol, ZERO)
        if not drifted(mine, venue, settings.position_tolerance):
            continue
        diff = Difference(
            "position_drift",
            symbol,
            symbol,
            f"{venue} contracts at the venue, {mine} in our record",
            venue_position=venue,
            our_position=mine,
        )
        judge(diff, "active here" if now_ms - record.market_seen.get(symbol, 0) < grace else "")
    return Comparison(diffs, deferred)


def _ours(rec: PositionRec | None) -> Decimal:
    return ZERO if rec is None else rec.contracts


def drifted(ours: Decimal, venue: Decimal, tolerance: Decimal) -> bool:
    return abs(ours - venue) > tolerance
