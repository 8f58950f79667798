"""The alerts monitor's pure pieces: which events alert, what is one alert, what a channel may
send and when, what an answer means, when an input may be acked, who stopped answering."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitors.alerts import render
from monitors.alerts.alerts import Alert, from_dead_letter, from_event
from monitors.alerts.channels import REDACTED, ChannelConfigError, from_env, judge
from monitors.alerts.config import AlertsConfig
from monitors.alerts.dedupe import Dedupe
from monitors.alerts.outbox import Backoff, Outbox, TokenBucket
from monitors.alerts.presence import Presence, Remembered
from monitors.alerts.testing import breaker, finding, gap, order, risk_alert
from monitors.alerts.tracker import Tracker
from schemas.ops import RiskAlert


def alert(key: str, condition: str | None = None, state: str = "", **kw: object) -> Alert:
    return Alert(key=key, kind="risk", severity="warning", condition=condition or f"c-{key}", state=state, title=f"title {key}", **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- which events alert


def test_every_kind_of_input_alerts_with_its_severity_and_an_order_that_is_not_unknown_or_an_in_sync_finding_does_not() -> None:
    assert from_event("k", breaker("m", state="halted")).severity == "critical"
    assert from_event("k", breaker("m", state="reduce_only")).severity == "warning"
    assert from_event("k", breaker("m", state="ok", previous="halted")).title.startswith("breaker global closed")
    assert from_event("k", finding("m")).kind == "finding"
    assert from_event("k", finding("m", kind="in_sync")) is None
    assert from_event("k", gap("m")).kind == "gap"
    assert from_event("k", gap("m", account="main")).kind == "gap"
    assert from_event("k", order("m")).severity == "critical"
    for status in ("open", "closed", "canceled", "rejected", "expired"):
        assert from_event("k", order("m", status=status)) is None
    assert from_event("k", risk_alert("m", severity="critical")).severity == "critical"


def test_a_breaker_alert_carries_its_trips_evidence() -> None:
    a = from_event("k", breaker("m"))
    assert a is not None and "daily_loss halted: 2500 vs limit 2000" in a.detail


def test_a_dead_letter_alerts_whatever_its_payload_and_headers_are() -> None:
    a = from_dead_letter("k", "dlq.md.sim.BTC-USDT.gap", {}, 12, 0)
    assert a.kind == "dlq" and "md.sim.BTC-USDT.gap" in a.title and "no reason given" in a.detail
    b = from_dead_letter("k", "dlq.x", {"Sqt-Error": "bad\x00 input\n" * 200, "Sqt-Consumer": "grid-a", "Sqt-Truncated": "9000000"}, 5, 0)
    assert "grid-a" in b.title and "\n" not in b.detail and len(b.detail) <= 300 and "truncated" in b.detail


def test_presence_alerts_are_one_condition_per_service() -> None:
    down = RiskAlert(
        id="d", component="alerts", instance="main", severity="critical", kind="component_down", message="sqt-x/a stopped", ts=1
    )
    other = msgspec.structs.replace(down, id="e", message="sqt-y/b stopped")
    a, b = from_event("d", down), from_event("e", other)
    assert a is not None and b is not None and a.condition != b.condition and a.state == "component_down"


# ----------------------------------------------------------------------------- one alert


def test_the_same_event_is_one_alert_and_the_same_condition_within_the_window_too() -> None:
    d = Dedupe(window_ms=1_000)
    assert d.judge(alert("a", "c"), 0)[0] == "new"
    assert d.judge(alert("a", "c"), 10)[0] == "duplicate"
    assert d.judge(alert("b", "c"), 20)[0] == "repeat"
    assert d.judge(alert("b", "c"), 30)[0] == "duplicate"
    verdict, next_one = d.judge(alert("c", "c"), 1_001)  # a window later: alerts again, saying it repeated
    assert verdict == "new" and next_one.repeats == 1


def test_a_new_state_under_one_condition_always_alerts() -> None:
    d = Dedupe(window_ms=60_000)
    verdicts = [d.judge(alert(str(i), "breaker:global", state), i)[0] for i, state in enumerate(["halted", "ok", "halted", "halted"])]
    assert verdicts == ["new", "new", "new", "repeat"]


def test_dedupe_memory_is_bounded_by_the_window() -> None:
    d = Dedupe(window_ms=100)
    for i in range(1_000):
        d.judge(alert(str(i)), i)
    assert len(d) <= 101


# ----------------------------------------------------------------------------- a channel's pace


def test_a_burst_waits_the_group_time_then_goes_as_one_message() -> None:
    box = Outbox(TokenBucket(60, 1, now=0.0), group_s=0.5, digest_max=100)
    for i in range(30):
        box.add(alert(str(i)), 0.0)
    assert box.take(0.1) == [] and box.due(0.1) == pytest.approx(0.4)
    assert len(box.take(0.5)) == 30 and not box.waiting


def test_what_waits_for_a_token_is_folded_into_the_next_message() -> None:
    box = Outbox(TokenBucket(60, 1, now=0.0), group_s=0.0, digest_max=100)
    box.add(alert("first"), 0.0)
    assert [a.key for a in box.take(0.0)] == ["first"]
    for i in range(5):
        box.add(alert(str(i)), 0.1)
    assert box.take(0.5) == []
    assert len(box.take(1.0)) == 5


def test_a_message_holds_at_most_digest_max_alerts() -> None:
    box = Outbox(TokenBucket(600, 10, now=0.0), group_s=10.0, digest_max=4)
    for i in range(10):
        box.add(alert(str(i)), 0.0)
    assert len(box.take(0.0)) == 4  # full: no group wait
    assert len(box.take(0.0)) == 4


def test_a_429_holds_the_channel_for_as_long_as_it_was_told() -> None:
    box = Outbox(TokenBucket(600, 10, now=0.0), group_s=0.0, digest_max=10)
    box.rate_limited(0.0, 7.0)
    box.add(alert("a"), 0.0)
    assert box.take(6.9) == [] and box.attempt(6.9) > 0
    assert len(box.take(7.0)) == 1


@settings(max_examples=50, deadline=None)
@given(arrivals=st.lists(st.floats(0, 300), min_size=1, max_size=200))
def test_the_default_telegram_pace_never_exceeds_20_messages_in_any_minute(arrivals: list[float]) -> None:
    cfg = AlertsConfig()
    box = Outbox(TokenBucket(cfg.telegram_per_minute, cfg.telegram_burst, now=0.0), group_s=0.0, digest_max=1)
    sent: list[float] = []
    t = 0.0
    for i, at in enumerate(sorted(arrivals)):
        box.add(alert(str(i)), at)
    while box.waiting:
        t = max(t, box.waiting[0][0])
        wait = box.due(t)
        if wait > 0:
            t += wait
            continue
        if box.take(t):
            sent.append(t)
    assert all(sum(1 for s in sent if start <= s < start + 60) <= 20 for start in sent)


def test_backoff_grows_with_full_jitter_and_stays_within_its_bounds() -> None:
    b = Backoff(0.5, 8.0)
    assert b.delay(1, lambda: 0.0) == 0.25 and b.delay(1, lambda: 1.0) == 0.5
    assert b.delay(3, lambda: 1.0) == 2.0 and b.delay(50, lambda: 1.0) == 8.0


# ----------------------------------------------------------------------------- what an answer means


def test_a_429_says_how_long_to_wait_in_a_header_or_in_telegrams_body() -> None:
    assert judge("slack", 429, {"Retry-After": "12"}, b"rate_limited").retry_after == 12
    tg = judge("telegram", 429, {}, b'{"ok":false,"error_code":429,"parameters":{"retry_after":33}}')
    assert tg.result == "rate_limited" and tg.retry_after == 33
    assert judge("slack", 429, {}, b"").retry_after == 1.0  # unsaid: a second
    assert judge("slack", 429, {"Retry-After": "99999999"}, b"").retry_after == 3600.0  # bounded


def test_5xx_is_transient_2xx_is_sent_and_other_refusals_are_permanent() -> None:
    assert judge("slack", 503, {}, b"").result == "transient"
    assert judge("slack", 200, {}, b"ok").result == "ok"
    assert judge("telegram", 200, {}, b'{"ok":true}').result == "ok"
    assert judge("telegram", 200, {}, b'{"ok":false,"description":"odd"}').result == "permanent"
    assert judge("slack", 404, {}, b"no_service").result == "permanent"
    assert judge("telegram", 403, {}, b'{"ok":false,"description":"bot was kicked"}').detail == "403 bot was kicked"


def test_channels_come_from_the_environment_and_never_show_their_secrets() -> None:
    env = {
        "SQT_SLACK_WEBHOOK_URL": "https://hooks.example/services/T/B/sekrit",
        "SQT_TELEGRAM_BOT_TOKEN": "1:tok",
        "SQT_TELEGRAM_CHAT_ID": "42",
    }
    slack, telegram = from_env(env, "http://tg.local/")
    assert telegram.url == "http://tg.local/bot1:tok/sendMessage" and telegram.body("x")["chat_id"] == "42"
    said = (
        f"{slack!r} {telegram!r} " + slack.redact("POST https://hooks.example/services/T/B/sekrit failed") + telegram.redact("/bot1:tok/x")
    )
    assert "sekrit" not in said and "1:tok" not in said and REDACTED in said
    assert from_env({}, "http://x") == []
    with pytest.raises(ChannelConfigError, match="SQT_TELEGRAM_CHAT_ID") as exc:
        from_env({"SQT_TELEGRAM_BOT_TOKEN": "1:secret-token"}, "http://x")
    assert "secret-token" not in str(exc.value)
    with pytest.raises(ChannelConfigError, match="SQT_SLACK_WEBHOOK_URL"):
        from_env({"SQT_SLACK_WEBHOOK_URL": "hooks.example/x"}, "http://x")


def test_a_bad_setting_names_its_key() -> None:
    with pytest.raises(ValueError, match="ping_wait_ms"):
        AlertsConfig(ping_wait_ms=10_000)
    with pytest.raises(ValueError, match="instance"):
        AlertsConfig(instance="Not A Name")


# ----------------------------------------------------------------------------- the text


def test_a_digest_lists_the_worst_first_counts_the_rest_and_fits_a_telegram_message() -> None:
    many = [alert(f"k{i}") for i in range(300)]
    many[150] = msgspec.structs.replace(many[150], severity="critical", title="the worst")
    text = render.text(many, "sqt alerts main", lines=20)
    assert text.splitlines()[1].startswith("[critical] the worst")
    assert "... and 280 more: risk 280" in text and len(text) <= 4096
    huge = [msgspec.structs.replace(alert("x"), detail="y" * 10_000)]
    assert len(render.text(huge, "s", 20)) <= 4096


# ----------------------------------------------------------------------------- acks


def test_only_the_done_prefix_is_acked_in_delivery_order() -> None:
    t = Tracker()
    for seq in (3, 5, 8):
        t.add(seq, f"h{seq}")
    t.done(5)
    assert t.ackable() is None  # 3 waits for a channel: nothing after it may be acked
    t.done(3)
    assert t.ackable() == (5, "h5") and len(t) == 1
    t.done(8)
    assert t.ackable() == (8, "h8") and len(t) == 0


def test_a_stale_handle_is_never_acked_and_a_redelivery_refreshes_it() -> None:
    t = Tracker()
    t.add(1, "old1")
    t.add(2, "old2")
    t.done(1)
    t.done(2)
    t.stale()  # the session was rebuilt
    assert t.ackable() is None
    assert t.add(2, "new2") is False  # in flight: not handled twice
    assert t.ackable() == (2, "new2") and len(t) == 0


# ----------------------------------------------------------------------------- who answers


def test_a_service_that_stops_answering_alerts_once_and_once_more_when_it_is_back() -> None:
    p = Presence(silence_ms=1_000)
    assert p.observe({"a", "b"}, 0) == []
    assert p.observe({"b"}, 500) == []
    [down] = p.observe({"b"}, 1_001)
    assert down.service == "a" and down.down and down.episode == 0
    assert p.observe({"b"}, 5_000) == []
    [back] = p.observe({"a", "b"}, 6_000)
    assert back.service == "a" and not back.down and back.episode == 0 and back.silent_ms == 6_000
    assert p.observe({"c"}, 6_100) == []  # a new one is only learned


def test_who_was_down_stays_down_across_a_restart_and_who_was_up_gets_a_whole_silence() -> None:
    before = Presence(silence_ms=1_000)
    before.observe({"a", "b"}, 0)
    before.observe({"b"}, 2_000)
    remembered = msgspec.json.decode(msgspec.json.encode(before.remembered()), type=Remembered)
    after = Presence(silence_ms=1_000)
    after.restore(remembered, 10_000)
    assert after.observe(set(), 10_500) == []  # b has until 11_000; a is down already
    changes = after.observe({"a"}, 11_001)
    assert [(c.service, c.down) for c in changes] == [("a", False), ("b", True)]


def test_numbers_in_alerts_are_shown_as_given() -> None:
    a = from_event("k", risk_alert("m", value=Decimal("1.50"), threshold=Decimal(1)))
    assert a is not None and "1.50 vs threshold 1" in a.detail
