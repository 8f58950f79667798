"""Deterministic message ids: the same fact always gets the same id.

An id is sent as `Nats-Msg-Id`; JetStream keeps one copy of each within the stream's
duplicate window. So an id must name the fact (this order reached this state), not the
act of publishing it: a retry, a replay, or a second publisher of the same fact (the
executor and the venue's private stream both report an accepted order) collapse to one.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import msgspec


def ticker_id(venue: str, symbol: str, ts: int) -> str:
    return f"ticker:{venue}:{symbol}:{ts}"


def candle_id(venue: str, symbol: str, interval: str, open_time: int, ts: int, closed: bool) -> str:
    return f"candle:{venue}:{symbol}:{interval}:{open_time}:{ts}{':c' if closed else ''}"


def trade_id(venue: str, symbol: str, trade: str) -> str:
    return f"trade:{venue}:{symbol}:{trade}"


def funding_id(venue: str, symbol: str, ts: int) -> str:
    return f"funding:{venue}:{symbol}:{ts}"


def gap_id(venue: str, symbol: str, stream: str, since: int, until: int) -> str:
    return f"gap:{venue}:{symbol}:{stream}:{since}:{until}"


def order_event_id(venue: str, account: str, client_order_id: str, status: str, filled: Decimal) -> str:
    # `filled` is normalized so that 1.0 and 1.00 are the same fact.
    return f"order:{venue}:{account}:{client_order_id}:{status}:{filled.normalize():f}"


def fill_id(venue: str, account: str, trade: str) -> str:
    return f"fill:{venue}:{account}:{trade}"


def content_id(prefix: str, fields: object) -> str:
    """For facts without a natural key (a position, a balance): a digest of what they say."""
    digest = hashlib.blake2b(msgspec.json.encode(fields), digest_size=10).hexdigest()
    return f"{prefix}:{digest}"


def place_id(venue: str, account: str, client_order_id: str) -> str:
    return f"place:{venue}:{account}:{client_order_id}"


def cancel_id(venue: str, account: str, key: str) -> str:
    return f"cancel:{venue}:{account}:{key}"


def cancel_all_id(venue: str, account: str, symbol: str, origin: str, ts: int) -> str:
    return f"cancel_all:{venue}:{account}:{symbol}:{origin}:{ts}"


def state_id(component: str, instance: str, input_seq: int) -> str:
    return f"state:{component}:{instance}:{input_seq}"


def interest_id(venue: str, account: str, asset: str, ts: int) -> str:
    return f"interest:{venue}:{account}:{asset}:{ts}"


def liquidation_id(venue: str, account: str, symbol: str, ts: int) -> str:
    return f"liquidation:{venue}:{account}:{symbol}:{ts}"


def funding_set_id(venue: str, symbol: str, journal_seq: int) -> str:
    """A funding rate scripted by a test hook: the journal entry that set it is the fact (two
    rates pinned within one tick of the exchange's clock are two facts)."""
    return f"funding:{venue}:{symbol}:set:{journal_seq}"


def funding_payment_id(venue: str, account: str, symbol: str, funding_time: int) -> str:
    return f"funding_payment:{venue}:{account}:{symbol}:{funding_time}"
