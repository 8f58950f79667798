"""Which conditions hold now, per scope: pure functions of the risk state and the limits.

Each returns the trips it finds, with their evidence (the measured value, the limit, since
when, and the input sequences that showed it). Whether a trip opens, keeps or closes a
breaker is the core's business (monitors/risk/core.py); here is only what is true now.
"""

from __future__ import annotations

from decimal import Decimal

from monitors.risk.config import RiskConfig
from monitors.risk.state import ZERO, RiskState, Seen
from schemas.ops import Trip
from schemas.subjects import name_token, symbol_token

Holding = dict[str, dict[str, Trip]]  # scope -> breaker -> trip
DAY_MS = 86_400_000


def symbol_scope(venue: str, symbol: str) -> str:
    return f"symbol.{name_token('venue', venue)}.{symbol_token(symbol)}"


def account_scope(venue: str, account: str) -> str:
    return f"account.{name_token('venue', venue)}.{name_token('account', account)}"


def venue_scope(venue: str) -> str:
    return f"venue.{name_token('venue', venue)}"


def _add(out: Holding, scope: str, trip: Trip) -> None:
    out.setdefault(scope, {})[trip.breaker] = trip


def holding(cfg: RiskConfig, st: RiskState) -> Holding:
    out: Holding = {}
    now = st.now
    for venue, symbol in cfg.markets():
        seen = st.markets.get(f"{venue}|{symbol}") or Seen()
        scope = symbol_scope(venue, symbol)
        stale = _stale(cfg, seen, now, st.started, venue, symbol)
        if stale is not None:
            _add(out, scope, stale)
        crash = _crash(cfg, seen, now, venue, symbol)
        if crash is not None:
            _add(out, scope, crash)
    _positions(cfg, st, out)
    _rejects(cfg, st, out)
    _latency(cfg, st, out)
    _daily_loss(cfg, st, out)
    return out


def _stale(cfg: RiskConfig, seen: Seen, now: int, started: int, venue: str, symbol: str) -> Trip | None:
    rule = cfg.feed_stale
    if not rule.enabled:
        return None
    last = seen.last_ts or started
    silent = now - last
    if silent <= rule.ttl_ms:
        return None
    spoke = f"last at {seen.last_ts}" if seen.last_ts else "none since the monitor started"
    return Trip(
        breaker="feed_stale",
        state=rule.state,
        value=Decimal(silent),
        limit=Decimal(rule.ttl_ms),
        detail=f"no market data on {venue} {symbol} for {silent} ms ({spoke})",
        since=last + rule.ttl_ms,
        events=[seen.last_seq] if seen.last_seq else [],
    )


def _crash(cfg: RiskConfig, seen: Seen, now: int, venue: str, symbol: str) -> Trip | None:
    rule = cfg.flash_crash
    if rule.move is None or not rule.enabled or not seen.window:
        return None
    recent = [p for p in seen.window if p[0] >= now - rule.window_ms]
    if len(recent) < 2:
        return None
    last = recent[-1]
    high = max(recent, key=lambda p: p[1])
    low = min(recent, key=lambda p: p[1])
    drop = (high[1] - last[1]) / high[1]
    rise = (last[1] - low[1]) / low[1]
    move, start = (drop, high) if drop >= rise else (rise, low)
    if move <= rule.move:
        return None
    way = "fell" if start is high else "rose"
    return Trip(
        breaker="flash_crash",
        state=rule.state,
        value=move.quantize(Decimal("0.0001")),
        limit=rule.move,
        detail=f"{venue} {symbol} {way} from {start[1]} to {last[1]} in {last[0] - start[0]} ms",
        since=last[0],
        events=[start[2], last[2]],
    )


def _positions(cfg: RiskConfig, st: RiskState, out: Holding) -> None:
    exposure = ZERO
    exposure_events: list[int] = []
    notional: dict[str, Decimal] = {}
    unrealized: dict[str, Decimal] = {}
    seqs: dict[str, list[int]] = {}
    for key, held in st.positions.items():
        venue, account, symbol = key.split("|", 2)
        size = abs(held.base)
        limit = cfg.position.limits.get(symbol) if cfg.position.enabled else None
        if limit is not None and size > limit:
            _add(
                out,
                symbol_scope(venue, symbol),
                Trip(
                    breaker="position",
                    state=cfg.position.state,
                    value=size,
                    limit=limit,
                    detail=f"{account} holds {held.base} {symbol} on {venue}",
                    since=st.now,
                    events=[held.seq],
                ),
            )
        acct = f"{venue}|{account}"
        unrealized[acct] = unrealized.get(acct, ZERO) + held.unrealized
        if held.mark is not None and size:
            value = size * held.mark
            exposure += value
            exposure_events.append(held.seq)
            notional[acct] = notional.get(acct, ZERO) + value
            seqs.setdefault(acct, []).append(held.seq)
            _liquidation(cfg, st, out, venue, symbol, held.mark, held.liquidation, held.seq)
    limit = cfg.exposure.limit
    if limit is not None and cfg.exposure.enabled and exposure > limit:
        _add(
            out,
            "global",
            Trip(
                breaker="exposure",
                state=cfg.exposure.state,
                value=exposure,
                limit=limit,
                detail=f"positions worth {exposure} together",
                since=st.now,
                events=exposure_events,
            ),
        )
    floor = cfg.margin.min_ratio
    if floor is None or not cfg.margin.enabled:
        return
    for acct, value in notional.items():
        equity = st.equity.get(acct)
        if equity is None:
            continue
        ratio = (equity + unrealized.get(acct, ZERO)) / value
        if ratio < floor:
            venue, account = acct.split("|", 1)
            _add(
                out,
                account_scope(venue, account),
                Trip(
                    breaker="margin",
                    state=cfg.margin.state,
                    value=ratio.quantize(Decimal("0.0001")),
                    limit=floor,
                    detail=f"{account} on {venue}: equity {equity + unrealized.get(acct, ZERO)} for positions worth {value}",
                    since=st.now,
                    events=seqs.get(acct, []),
                ),
            )


def _liquidation(
    cfg: RiskConfig, st: RiskState, out: Holding, venue: str, symbol: str, mark: Decimal, liq: Decimal | None, seq: int
) -> None:
    floor = cfg.liquidation.min_distance
    if floor is None or liq is None or not cfg.liquidation.enabled:
        return
    distance = abs(mark - liq) / mark
    if distance < floor:
        _add(
            out,
            symbol_scope(venue, symbol),
            Trip(
                breaker="liquidation",
                state=cfg.liquidation.state,
                value=distance.quantize(Decimal("0.0001")),
                limit=floor,
                detail=f"{symbol} on {venue}: mark {mark}, liquidation at {liq}",
                since=st.now,
                events=[seq],
            ),
        )


def _rejects(cfg: RiskConfig, st: RiskState, out: Holding) -> None:
    rule = cfg.rejects
    if rule.rate is None or not rule.enabled:
        return
    for acct, outcomes in st.outcomes.items():
        recent = [o for o in outcomes if o[0] >= st.now - rule.window_ms]
        refused = [o for o in recent if o[1]]
        if len(recent) < rule.min_count or not refused:
            continue
        rate = Decimal(len(refused)) / Decimal(len(recent))
        if rate >= rule.rate:
            venue, account = acct.split("|", 1)
            _add(
                out,
                account_scope(venue, account),
                Trip(
                    breaker="reject_rate",
                    state=rule.state,
                    value=rate.quantize(Decimal("0.0001")),
                    limit=rule.rate,
                    detail=f"{len(refused)} of the last {len(recent)} creates on {venue}/{account} refused or failed",
                    since=refused[0][0],
                    events=[o[2] for o in refused[-10:]],
                ),
            )


def _latency(cfg: RiskConfig, st: RiskState, out: Holding) -> None:
    rule = cfg.latency
    if rule.limit_ms is None or not rule.enabled:
        return
    for venue, answers in st.answers.items():
        recent = [a for a in answers if a[0] >= st.now - rule.window_ms][-rule.samples :]
        if len(recent) < rule.samples or any(a[1] <= rule.limit_ms for a in recent):
            continue
        _add(
            out,
            venue_scope(venue),
            Trip(
                breaker="latency",
                state=rule.state,
                value=Decimal(min(a[1] for a in recent)),
                limit=Decimal(rule.limit_ms),
                detail=f"the last {len(recent)} answers from {venue} took {', '.join(str(a[1]) for a in recent)} ms",
                since=recent[0][0],
                events=[a[2] for a in recent],
            ),
        )


def day_pnl(st: RiskState) -> Decimal:
    """Realized plus unrealized PnL since each position's mark of the day."""
    return sum((h.realized + h.unrealized - st.day_marks.get(k, h.realized + h.unrealized) for k, h in st.positions.items()), ZERO)


def _daily_loss(cfg: RiskConfig, st: RiskState, out: Holding) -> None:
    limit = cfg.daily_loss.limit
    if limit is None or not cfg.daily_loss.enabled:
        return
    loss = -day_pnl(st)
    if loss > limit:
        _add(
            out,
            "global",
            Trip(
                breaker="daily_loss",
                state=cfg.daily_loss.state,
                value=loss,
                limit=limit,
                detail=f"lost {loss} since 00:00 UTC (realized plus unrealized)",
                since=st.now,
                events=sorted(h.seq for h in st.positions.values()),
            ),
        )
