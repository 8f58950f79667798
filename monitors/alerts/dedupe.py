"""One alert per event, and one per condition per window (pure: the clock is passed in).

Memory is bounded by what one window holds: entries older than the window are dropped as time
passes (and the oldest first, past `max_entries`, should a storm of distinct keys arrive).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import msgspec

from monitors.alerts.alerts import Alert

Verdict = Literal["new", "duplicate", "repeat"]


@dataclass
class _Condition:
    state: str
    at: int  # when its last alert was let through (ms)
    repeats: int = 0  # suppressed since


class Dedupe:
    def __init__(self, window_ms: int, max_entries: int = 100_000) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._keys: OrderedDict[str, int] = OrderedDict()  # key -> first seen (ms), oldest first
        self._conditions: OrderedDict[str, _Condition] = OrderedDict()  # by last alert, oldest first

    def judge(self, alert: Alert, now_ms: int) -> tuple[Verdict, Alert]:
        """ "new" (send it; with the count of repeats it follows), "duplicate" (this event was
        judged already) or "repeat" (its condition alerted, in this state, within the window)."""
        self._expire(now_ms)
        if alert.key in self._keys:
            return "duplicate", alert
        self._keys[alert.key] = now_ms
        cond = self._conditions.get(alert.condition)
        if cond is not None and cond.state == alert.state and now_ms - cond.at < self.window_ms:
            cond.repeats += 1
            return "repeat", alert
        repeats = cond.repeats if cond is not None and cond.state == alert.state else 0
        self._conditions[alert.condition] = _Condition(alert.state, now_ms)
        self._conditions.move_to_end(alert.condition)
        self._trim()
        return "new", msgspec.structs.replace(alert, repeats=repeats) if repeats else alert

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        keys = self._keys
        while keys:
            first = next(iter(keys))
            if keys[first] > horizon:
                break
            del keys[first]
        # A condition is kept one more window after its last alert, with its repeat count, so
        # the next alert of it can say how often it repeated unsent; then it is forgotten.
        conds = self._conditions
        while conds:
            first = next(iter(conds))
            if conds[first].at > horizon - self.window_ms:
                break
            del conds[first]

    def _trim(self) -> None:
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)
        while len(self._conditions) > self.max_entries:
            self._conditions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)
