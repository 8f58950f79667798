"""Paper trading, the pure part: a real venue's public trades judged and turned into prints.

In paper mode (`prices = "paper"`) the simulated exchange keeps its own name, markets, accounts
and matching engine, but its prices are the trades another venue published on the bus
(`md.<paper_venue>.<symbol>.trade`, as the ccxt publisher does). Each believable trade becomes
one `Tick` of the journal with one print (its price on our tick, its amount as the volume);
a market that follows one of them prints with it (venues/sim/basis.py);
anything else is refused with its reason, and the feed consumer dead-letters it
(venues/sim/paper_feed.py). docs/adr/0016-paper-trading.md says why it is built this way.

Nothing here reads a clock: the engine's time is the feed's event time, so a recording
replayed at any speed prints the same ticks and gives the same fills.
"""

from __future__ import annotations

from decimal import Decimal

from bus.contract import InputRejected
from schemas import ids, subjects
from schemas.market import GapMarker, Market, Trade
from schemas.sanity import PriceBand, check_price
from venues.sim.basis import Basis
from venues.sim.config import SimConfig
from venues.sim.journal import MAX_QUANTITY, Print, Tick
from venues.sim.state import EngineState, minute

PaperInput = Trade | GapMarker

# Trades of two markets may reach the bus slightly out of event-time order (one websocket
# each); the engine's clock never goes back, so a trade this little behind it prints at the
# clock's time. Older than that, it is history (a backfill, a replay of old data): printing it
# now would move the market to a stale price, so it is refused.
LATE_MS = 2_000
MAX_REASON = 200  # of a forwarded gap marker's reason: a feed's words, bounded


def feed_subjects(config: SimConfig) -> tuple[str, ...]:
    """What a paper venue reads from MARKET: trades and gap markers of its own markets only.

    A real feed publishes markets the paper venue does not list; those are not its input (not
    read, so they never reach its dead-letter queue)."""
    assert config.paper_venue is not None
    out: list[str] = []
    for m in config.markets:
        if m.follows is None:  # a follower prints its leader's trades (venues/sim/basis.py), not its own
            out += [subjects.md(config.paper_venue, m.symbol, "trade"), subjects.md(config.paper_venue, m.symbol, "gap")]
    return tuple(out)


def on_tick(price: Decimal, market: Market) -> Decimal:
    """The nearest price on our tick (a feed quoting finer than the configured market)."""
    return max(market.tick_size, (price / market.tick_size).to_integral_value() * market.tick_size)


class PaperPrints:
    """The judge of the feed: what the engine holds once it applied every print so far (each
    market's last price and its time, the clock), and what the next feed event becomes."""

    def __init__(self, config: SimConfig, band: PriceBand | None = None) -> None:
        assert config.paper_venue is not None
        self.venue = config.venue
        self.source = config.paper_venue
        self.markets = config.market_map()
        self.band = band or PriceBand()
        self.basis = Basis(config)  # markets that follow one the feed prints
        self.leaders = {m.symbol: m.follows for m in config.markets if m.follows is not None}
        self.clock = 0
        self.last: dict[str, tuple[Decimal, int]] = {}
        self.volume: dict[str, tuple[int, Decimal]] = {}  # each market's forming minute bar: (open time, volume)

    def reset(self, state: EngineState) -> None:
        """Start from what the engine applied (a backfill is not a print: no band from it)."""
        self.clock = state.ts
        self.last = {s: (ms.last, ms.last_ts) for s, ms in state.markets.items() if ms.last_ts}
        self.volume = {s: (ms.bar.open_time, ms.bar.volume) for s, ms in state.markets.items() if ms.bar is not None}

    def judge(self, seq: int, event: PaperInput) -> Tick | GapMarker:
        """The tick a trade at MARKET sequence `seq` prints, or the paper venue's own gap marker for
        a gap of the feed. Raises InputRejected (state unchanged) for anything else."""
        if event.venue != self.source or event.symbol not in self.markets:
            raise InputRejected(f"not {self.source}'s data of a market of {self.venue}: {event.venue} {event.symbol}")
        leader = self.leaders.get(event.symbol)
        if leader is not None:
            raise InputRejected(f"{event.symbol} follows {leader} on {self.venue}: it prints with {leader}'s trades, not its own")
        if isinstance(event, GapMarker):
            return self._gap(event)
        return self._trade(seq, event)

    def _trade(self, seq: int, ev: Trade) -> Tick:
        market = self.markets[ev.symbol]
        if ev.ts < self.clock - LATE_MS:
            raise InputRejected(f"dated {self.clock - ev.ts} ms before the paper venue's clock {self.clock} (at most {LATE_MS} ms late)")
        ts = max(ev.ts, self.clock)
        last, last_ts = self.last.get(ev.symbol, (None, 0))
        problem = check_price("price", ev.price, market, last, last_ts, ts, self.band)
        if problem:
            raise InputRejected(problem)
        price = on_tick(ev.price, market)
        try:
            # The step is the trade's MARKET sequence: its identity in the journal (a trade sent
            # again after a restart has the same tick id, and the stream drops it).
            leader = Print(ev.symbol, price, ev.amount)
            previous = {symbol: p for symbol, (p, _) in self.last.items()}
            tick = Tick(step=seq, ts=ts, prints=[leader, *self.basis.prints(seq, leader, previous)])
        except ValueError as exc:  # beyond what the engine computes with (a price above 1e12, ...)
            raise InputRejected(str(exc)) from None
        # The engine adds each amount to its minute's bar, which the journal bounds like any volume:
        # past it, the engine would refuse this tick and every later one of the minute, while the
        # feed took them as printed. (Both terms are bounded by now: the sum cannot overflow.)
        volumes = {}
        for p in tick.prints:
            opened, volume = self.volume.get(p.symbol, (-1, Decimal(0)))
            volumes[p.symbol] = volume = (volume if opened == minute(ts) else Decimal(0)) + p.volume
            if volume > MAX_QUANTITY:
                raise InputRejected(f"amount {p.volume} takes the volume of {p.symbol}'s minute beyond {MAX_QUANTITY}")
        self.clock = ts
        for p in tick.prints:
            self.last[p.symbol] = (p.price, ts)
            self.volume[p.symbol] = (minute(ts), volumes[p.symbol])
        return tick

    def _gap(self, ev: GapMarker) -> GapMarker:
        """The feed lost data: the paper venue says so under its own name (prices are not touched)."""
        if ev.account is not None:
            raise InputRejected("a gap of an account stream is not market data")
        try:
            stream = subjects.name_token("stream", ev.stream)  # it becomes part of the marker's id
        except subjects.SubjectError as exc:
            raise InputRejected(str(exc)) from None
        said = "".join(c if c.isprintable() else " " for c in ev.reason)[:MAX_REASON]
        return GapMarker(
            id=ids.gap_id(self.venue, ev.symbol, stream, ev.since, ev.until),
            venue=self.venue,
            symbol=ev.symbol,
            stream=stream,
            since=ev.since,
            until=ev.until,
            backfilled=ev.backfilled,
            reason=f"{self.source} feed: {said}",
            ts=ev.ts,
            ts_local=ev.ts,
        )


def silence_reason(config: SimConfig) -> str:
    """What the paper venue's own gap marker says when the feed went quiet (no trade for a while)."""
    return f"no trade on the {config.paper_venue} feed for more than {config.paper_gap_ms} ms"
