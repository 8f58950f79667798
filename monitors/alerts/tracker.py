"""Which inputs may be acked (pure). An input is done when every channel confirmed its alert, or
it raised none (filtered, deduplicated, dead-lettered). Inputs finish out of order (one
channel is slow, another input raised nothing), but the consumer acks with ack-all, so it acks
only the last input of the done prefix, in delivery order.

A handle is what acks an input (its delivery); a handle belongs to one consumer session. When
a session is rebuilt (the durable consumer is recreated at the last acked sequence + 1) every
handle goes stale: an ack-all carrying another consumer's delivery sequence would corrupt the
new one's. Inputs keep their place and their progress; the new session redelivers them, and
their new handles replace the stale ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class _Entry:
    handle: Any
    done: bool = False


class Tracker:
    def __init__(self) -> None:
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # delivery order = stream order

    def add(self, seq: int, handle: Any) -> bool:
        """Track a delivery; False when the input is tracked already (its handle is refreshed)."""
        entry = self._entries.get(seq)
        if entry is not None:
            entry.handle = handle
            return False
        self._entries[seq] = _Entry(handle)
        return True

    def done(self, seq: int) -> None:
        entry = self._entries.get(seq)
        if entry is not None:
            entry.done = True

    def ackable(self) -> tuple[int, Any] | None:
        """(seq, handle) to ack-all, forgetting what it covers; None when nothing can be acked."""
        last: tuple[int, Any] | None = None
        for seq, entry in self._entries.items():
            if not entry.done:
                break
            if entry.handle is not None:
                last = (seq, entry.handle)
        if last is None:
            return None
        while self._entries:
            seq = next(iter(self._entries))
            if seq > last[0]:
                break
            del self._entries[seq]
        return last

    def stale(self) -> None:
        """A new session: every handle is stale until redelivered."""
        for entry in self._entries.values():
            entry.handle = None

    def handles(self) -> Iterator[Any]:
        """Live handles of inputs not acked yet (for in-progress acks)."""
        return (e.handle for e in self._entries.values() if e.handle is not None)

    def waiting(self) -> int:
        return sum(1 for e in self._entries.values() if not e.done)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, seq: int) -> bool:
        return seq in self._entries
