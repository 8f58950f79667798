"""What one channel sends, and when (pure: the clock and the random source are passed in).

A channel has a queue of alerts waiting and a token bucket. It sends when it holds a token, is
not told to wait (a 429), and its oldest alert has waited `group_ms` (so a burst travels
together) or `digest_max` alerts wait. It then takes everything waiting, up to `digest_max`:
one alert is sent as itself, several as one digest. A send that fails is retried as it was
(the same alerts, the same text), each attempt through the bucket.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from monitors.alerts.alerts import Alert


class TokenBucket:
    """`burst` tokens, refilled at `per_minute`; full at start. Times in seconds."""

    def __init__(self, per_minute: float, burst: int, now: float) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._refill(now)
        # At least a microsecond: a wait that rounds to nothing on the clock would never end.
        return 0.0 if self.tokens >= 1.0 else max((1.0 - self.tokens) / self.rate, 1e-6)

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def drain(self, now: float) -> None:
        """The channel said "too many": whatever we thought we had, we have none."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between `first_s` and `max_s`."""

    first_s: float
    max_s: float

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number `attempt` (1 = the first retry)."""
        ceiling = min(self.max_s, self.first_s * 2 ** min(attempt - 1, 30))
        return self.first_s / 2 + rand() * (ceiling - self.first_s / 2)


class Outbox:
    def __init__(self, bucket: TokenBucket, group_s: float, digest_max: int) -> None:
        self.bucket = bucket
        self.group_s = group_s
        self.digest_max = digest_max
        self.waiting: deque[tuple[float, Alert]] = deque()  # (since, alert)
        self.hold_until = 0.0  # a 429 said: nothing before then

    def add(self, alert: Alert, now: float) -> None:
        self.waiting.append((now, alert))

    def due(self, now: float) -> float:
        """Seconds until a send may go (0: now); None-like `inf` when nothing waits."""
        if not self.waiting:
            return float("inf")
        wait = max(0.0, self.hold_until - now)
        if len(self.waiting) < self.digest_max:
            wait = max(wait, self.waiting[0][0] + self.group_s - now)
        return max(wait, self.bucket.wait(now))

    def take(self, now: float) -> list[Alert]:
        """The alerts of the next message, with its token; [] when it is not time yet."""
        if self.due(now) > 0 or not self.bucket.take(now):
            return []
        count = min(len(self.waiting), self.digest_max)
        return [self.waiting.popleft()[1] for _ in range(count)]

    def attempt(self, now: float) -> float:
        """Before a retry: seconds to wait for a token and any hold (0: take it and go)."""
        wait = max(self.hold_until - now, self.bucket.wait(now))
        if wait <= 0 and self.bucket.take(now):
            return 0.0
        return max(wait, 0.001)

    def rate_limited(self, now: float, retry_after: float) -> None:
        self.hold_until = max(self.hold_until, now + retry_after)
        self.bucket.drain(now)
