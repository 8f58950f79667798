"""Our client order ids as each venue holds them, and back.

Our ids are 1-32 ASCII letters and digits (`schemas.commands.CLIENT_ORDER_ID`). Every venue must
give an id back exactly as we sent it, or the executor cannot settle a retried create by fetching
it and the grid cannot recognise its own orders. An id a venue cannot hold is refused here, never
truncated: two grid ids differing only past the cut would collide at the venue.

What `to_venue` returns is what we pass to ccxt as `clientOrderId` (for create, fetch and cancel
alike); what ccxt parses as an order's `clientOrderId` goes through `from_venue`. Each rule names
the venue's own request field and where its limits come from; tests/test_ccxt_ids.py checks the
output against the venues' documented patterns and runs ccxt's real request builders offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The same alphabet as schemas.commands.CLIENT_ORDER_ID, matched with fullmatch: that pattern's
# `$` also accepts a trailing newline under re.match, which no venue field does.
_OURS = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass(frozen=True)
class ClientIdRule:
    """How one ccxt exchange carries our client order id."""

    exchange_id: str
    field: str  # the venue's own request field that ccxt fills from `clientOrderId`
    max_length: int  # the longest of our ids this venue can hold (our own limit is 32)
    prefix: str = ""  # what the venue demands in front of a user-defined id

    def to_venue(self, cid: str) -> str:
        """The `clientOrderId` to give ccxt for our id `cid`; ValueError if the venue cannot hold it."""
        if not _OURS.fullmatch(cid):
            raise ValueError(f"{cid!r} is not one of our client order ids (1-32 ASCII letters and digits)")
        if len(cid) > self.max_length:
            raise ValueError(
                f"{self.exchange_id} holds client order ids of at most {self.max_length} characters "
                f"in `{self.field}`; {cid!r} has {len(cid)} (ids are never truncated: two would collide)"
            )
        return self.prefix + cid

    def from_venue(self, text: str | None) -> str | None:
        """Our id from ccxt's parsed `clientOrderId`, or None when we could not have made it.

        None covers orders placed by hand or by another program (Gate's `web`, `apiv4`, `101`;
        ccxt's broker ids such as Binance's `x-...`; Bybit's empty `orderLinkId`). An id of the
        right shape is returned as is: whether it is one of *this* strategy's ids is for the
        caller to decide (the grid checks its prefix).
        """
        if not text or not text.startswith(self.prefix):
            return None
        cid = text[len(self.prefix) :]
        if len(cid) > self.max_length or not _OURS.fullmatch(cid):
            return None
        return cid


_RULES = (
    # Binance USD-M futures `newClientOrderId`: ^[\.A-Z\:/a-z0-9_-]{1,36}$ (-4015 "Client order
    # id length should not be more than 36 chars"). ccxt generates an `x-cvBPrNm9...` broker id
    # only when none is given, so ours passes untouched.
    ClientIdRule("binanceusdm", "newClientOrderId", 32),
    # Binance spot (/api/v3/order) and spot margin (/sapi/v1/margin/order): the same field and
    # limit; ccxt's broker id there is `x-TKT5PX2F...`/`x-R4BD3S82...` when none is given.
    ClientIdRule("binance", "newClientOrderId", 32),
    # Bitget `clientOid`: at most 50 (error 40304 "clientOid or clientOrderId length cannot
    # greater than 50"; ccxt's 40305 comment says the same). ccxt's broker code travels in the
    # X-CHANNEL-API-CODE header, not in the id.
    ClientIdRule("bitget", "clientOid", 32),
    # OKX `clOrdId`: 1-32 letters and digits, our own alphabet and limit. ccxt invents
    # `<brokerId><uuid16>` (and a `tag`) only when no id is given.
    ClientIdRule("okx", "clOrdId", 32),
    # Bybit `orderLinkId`: at most 36 letters, digits, `-` and `_` (v5 create-order docs).
    ClientIdRule("bybit", "orderLinkId", 32),
    # Gate `text`: `t-` then at most 28 of [0-9A-Za-z_.-] (spot and futures docs). ccxt 4.5.90's
    # gate.create_order measures the string it is given, prefix included, and refuses more than
    # 28 (BadRequest), so through ccxt the id after `t-` holds 26. We add `t-` ourselves: ccxt
    # adds it only when the text does not start with `t`, so an id like `testgridOp1G0` would
    # reach Gate without its prefix. Gate's parsed `text` keeps the `t-`.
    ClientIdRule("gate", "text", 26, prefix="t-"),
)
RULES = {r.exchange_id: r for r in _RULES}


def rule(exchange_id: str) -> ClientIdRule:
    """The client id rule of a ccxt exchange id; ValueError for one we do not support."""
    try:
        return RULES[exchange_id]
    except KeyError:
        raise ValueError(f"no client order id rule for ccxt exchange {exchange_id!r}; supported: {', '.join(sorted(RULES))}") from None
