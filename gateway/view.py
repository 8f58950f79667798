"""What the gateway knows, folded from the streams: the first screen of every market.

Pure (no I/O): `apply` takes one stored event and returns the frame it becomes; `first_screen`
gives what a browser gets when it subscribes to a market; `since` the frames a reconnecting
browser missed. A starting gateway builds it by reading the streams back (gateway/feed.py), so
it holds nothing a restart would lose.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway import frames
from gateway.frames import Frame, Kline, Market, Routed

STREAMS = ("MARKET", "ACCOUNT", "OPS")
HISTORY = 100  # candles a browser gets first


@dataclass
class Recent:
    """A market's recent frames (stream, seq, type, text) and, per stream, the newest one let go."""

    frames: deque[tuple[str, int, str, str]]
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, stream: str, seq: int, kind: str, text: str) -> None:
        if len(self.frames) == self.frames.maxlen:
            old_stream, old_seq, _, _ = self.frames[0]
            self.dropped[old_stream] = old_seq
        self.frames.append((stream, seq, kind, text))


@dataclass
class MarketView:
    candles: deque[Kline]
    orders: dict[str, frames.Order] = field(default_factory=dict)  # open orders by client id
    positions: dict[str, frames.PositionData] = field(default_factory=dict)  # by account
    grids: dict[str, frames.GridStateData] = field(default_factory=dict)  # by component/instance
    fills: deque[frames.TradeEvent] = field(default_factory=deque)


class View:
    def __init__(self, candles: int = 1440, resume_frames: int = 5000, fills: int = 500) -> None:
        self.markets: dict[Market, MarketView] = {}
        self.balances: dict[tuple[str, str, str], frames.AccountData] = {}  # (venue, account, asset)
        self.positions: dict[str, int] = dict.fromkeys(STREAMS, 0)  # stream -> last applied seq
        self.recent: dict[Market, Recent] = {}
        self._candles, self._resume, self._fills = candles, resume_frames, fills

    def market(self, m: Market) -> MarketView:
        view = self.markets.get(m)
        if view is None:
            view = self.markets[m] = MarketView(deque(maxlen=self._candles), fills=deque(maxlen=self._fills))
            self.recent[m] = Recent(deque(maxlen=self._resume))
        return view

    def apply(self, stream: str, seq: int, event: Any) -> Routed | None:
        """Fold one stored event in; the frame it becomes (None: browsers do not see it)."""
        if seq <= self.positions.get(stream, 0):
            return None  # already folded (a read that overlaps the one before it)
        self.positions[stream] = seq
        routed = frames.to_frame(stream, seq, event)
        if routed is None:
            return None
        if routed.frame.type == "grid_state" and routed.market is not None:
            routed = self._with_levels(routed, event)
        data = routed.frame.data
        if routed.market is not None:
            view = self.market(routed.market)
            match routed.frame.type:
                case "kline":
                    _put_candle(view.candles, data)
                case "orders":
                    o = data.orders[0]
                    if o.status == "open":
                        view.orders[o.client_order_id] = o
                    else:
                        view.orders.pop(o.client_order_id, None)
                case "trade_event":
                    view.fills.append(data)
                case "position":
                    view.positions[data.account] = data
                case "grid_state":
                    view.grids[f"{data.component}/{data.instance}"] = data
        elif routed.frame.type == "account":
            self.balances[(data.venue, data.account, data.asset)] = data
        return routed

    def _with_levels(self, routed: Routed, event: Any) -> Routed:
        """A compact state event (no state, no levels: docs/adr/0024-bounded-state-events.md)
        updates the numbers and keeps the levels of the instance's last full one, so the page
        never loses its grid lines between full ones."""
        data = routed.frame.data
        if event.state is not None or data.levels:
            return routed  # full: its levels are the grid's now (none before it has an anchor)
        assert routed.market is not None
        held = self.markets.get(routed.market)
        last = held.grids.get(f"{data.component}/{data.instance}") if held else None
        if last is None or not last.levels:
            return routed
        frame = msgspec.structs.replace(routed.frame, data=msgspec.structs.replace(data, levels=last.levels))
        return routed._replace(frame=frame)

    def remember(self, routed: Routed, text: str) -> None:
        """Keep a sent frame for `since` (every market it went to)."""
        frame = routed.frame
        if frame.stream is None or frame.seq is None:
            return
        for m in self.audience(routed):
            self.recent[m].add(frame.stream, frame.seq, frame.type, text)

    def audience(self, routed: Routed) -> Iterable[Market]:
        if routed.market is not None:
            return (routed.market,) if routed.market in self.markets else ()
        return [m for m in self.markets if routed.venue is None or m.venue == routed.venue]

    def default_market(self) -> Market | None:
        """What a new browser is shown first: a market a strategy trades, else one with orders."""
        ranked = sorted(self.markets.items(), key=lambda kv: (not kv[1].grids, not kv[1].orders, kv[0]))
        return ranked[0][0] if ranked else None

    def first_screen(self, m: Market) -> list[Frame]:
        """History, open orders, positions, balances and strategy states of a market."""
        view = self.markets.get(m)
        candles = list(view.candles)[-HISTORY:] if view else []
        out = [Frame(type="history", data=frames.History(venue=m.venue, symbol=m.symbol, interval="1m", candles=candles))]
        if view is None:
            return out
        out.append(Frame(type="orders", data=frames.Orders(snapshot=True, orders=sorted(view.orders.values(), key=_order_key))))
        out += [Frame(type="position", data=p) for _, p in sorted(view.positions.items())]
        out += [Frame(type="account", data=b) for k, b in sorted(self.balances.items()) if k[0] == m.venue]
        out += [Frame(type="grid_state", data=g) for _, g in sorted(view.grids.items())]
        return out

    def since(self, m: Market, after: dict[str, int]) -> list[tuple[str, str]] | None:
        """(type, text) of the market's frames stored after `after` (per stream), in the order
        they were sent; None when frames that recent are no longer kept (the browser starts over)."""
        recent = self.recent.get(m)
        if recent is None:
            return []  # nothing was ever sent for it
        if any(recent.dropped.get(s, 0) > after.get(s, 0) for s in STREAMS):
            return None
        return [(kind, text) for stream, seq, kind, text in recent.frames if seq > after.get(stream, 0)]


def _put_candle(candles: deque[Kline], k: Kline) -> None:
    """A bar updates in place while it forms; an older bar's late update is dropped."""
    if candles and candles[-1].open_time == k.open_time:
        candles[-1] = k
    elif not candles or candles[-1].open_time < k.open_time:
        candles.append(k)


def _order_key(o: frames.Order) -> tuple[str, str]:
    return (o.account, o.client_order_id)
