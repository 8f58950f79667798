"""Settings of the simulated exchange (the `[sim]` table of the config file)."""

from __future__ import annotations

import math
import string
from decimal import ROUND_DOWN, Decimal
from typing import Literal

import msgspec

from schemas.market import Market
from schemas.subjects import SubjectError, name_token, symbol_token
from venues.sim.draws import normal

ZERO = Decimal(0)
MAX_TEMPLATE_COUNT = 2000  # markets one template may generate
# Closed 1-minute bars kept per market (what fetch_ohlcv serves): at most HISTORY_KEPT, and no more
# than HISTORY_BUDGET over all markets, so that the engine's checkpoint (one message) stays well
# within the server's 8 MiB payload with hundreds of markets (a bar is about 60 bytes of JSON).
HISTORY_KEPT = 1500
HISTORY_BUDGET = 60_000


def _positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not value.is_finite() or value <= 0:
            raise ValueError(f"`{name}` must be positive, got {value}")


def _non_negative(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not value.is_finite() or value < 0:
            raise ValueError(f"`{name}` must not be negative, got {value}")


def _within(owner: object, name: str, low: Decimal, high: Decimal) -> None:
    value = getattr(owner, name)
    if not value.is_finite() or not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value}")


class SimMarket(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    kind: Literal["spot", "swap"] = "swap"
    tick_size: Decimal
    lot_size: Decimal
    min_amount: Decimal
    min_notional: Decimal = Decimal(5)
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0005")
    start_price: Decimal
    volatility: Decimal = Decimal("0.0002")  # stdev of the log return per tick
    tick_volume: Decimal = Decimal(1)  # mean traded amount per tick (what resting orders can fill)
    spread_ticks: int = 1
    funding_interval_h: int = 8
    funding_interval_s: int | None = None  # overrides `funding_interval_h` (short intervals for tests)
    # Perpetuals: the funding rate is a seeded mean-reverting walk (Ornstein-Uhlenbeck) per market,
    # moved every `funding_every_ms` of event time (venues/sim/funding.py). Its stationary spread
    # around `funding_mean` is `funding_volatility` / sqrt(2 x `funding_reversion`).
    funding_mean: Decimal = Decimal("0.0001")  # per funding interval, like every rate here
    funding_volatility: Decimal = Decimal("0.0001")  # stdev of the move over one hour, without reversion
    funding_reversion: Decimal = Decimal(1)  # per hour: a gap to the mean halves in ln 2 / this hours
    funding_cap: Decimal = Decimal("0.003")  # the rate never goes beyond +-cap, as on real venues
    # A market that follows another (a spot beside its perpetual) prints the leader's price times
    # (1 + basis), on its own tick: the basis is a small seeded mean-reverting walk (per tick),
    # never beyond +-`basis_cap`, so the two never drift apart (venues/sim/basis.py). Its prints'
    # volume is its leader's: its own `volatility` is not used, and its `tick_volume` only sizes its book.
    follows: str | None = None
    basis_volatility: Decimal = Decimal("0.00002")  # stdev of the basis move per tick
    basis_reversion: Decimal = Decimal("0.01")  # share of the basis given back each tick
    basis_cap: Decimal = Decimal("0.001")
    # The book a taker walks: `book_depth` at the touch and at every `book_step_ticks` beyond it,
    # for `book_levels` levels. Unset depth = 10 x tick_volume.
    book_depth: Decimal | None = None
    book_step_ticks: int = 1
    book_levels: int = 50
    # The seed of this market's draws (price path, funding, basis); unset = the venue's `seed`.
    # Every draw is keyed by (seed, symbol, step), so two markets never share a path.
    seed: int | None = None

    def __post_init__(self) -> None:
        try:
            symbol_token(self.symbol)
        except SubjectError as exc:
            raise ValueError(f"`symbol`: {exc}") from None
        _positive(self, "tick_size", "lot_size", "min_amount", "start_price", "tick_volume")
        _non_negative(self, "volatility", "min_notional", "maker_fee", "taker_fee")
        if self.book_depth is not None:
            _positive(self, "book_depth")
        if self.book_depth is not None and self.book_depth % self.lot_size:
            # Whole lots per level, so that what takers took always ends on a lot of a level.
            raise ValueError(f"`book_depth` {self.book_depth} must be a multiple of `lot_size` {self.lot_size}")
        if self.book_step_ticks < 1:
            raise ValueError("`book_step_ticks` must be at least 1")
        if not 1 <= self.book_levels <= 1000:
            raise ValueError("`book_levels` must be 1..1000")
        if self.spread_ticks < 0:
            raise ValueError("`spread_ticks` must not be negative")
        if self.funding_interval_h < 1:
            raise ValueError("`funding_interval_h` must be at least 1")
        if self.funding_interval_s is not None and not 1 <= self.funding_interval_s <= 7 * 86_400:
            raise ValueError(f"`funding_interval_s` must be 1..{7 * 86_400} (a week), got {self.funding_interval_s}")
        # Bounded so that every float the walks compute stays ordinary (no overflow, no NaN).
        _within(self, "funding_cap", Decimal("1e-8"), Decimal(1))
        _within(self, "funding_mean", -self.funding_cap, self.funding_cap)
        _within(self, "funding_volatility", ZERO, Decimal(1))
        _within(self, "funding_reversion", ZERO, Decimal(1000))
        if self.follows is not None:
            try:
                symbol_token(self.follows)
            except SubjectError as exc:
                raise ValueError(f"`follows`: {exc}") from None
            if self.follows == self.symbol:
                raise ValueError(f"`follows`: {self.symbol} cannot follow itself")
        _within(self, "basis_cap", Decimal("1e-8"), Decimal("0.5"))
        _within(self, "basis_volatility", ZERO, Decimal("0.1"))
        _within(self, "basis_reversion", ZERO, Decimal(1))

    @property
    def funding_interval_ms(self) -> int:
        """The real funding interval: `funding_interval_s` when set, else `funding_interval_h`."""
        if self.funding_interval_s is not None:
            return self.funding_interval_s * 1000
        return self.funding_interval_h * 3_600_000

    @property
    def depth(self) -> Decimal:
        """What a taker finds at each level of the book (whole lots)."""
        if self.book_depth is not None:
            return self.book_depth
        return max(self.lot_size, (self.tick_volume * 10 / self.lot_size).to_integral_value(ROUND_DOWN) * self.lot_size)

    def market(self) -> Market:
        base, _, rest = self.symbol.partition("/")
        quote, _, settle = rest.partition(":")
        return Market(
            symbol=self.symbol,
            kind=self.kind,
            base=base,
            quote=quote,
            settle=settle or None,
            tick_size=self.tick_size,
            lot_size=self.lot_size,
            min_amount=self.min_amount,
            min_notional=self.min_notional,
            maker_fee=self.maker_fee,
            taker_fee=self.taker_fee,
        )


class SimMarketTemplate(SimMarket, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[sim.market_template]`: `count` markets made from one description, added to `markets`
    (docs/adr/0023-sim-market-template.md). Every field of a market is accepted and given to each;
    `symbol` is a pattern formatted with the market's number n = 0..count-1
    ("S{n:03d}/USDT:USDT" gives S000/USDT:USDT .. S099/USDT:USDT)."""

    count: int
    # Each market starts at start_price x exp(start_price_spread x z), z a standard normal drawn
    # from (seed, its symbol); 0 = all start at start_price.
    start_price_spread: Decimal = ZERO

    def __post_init__(self) -> None:
        # Each message starts with the template's own key: the config loader puts the path before it.
        if not 0 <= self.count <= MAX_TEMPLATE_COUNT:
            raise ValueError(f"`count` must be 0..{MAX_TEMPLATE_COUNT}, got {self.count}")
        fields = [name for _, name, _, _ in string.Formatter().parse(self.symbol) if name is not None]
        if fields != ["n"]:
            raise ValueError(f'`symbol` must hold {{n}} once (e.g. "S{{n:03d}}/USDT:USDT"), got {self.symbol!r}')
        try:
            names = {self.symbol.format(n=n) for n in (0, 1)}
        except (ValueError, TypeError) as exc:
            raise ValueError(f"`symbol` {self.symbol!r} is not a pattern of the number n: {exc}") from None
        if len(names) < 2:
            raise ValueError(f"`symbol` {self.symbol!r} gives one name to every market")
        if self.follows is not None:
            raise ValueError("`follows` cannot be templated: list a follower under `markets`")
        _within(self, "start_price_spread", ZERO, Decimal(1))
        if self.count:
            self.generate(0, 0)  # every other field as a market checks it (its message names it)

    def generate(self, n: int, default_seed: int) -> SimMarket:
        """The market number `n`; its draws use the template's `seed`, else `default_seed`."""
        symbol = self.symbol.format(n=n)
        fields = {name: getattr(self, name) for name in SimMarket.__struct_fields__}
        fields.update(symbol=symbol, seed=self.seed if self.seed is not None else default_seed)
        if self.start_price_spread:
            z, _ = normal(fields["seed"], symbol, "start", 0)
            price = self.start_price * Decimal(repr(math.exp(float(self.start_price_spread) * z)))
            fields["start_price"] = max(self.tick_size, (price / self.tick_size).to_integral_value() * self.tick_size)
        return SimMarket(**fields)

    def markets(self, default_seed: int) -> list[SimMarket]:
        return [self.generate(n, default_seed) for n in range(self.count)]

    def symbols(self) -> list[str]:
        return [self.symbol.format(n=n) for n in range(self.count)]


def _default_markets() -> list[SimMarket]:
    return [
        SimMarket(
            symbol="BTC/USDT:USDT",
            tick_size=Decimal("0.1"),
            lot_size=Decimal("0.001"),
            min_amount=Decimal("0.001"),
            start_price=Decimal(60000),
            tick_volume=Decimal("0.5"),
        ),
        SimMarket(
            symbol="ETH/USDT:USDT",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.01"),
            min_amount=Decimal("0.01"),
            start_price=Decimal(3000),
            tick_volume=Decimal(5),
        ),
        SimMarket(
            symbol="BTC/USDT",
            kind="spot",
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.00001"),
            min_amount=Decimal("0.00001"),
            start_price=Decimal(60000),
            tick_volume=Decimal("0.5"),
            follows="BTC/USDT:USDT",  # spot and perpetual of one asset move together (arbitrage)
        ),
    ]


def _default_accounts() -> dict[str, dict[str, Decimal]]:
    return {"main": {"USDT": Decimal(100_000), "BTC": Decimal(1), "ETH": Decimal(10)}}


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "sim"
    seed: int = 42
    tick_ms: int = 500
    # Real venues' tickers are not in step across markets: with phases > 1 the markets print in
    # that many groups spread evenly over each `tick_ms` (market i in group i % phases, a follower
    # with its leader), each market still once per `tick_ms`. 1: every market at the same instant.
    tick_phases: int = 1
    clock: Literal["realtime", "lockstep"] = "realtime"
    prices: Literal["random_walk", "csv", "paper"] = "random_walk"
    csv_path: str | None = None
    # Paper trading (docs/adr/0016): prints are a real venue's public trades, read from MARKET.
    paper_venue: str | None = None  # the venue whose published trades drive the prices
    paper_gap_ms: int = 10_000  # feed silence (event time) after which the next print comes with a gap marker
    paper_from: Literal["now", "first"] = "now"  # where a fresh paper venue starts reading the feed
    history_minutes: int = 1440  # backfilled on a fresh start
    # Perpetuals' funding: the rate moves, and a FundingRate is published, every this much event
    # time (and at each funding time).
    funding_every_ms: int = 5_000
    metrics_port: int = 0  # /health, /status and /metrics (Prometheus) on 127.0.0.1; 0 = off
    start_time_ms: int | None = None  # lockstep: the first tick's time (default: now)
    fill_ratio: Decimal = Decimal("0.5")  # share of a tick's volume our resting orders can take
    leverage: Decimal = Decimal(5)
    # Perpetuals: an account whose equity in a settle asset falls below this share of its
    # positions' notional is liquidated at the mark, paying `liquidation_fee_rate` of it.
    maintenance_margin_rate: Decimal = Decimal("0.005")
    liquidation_fee_rate: Decimal = Decimal("0.01")
    # Spot margin: the base of a spot market can be borrowed (to sell short) up to its limit.
    margin_enabled: bool = True
    borrow_limit: dict[str, Decimal] = msgspec.field(default_factory=dict)  # coins per asset; 0 = not borrowable
    default_borrow_value: Decimal = Decimal(50_000)  # an asset's limit when unlisted: this much quote at start_price
    borrow_rate: dict[str, Decimal] = msgspec.field(default_factory=dict)  # hourly, per asset
    default_borrow_rate: Decimal = Decimal("0.00001")  # hourly (about 9% a year)
    # The equity an account keeps per unit of loan value: 0.5 lets it borrow twice its equity
    # (Binance's 3x cross margin).
    spot_margin_ratio: Decimal = Decimal("0.5")
    # Closed orders remembered per account, each with its client id (open ones always are).
    orders_kept: int = 5_000
    # Tests only: `hidden_create_order` / `hidden_cancel_order` on the API change an order without
    # publishing its account events (lost events, for the reconciler's tests). Off: refused.
    test_hooks: bool = False
    markets: list[SimMarket] = msgspec.field(default_factory=_default_markets)
    # Many markets from one description, appended to `markets` when the config is read.
    market_template: SimMarketTemplate | None = None
    accounts: dict[str, dict[str, Decimal]] = msgspec.field(default_factory=_default_accounts)

    def __post_init__(self) -> None:
        try:
            name_token("venue", self.venue)
        except SubjectError as exc:
            raise ValueError(f"`venue`: {exc}") from None
        if self.tick_ms < 10:
            raise ValueError("`tick_ms` must be at least 10")
        if self.tick_phases < 1 or self.tick_ms % self.tick_phases:
            raise ValueError(f"`tick_phases` must be at least 1 and divide `tick_ms` ({self.tick_ms}), got {self.tick_phases}")
        if self.prices == "csv" and not self.csv_path:
            raise ValueError('`csv_path` is required when `prices` is "csv"')
        if self.prices == "paper":
            self._check_paper()
        if not (Decimal(0) < self.fill_ratio <= Decimal(1)):
            raise ValueError("`fill_ratio` must be in (0, 1]")
        _positive(self, "leverage", "default_borrow_value", "spot_margin_ratio")
        _non_negative(self, "maintenance_margin_rate", "liquidation_fee_rate", "default_borrow_rate")
        if self.maintenance_margin_rate * self.leverage >= 1:
            raise ValueError("`maintenance_margin_rate` x `leverage` must be below 1, or a new position is liquidated at once")
        for field, table in (("borrow_limit", self.borrow_limit), ("borrow_rate", self.borrow_rate)):
            for asset, value in table.items():
                if not value.is_finite() or value < 0:
                    raise ValueError(f"`{field}.{asset}` must be zero or positive, got {value}")
        if self.orders_kept < 1:
            raise ValueError("`orders_kept` must be at least 1")
        self._expand_template()
        if not self.markets:
            raise ValueError("`markets` must list at least one market")
        if len({m.symbol for m in self.markets}) != len(self.markets):
            raise ValueError("`markets` lists a symbol twice")
        self._check_follows()
        if not 1 <= self.funding_every_ms <= 86_400_000:
            raise ValueError(f"`funding_every_ms` must be 1..86400000 (a day), got {self.funding_every_ms}")
        if not self.accounts:
            raise ValueError("`accounts` must list at least one account")
        for name, balances in self.accounts.items():
            if name in ("*", ">") or not _is_name(name):
                raise ValueError(f"`accounts.{name}`: an account name is 1-64 of a-z, 0-9, '-', '_'")
            for asset, value in balances.items():
                if not value.is_finite():
                    raise ValueError(f"`accounts.{name}.{asset}` must be a finite number, got {value}")

    def _expand_template(self) -> None:
        """Append the template's markets to `markets`, once: a config rebuilt from this one
        (`msgspec.structs.replace`, a pickle, its own fields encoded and read back) already
        lists them last, under their names, and keeps them as they are."""
        t = self.market_template
        if t is None or not t.count:
            return
        names = t.symbols()
        if [m.symbol for m in self.markets[-len(names) :]] == names:
            return
        listed = {m.symbol for m in self.markets}
        clash = next((s for s in names if s in listed), None)
        if clash is not None:
            raise ValueError(f"`market_template.symbol`: {clash} is also listed in `markets`")
        msgspec.structs.force_setattr(self, "markets", [*self.markets, *t.markets(self.seed)])

    @property
    def history_kept(self) -> int:
        """Closed bars each market keeps: HISTORY_KEPT, fewer when many markets share the budget."""
        return max(1, min(HISTORY_KEPT, HISTORY_BUDGET // len(self.markets)))

    def template_symbols(self) -> list[str]:
        """The symbols `market_template` generated, in order (empty without a template)."""
        return [] if self.market_template is None else self.market_template.symbols()

    @property
    def cadence_ms(self) -> int:
        """The time between two of the clock's ticks: `tick_ms`, split among the phases."""
        return self.tick_ms // self.tick_phases

    def seed_of(self, spec: SimMarket) -> int:
        """The seed of a market's draws: its own, else the venue's."""
        return self.seed if spec.seed is None else spec.seed

    def _check_follows(self) -> None:
        specs = {m.symbol: m for m in self.markets}
        for m in self.markets:
            if m.follows is None:
                continue
            leader = specs.get(m.follows)
            if leader is None:
                raise ValueError(f"`markets.{m.symbol}.follows`: {m.follows} is not one of the listed markets")
            if leader.follows is not None:
                # One level only: a leader's print is drawn before its followers' in the same tick.
                raise ValueError(f"`markets.{m.symbol}.follows`: {m.follows} follows {leader.follows} itself; follow the leader")

    def _check_paper(self) -> None:
        if not self.paper_venue:
            raise ValueError('`paper_venue` is required when `prices` is "paper" (the venue whose trades drive the prices)')
        try:
            name_token("venue", self.paper_venue)
        except SubjectError as exc:
            raise ValueError(f"`paper_venue`: {exc}") from None
        if self.paper_venue in ("*", ">"):
            raise ValueError(f"`paper_venue` must be a venue name, not the wildcard {self.paper_venue!r}")
        if self.paper_venue == self.venue:
            # Reading its own prints back as the feed would loop them forever.
            raise ValueError(f"`paper_venue` must differ from `venue` ({self.venue!r}): the paper venue publishes under its own name")
        if self.clock != "realtime":
            raise ValueError('`clock` must be "realtime" when `prices` is "paper": the feed drives the clock')
        if self.paper_gap_ms < 1:
            raise ValueError("`paper_gap_ms` must be positive")

    def followers(self) -> dict[str, list[SimMarket]]:
        """Each leader's followers, in the order `markets` lists them."""
        out: dict[str, list[SimMarket]] = {}
        for m in self.markets:
            if m.follows is not None:
                out.setdefault(m.follows, []).append(m)
        return out

    def market_map(self) -> dict[str, Market]:
        return {m.symbol: m.market() for m in self.markets}

    def borrow_limits(self) -> dict[str, Decimal]:
        """Coins each borrowable asset (the base of a spot market) can be borrowed up to."""
        limits: dict[str, Decimal] = {}
        for spec in self.markets:
            base = spec.market().base
            if spec.kind != "spot" or base in limits:
                continue
            default = (self.default_borrow_value / spec.start_price / spec.lot_size).to_integral_value(ROUND_DOWN) * spec.lot_size
            limits[base] = self.borrow_limit.get(base, default)
        return limits


def _is_name(value: str) -> bool:
    try:
        name_token("account", value)
    except SubjectError:
        return False
    return True
