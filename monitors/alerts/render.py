"""Alerts as text for a chat (pure). Plain text, no markup: an event's text cannot break the
message's formatting (a Telegram 400 for bad Markdown would be retried forever), and a message
stays below Telegram's 4,096 characters (Slack's limit is higher)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from monitors.alerts.alerts import Alert

MAX_CHARS = 3_800
_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _when(alert: Alert) -> str:
    if not alert.ts:
        return ""
    seconds = alert.ts // 1000
    return f" at {seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d} UTC"


def _repeats(alert: Alert) -> str:
    return f" (its condition repeated {alert.repeats}x before this)" if alert.repeats else ""


def single(alert: Alert, source: str) -> str:
    lines = [f"[{alert.severity.upper()}] {alert.title}"]
    if alert.detail:
        lines.append(alert.detail)
    lines.append(f"{alert.kind}{_when(alert)}{_repeats(alert)} - {source}")
    return "\n".join(lines)[:MAX_CHARS]


def digest(alerts: Sequence[Alert], source: str, lines: int) -> str:
    """One message for many: the worst first, `lines` of them listed, the rest counted by kind."""
    ranked = sorted(alerts, key=lambda a: (_ORDER.get(a.severity, 3), a.ts))
    severities = Counter(a.severity for a in alerts)
    head = ", ".join(f"{severities[s]} {s}" for s in ("critical", "warning", "info") if severities[s])
    out = [f"{len(alerts)} alerts ({head}) - {source}"]
    size = len(out[0])
    listed = 0
    for alert in ranked[:lines]:
        line = f"[{alert.severity}] {alert.title}" + (f": {alert.detail[:160]}" if alert.detail else "") + _repeats(alert)
        if size + len(line) + 1 > MAX_CHARS - 200:  # room for the summary of the rest
            break
        out.append(line)
        size += len(line) + 1
        listed += 1
    rest = Counter(a.kind for a in ranked[listed:])
    if rest:
        out.append(f"... and {sum(rest.values())} more: " + ", ".join(f"{kind} {n}" for kind, n in rest.most_common()))
    return "\n".join(out)[:MAX_CHARS]


def text(alerts: Sequence[Alert], source: str, lines: int) -> str:
    return single(alerts[0], source) if len(alerts) == 1 else digest(alerts, source, lines)
