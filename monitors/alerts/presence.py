"""Who answers the micro-service ping, and who stopped (pure: times are passed in, in ms).

Only a service that answered once can fall silent: a service never seen is nobody's concern.
One that is silent longer than `silence_ms` is down (one alert); its next answer is its
recovery (one alert). An episode is named by the last answer before the silence, so the alert
ids are deterministic: publishing one again (a retry, a restart) stores it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec


class Remembered(msgspec.Struct, frozen=True, kw_only=True):
    """What survives a restart (a KV value): who went down, since which last answer."""

    down: dict[str, int] = {}  # service -> its last answer before the silence (ms)
    known: list[str] = []


@dataclass(frozen=True)
class Change:
    service: str
    down: bool
    episode: int  # the last answer before the silence (ms)
    silent_ms: int


@dataclass
class _Seen:
    last: int
    down: bool = False


class Presence:
    def __init__(self, silence_ms: int) -> None:
        self.silence_ms = silence_ms
        self._seen: dict[str, _Seen] = {}

    def restore(self, remembered: Remembered, now_ms: int) -> None:
        """After a restart: a known service gets a whole silence from now to answer; one that was
        down stays down (no second alert) and its answer is its recovery."""
        for service in remembered.known:
            self._seen.setdefault(service, _Seen(now_ms))
        for service, last in remembered.down.items():
            self._seen[service] = _Seen(last, down=True)

    def observe(self, answered: Iterable[str], now_ms: int) -> list[Change]:
        changes: list[Change] = []
        present = set(answered)
        for service in sorted(present):
            seen = self._seen.get(service)
            if seen is None:
                self._seen[service] = _Seen(now_ms)
                continue
            if seen.down:
                changes.append(Change(service, False, seen.last, now_ms - seen.last))
                seen.down = False
            seen.last = now_ms
        for service, seen in sorted(self._seen.items()):
            if service not in present and not seen.down and now_ms - seen.last > self.silence_ms:
                seen.down = True
                changes.append(Change(service, True, seen.last, now_ms - seen.last))
        return changes

    def remembered(self) -> Remembered:
        return Remembered(down={s: v.last for s, v in self._seen.items() if v.down}, known=sorted(self._seen))

    def states(self) -> Mapping[str, str]:
        return {s: "down" if v.down else "up" for s, v in sorted(self._seen.items())}
