"""The grid's lattice: level prices on the market's tick, order sizes on its lot, client order ids.

Level k sits at anchor * (1 + spacing)^k (geometric) or anchor + k * spacing (arithmetic),
rounded to the tick. Everything here is a pure function of (config, market, anchor).
"""

from __future__ import annotations

import hashlib
import math
import re
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from schemas.market import Market
from schemas.ops import OrderRole
from strategies.grid.config import GridConfig

MAX_WALK = 64  # levels the exact search may move from the float estimate (it needs one or two)


class Lattice:
    def __init__(self, config: GridConfig, market: Market, anchor: Decimal) -> None:
        self.config = config
        self.market = market
        self.anchor = anchor
        self._prices: dict[int, Decimal] = {}
        self._ratio = 1 + config.spacing
        self._log_ratio = math.log(float(self._ratio)) if config.spacing_type == "geometric" else 0.0

    def price(self, k: int) -> Decimal:
        p = self._prices.get(k)
        if p is None:
            if self.config.spacing_type == "geometric":
                raw = self.anchor * self._ratio**k
            else:
                raw = self.anchor + self.config.spacing * k
            tick = self.market.tick_size
            p = (raw / tick).to_integral_value(rounding=ROUND_HALF_EVEN) * tick
            p = max(p, tick)
            self._prices[k] = p
        return p

    def level_at(self, price: Decimal) -> int:
        """The highest level whose price is at or below `price`.

        The float guess is off by at most a level or two (rounding to the tick), so the walk to
        the exact level is bounded by construction: a price the lattice cannot place (below its
        lowest level, which is one tick, or beyond float range) raises instead of looping."""
        if not price.is_finite() or price < self.market.tick_size:
            raise ValueError(f"price {price} is below the lattice's lowest level ({self.market.tick_size})")
        try:
            if self.config.spacing_type == "geometric":
                guess = math.floor(math.log(float(price) / float(self.anchor)) / self._log_ratio)
            else:
                guess = math.floor(float(price - self.anchor) / float(self.config.spacing))
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"price {price} cannot be placed on the lattice ({exc})") from None
        k = guess
        for _ in range(MAX_WALK):
            if self.price(k) > price:
                k -= 1
            elif self.price(k + 1) <= price:
                k += 1
            else:
                return k
        raise ValueError(f"price {price} is not within {MAX_WALK} levels of its estimate {guess} on the lattice")

    def in_bounds(self, k: int) -> bool:
        p = self.price(k)
        lower, upper = self.config.lower, self.config.upper
        return (lower is None or p >= lower) and (upper is None or p <= upper)

    def amount(self, k: int) -> Decimal:
        """Order size at level k in contracts (ccxt's unit: a contract is `contract_size` of the base,
        0.01 BTC on OKX, 0.0001 on Gate): the configured quote notional, down to the lot; 0 if
        below minimums."""
        price = self.price(k)
        lot = self.market.lot_size
        amount = (self.config.notional / (price * self.market.contract_size) / lot).to_integral_value(rounding=ROUND_DOWN) * lot
        if amount < self.market.min_amount or amount * price * self.market.contract_size < self.market.min_notional:
            return Decimal(0)
        return amount


def check_config(config: GridConfig, market: Market, price: Decimal) -> list[str]:
    """Why this grid cannot trade this market around `price` (empty when it can).

    Run at start, with the venue's market rules and current price; each message names the field.
    """
    problems = []
    anchor = config.anchor or price
    lattice = Lattice(config, market, anchor)
    if lattice.price(1) <= lattice.price(0) or lattice.price(0) <= lattice.price(-1):
        problems.append(
            f"spacing {config.spacing} ({config.spacing_type}) is below the tick size {market.tick_size} "
            f"at {anchor}: neighbouring levels would share a price"
        )
    if lattice.amount(0) == 0:
        problems.append(
            f"notional {config.notional} buys less than the market minimum at {anchor} "
            f"(min amount {market.min_amount}, lot {market.lot_size}, min notional {market.min_notional})"
        )
    for name in ("lower", "upper"):
        bound = getattr(config, name)
        if (
            bound is not None
            and config.anchor is None
            and not ((config.lower is None or price >= config.lower) and (config.upper is None or price <= config.upper))
        ):
            problems.append(f"{name}: the current price {price} (the anchor) is outside [{config.lower}, {config.upper}]")
            break
    if market.kind == "spot" and config.mode != "long":
        problems.append(f"mode {config.mode!r} needs a derivatives market to go short; {market.symbol} is spot")
    return problems


# Client order ids: <prefix><role><sign><index hex>G<generation hex>, letters and digits only,
# at most 32 characters (OKX's limit, the strictest we support). The prefix is the instance id
# without its punctuation plus a 4-character digest, so two instances never share one; the
# uppercase markers O/C and G cannot occur in the lowercase prefix, so an id parses back.
_ALNUM = re.compile(r"[^a-z0-9]")
_ID = re.compile(r"^(?P<role>[OC])(?P<sign>[pn])(?P<index>[0-9a-f]+)G(?P<gen>[0-9a-f]+)$")


def client_prefix(instance: str) -> str:
    digest = int.from_bytes(hashlib.blake2b(instance.encode(), digest_size=8).digest(), "big")
    tag = ""
    for _ in range(4):
        digest, r = divmod(digest, 36)
        tag += "0123456789abcdefghijklmnopqrstuvwxyz"[r]
    return _ALNUM.sub("", instance.lower())[:12] + tag


def client_order_id(prefix: str, role: OrderRole, index: int, generation: int) -> str:
    cid = f"{prefix}{'O' if role == 'open' else 'C'}{'n' if index < 0 else 'p'}{abs(index):x}G{generation:x}"
    if len(cid) > 32:
        raise ValueError(f"client order id {cid} is longer than 32 characters")
    return cid


def parse_client_order_id(prefix: str, cid: str) -> tuple[OrderRole, int, int] | None:
    """(role, slot index, generation) of one of this instance's ids, or None if it is not ours."""
    if not cid.startswith(prefix):
        return None
    m = _ID.match(cid[len(prefix) :])
    if m is None:
        return None
    index = int(m.group("index"), 16) * (-1 if m.group("sign") == "n" else 1)
    return ("open" if m.group("role") == "O" else "close"), index, int(m.group("gen"), 16)
