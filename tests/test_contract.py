"""bus/contract.py exactly, with no NATS: header parsing, admission, addressing, one step, a fold.

Every reason a dead letter carries is checked word for word, and every limit on both sides of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from bus.contract import (
    DEFAULT_MAX_FUTURE_MS,
    DEFAULT_MAX_PAYLOAD,
    Inbound,
    InputRejected,
    Outgoing,
    OutputRefused,
    Rules,
    StoredMsg,
    address,
    admit,
    apply_input,
    fold_stream,
    parse_headers,
)
from schemas.codec import encode
from schemas.market import Ticker
from schemas.ops import RiskAlert
from testkit.events import ticker

SUBJECT = "md.sim.BTC-USDT.ticker"
ALERTS = ("ops.test.*.alert",)


def tick(last: str | int = 100, ts: int = 1_000, symbol: str = "BTC/USDT") -> Ticker:
    return ticker(Decimal(last), ts=ts, symbol=symbol)


def alert(n: int, instance: str = "sum", message: str = "m") -> RiskAlert:
    return RiskAlert(id=f"a{n}", component="test", instance=instance, severity="info", kind="k", message=message, ts=n)


def stored(seq: int, event: Any, ts_ns: int = 0, subject: str = SUBJECT) -> StoredMsg:
    return StoredMsg(seq, subject, event if isinstance(event, bytes) else encode(event), b"", ts_ns)


# ----------------------------------------------------------------------------- defaults


def test_an_inbound_is_stored_at_no_known_time_and_delivered_once_unless_told() -> None:
    inbound = Inbound(3, SUBJECT, "e")
    assert (inbound.stored_ns, inbound.delivered) == (0, 1)
    assert DEFAULT_MAX_FUTURE_MS == 5_000 and DEFAULT_MAX_PAYLOAD == 8 * 1024 * 1024


def test_rules_default_to_routing_by_the_body_five_seconds_ahead_and_the_embedded_servers_limit() -> None:
    rules = Rules(Ticker)
    assert (rules.outputs, rules.max_future_ms, rules.max_payload) == ((), 5_000, 8 * 1024 * 1024)
    assert rules.route is not None and rules.route(tick()) == SUBJECT
    assert rules.declared("anything.at.all")  # no declared outputs: anything
    assert rules.decoder.decode(encode(tick())) == tick()


def test_rules_declare_outputs_by_pattern() -> None:
    rules = Rules(Ticker, ("ops.test.*.alert", "acct.>"))
    assert rules.declared("ops.test.x.alert") and rules.declared("acct.sim.main.BTC-USDT.order")
    assert not rules.declared("ops.test.x.state") and not rules.declared("ops.other.x.alert")


# ----------------------------------------------------------------------------- headers


def test_no_header_block_is_no_headers() -> None:
    assert parse_headers(b"") == {}
    assert StoredMsg(1, SUBJECT, b"", b"", 0).headers() == {}


def test_headers_skip_the_status_line_blank_lines_and_lines_without_a_colon() -> None:
    raw = b"Key: first-line\r\nA: 1\r\n\r\nno colon here\r\nB:two  \r\n  C  :  x:y  \r\n\r\n"
    assert parse_headers(raw) == {"A": "1", "B": "two", "C": "x:y"}


def test_a_header_line_without_a_value_is_an_empty_value() -> None:
    assert parse_headers(b"NATS/1.0\r\nEmpty:\r\n") == {"Empty": ""}


def test_header_bytes_that_are_not_utf8_are_replaced_not_refused() -> None:
    assert parse_headers(b"NATS/1.0\r\nK\xff: v\xfe\r\n") == {"K\ufffd": "v\ufffd"}


def test_a_stored_message_reads_one_header_or_none() -> None:
    m = StoredMsg(7, SUBJECT, b"{}", b"NATS/1.0\r\nNats-Msg-Id: x1\r\nSqt-Seq: 4\r\n\r\n", 5)
    assert m.headers() == {"Nats-Msg-Id": "x1", "Sqt-Seq": "4"}
    assert m.header("Sqt-Seq") == "4"
    assert m.header("Missing") is None


# ----------------------------------------------------------------------------- admission


def test_an_input_that_does_not_decode_is_refused_with_the_decoders_reason() -> None:
    assert admit(Rules(Ticker), SUBJECT, b"{not json") == (
        None,
        "undecodable input: JSON is malformed: object keys must be strings (byte 1)",
    )


def test_an_input_that_fails_validation_is_refused_as_undecodable() -> None:
    data = encode(tick()).replace(b'"last":"100"', b'"last":"abc"')
    assert admit(Rules(Ticker), SUBJECT, data) == (None, "undecodable input: Invalid decimal string - at `$.last`")


def test_a_valid_input_on_its_own_subject_is_admitted_with_no_reason() -> None:
    assert admit(Rules(Ticker), SUBJECT, encode(tick())) == (tick(), "")


def test_the_subject_is_the_authority_over_the_body() -> None:
    other = "md.sim.ETH-USDT.ticker"
    assert admit(Rules(Ticker), other, encode(tick())) == (
        None,
        f"the body says {SUBJECT}, the subject is {other}: the subject is the authority",
    )


def test_a_body_that_names_no_valid_subject_is_refused() -> None:
    assert admit(Rules(Ticker), SUBJECT, encode(tick(symbol="BTCUSDT"))) == (
        None,
        "the body does not name a valid subject: not a unified symbol (BASE/QUOTE[:SETTLE]): 'BTCUSDT'",
    )


def test_a_route_that_raises_a_plain_value_error_refuses_the_input() -> None:
    def route(event: Any) -> str:
        raise ValueError("no route today")

    assert admit(Rules(Ticker, route=route), SUBJECT, encode(tick())) == (None, "the body does not name a valid subject: no route today")


def test_without_a_route_any_subject_is_accepted() -> None:
    assert admit(Rules(Ticker, route=None), "whatever.subject", encode(tick())) == (tick(), "")


def test_an_input_dated_more_than_max_future_after_it_was_stored_is_refused() -> None:
    rules = Rules(Ticker, max_future_ms=5_000)
    data = encode(tick(ts=10_000))
    # exactly at the limit: admitted
    assert admit(rules, SUBJECT, data, stored_ns=5_000 * 1_000_000) == (tick(ts=10_000), "")
    # one nanosecond more: refused
    assert admit(rules, SUBJECT, data, stored_ns=5_000 * 1_000_000 - 1) == (
        None,
        "dated 5001 ms after it was stored (at most 5000 ms allowed)",
    )
    assert admit(rules, SUBJECT, data, stored_ns=2_000 * 1_000_000) == (
        None,
        "dated 8000 ms after it was stored (at most 5000 ms allowed)",
    )


def test_the_default_future_limit_is_five_seconds() -> None:
    data = encode(tick(ts=10_000))
    assert admit(Rules(Ticker), SUBJECT, data, stored_ns=5_000 * 1_000_000)[1] == ""
    assert admit(Rules(Ticker), SUBJECT, data, stored_ns=4_999 * 1_000_000)[1] == (
        "dated 5001 ms after it was stored (at most 5000 ms allowed)"
    )


def test_an_input_from_the_past_is_admitted_however_old() -> None:
    assert admit(Rules(Ticker), SUBJECT, encode(tick(ts=1)), stored_ns=10**18) == (tick(ts=1), "")


def test_the_time_check_is_off_without_a_store_time_or_a_limit() -> None:
    data = encode(tick(ts=10**12))
    assert admit(Rules(Ticker), SUBJECT, data, stored_ns=0) == (tick(ts=10**12), "")
    assert admit(Rules(Ticker), SUBJECT, data) == (tick(ts=10**12), "")
    assert admit(Rules(Ticker, max_future_ms=None), SUBJECT, data, stored_ns=1_000_000) == (tick(ts=10**12), "")


class Stamped(msgspec.Struct, frozen=True):
    ts: Any = None


def test_only_an_integer_ts_is_checked_for_the_future() -> None:
    rules = Rules(Stamped, route=None, max_future_ms=0)
    assert admit(rules, "s", b'{"ts": 5.0}', stored_ns=1_000_000) == (Stamped(5.0), "")
    assert admit(rules, "s", b'{"ts": "99999"}', stored_ns=1_000_000) == (Stamped("99999"), "")
    assert admit(rules, "s", b"{}", stored_ns=1_000_000) == (Stamped(None), "")
    assert admit(rules, "s", b'{"ts": 2}', stored_ns=1_000_000) == (None, "dated 1 ms after it was stored (at most 0 ms allowed)")
    assert admit(rules, "s", b'{"ts": 1}', stored_ns=1_000_000) == (Stamped(1), "")


class Timeless(msgspec.Struct, frozen=True):
    x: int = 0


def test_an_input_without_a_time_is_not_checked_for_the_future() -> None:
    assert admit(Rules(Timeless, route=None, max_future_ms=0), "s", b'{"x": 3}', stored_ns=1_000_000) == (Timeless(3), "")


# ----------------------------------------------------------------------------- addressing


def test_outputs_are_addressed_in_order_with_their_ids() -> None:
    a, b = alert(1), alert(2, instance="other")
    assert address(Rules(Ticker, ALERTS), [a, b]) == [
        Outgoing("ops.test.sum.alert", encode(a), "a1", a),
        Outgoing("ops.test.other.alert", encode(b), "a2", b),
    ]
    assert address(Rules(Ticker, ALERTS), []) == []


def test_an_output_without_a_subject_is_refused() -> None:
    with pytest.raises(OutputRefused) as info:
        address(Rules(Ticker), [alert(1), object()])
    assert str(info.value) == "output object has no valid subject: no subject for object"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_output_whose_body_names_no_valid_subject_is_refused() -> None:
    with pytest.raises(OutputRefused) as info:
        address(Rules(Ticker), [tick(symbol="BTCUSDT")])
    assert str(info.value) == "output Ticker has no valid subject: not a unified symbol (BASE/QUOTE[:SETTLE]): 'BTCUSDT'"


def test_an_undeclared_output_is_refused() -> None:
    with pytest.raises(OutputRefused) as info:
        address(Rules(Ticker, ALERTS), [alert(1), tick()])
    assert str(info.value) == f"output subject {SUBJECT} is not declared"


def test_an_output_must_leave_a_kilobyte_for_its_headers_under_the_servers_limit() -> None:
    big = alert(1, message="x" * 5_000)
    size = len(encode(big))
    assert address(Rules(Ticker, ALERTS, max_payload=size + 1024), [big])[0].payload == encode(big)
    with pytest.raises(OutputRefused) as info:
        address(Rules(Ticker, ALERTS, max_payload=size + 1023), [big])
    assert str(info.value) == f"output RiskAlert of {size} bytes exceeds the server's limit"


# ----------------------------------------------------------------------------- one step


class Recording:
    """Sums prices; last=3 rejects, last=4 fails, last=5 answers with an undeclared output,
    every even count answers with an alert."""

    def __init__(self) -> None:
        self.seen: list[Inbound[Ticker]] = []

    def initial_state(self) -> int:
        return 0

    def step(self, state: int, inbound: Inbound[Ticker]) -> tuple[int, Sequence[Any]]:
        self.seen.append(inbound)
        last = int(inbound.event.last)
        if last == 3:
            raise InputRejected("three is refused")
        if last == 4:
            raise KeyError("four")
        if last == 5:
            return state + last, [tick()]
        new = state + last
        return new, ([alert(new)] if last % 2 == 0 else [])


def test_a_step_sees_the_input_where_it_sits_and_returns_its_addressed_outputs() -> None:
    core = Recording()
    rules = Rules(Ticker, ALERTS)
    state, outs, reason = apply_input(core, 10, rules, 42, SUBJECT, encode(tick(2, ts=7)), 7_000_000)
    assert (state, outs, reason) == (12, [Outgoing("ops.test.sum.alert", encode(alert(12)), "a12", alert(12))], "")
    assert core.seen == [Inbound(42, SUBJECT, tick(2, ts=7), 7_000_000, 1)]


def test_a_step_without_outputs_returns_none() -> None:
    core = Recording()
    assert apply_input(core, 10, Rules(Ticker, ALERTS), 1, SUBJECT, encode(tick(1))) == (11, [], "")
    assert core.seen == [Inbound(1, SUBJECT, tick(1), 0, 1)]


def test_an_input_that_is_not_admitted_never_reaches_the_core() -> None:
    core = Recording()
    assert apply_input(core, 10, Rules(Ticker), 1, SUBJECT, b"[]") == (10, [], "undecodable input: Expected `object`, got `array`")
    data = encode(tick(1, ts=10**9))
    assert apply_input(core, 10, Rules(Ticker), 1, SUBJECT, data, 1_000_000) == (
        10,
        [],
        "dated 999999999 ms after it was stored (at most 5000 ms allowed)",
    )
    assert core.seen == []


def test_a_refusal_or_a_failure_of_the_core_leaves_the_state_and_says_why() -> None:
    core, rules = Recording(), Rules(Ticker, ALERTS)
    assert apply_input(core, 10, rules, 1, SUBJECT, encode(tick(3))) == (10, [], "rejected by the core: three is refused")
    assert apply_input(core, 10, rules, 2, SUBJECT, encode(tick(4))) == (10, [], "rejected by the core: KeyError: 'four'")


def test_an_output_that_cannot_be_addressed_dead_letters_its_input_and_leaves_the_state() -> None:
    core = Recording()
    assert apply_input(core, 10, Rules(Ticker, ALERTS), 1, SUBJECT, encode(tick(5))) == (
        10,
        [],
        f"rejected by the core: OutputRefused: output subject {SUBJECT} is not declared",
    )


# ----------------------------------------------------------------------------- folds


async def batches_of(*batches: list[StoredMsg]) -> AsyncIterator[list[StoredMsg]]:
    for batch in batches:
        yield batch


async def test_a_fold_returns_the_state_the_last_sequence_and_the_count() -> None:
    msgs = [stored(10 + i, tick(p)) for i, p in enumerate([1, 2, 3, 1])]
    state, last, count = await fold_stream(Recording(), 0, batches_of(msgs[:3], msgs[3:]), Rules(Ticker, ALERTS))
    assert (state, last, count) == (4, 13, 4)


async def test_a_fold_of_nothing_changes_nothing() -> None:
    assert await fold_stream(Recording(), 7, batches_of(), Rules(Ticker)) == (7, 0, 0)


async def test_a_fold_reports_each_input_with_outputs_or_a_reason_and_the_running_count() -> None:
    msgs = [
        stored(1, tick(1)),  # no outputs: not reported
        stored(2, tick(2)),  # an alert
        stored(3, tick(3)),  # refused
        stored(4, tick(1, ts=10**9), ts_ns=1_000_000),  # from the future (the store time is used)
        stored(5, tick(1)),
    ]
    steps: list[tuple[int, int, list[Outgoing], str]] = []
    counts: list[int] = []
    core = Recording()
    state, last, count = await fold_stream(
        core,
        0,
        batches_of(msgs[:2], msgs[2:4], msgs[4:]),
        Rules(Ticker, ALERTS),
        on_step=lambda m, s, outs, reason: steps.append((m.seq, s, outs, reason)),
        on_batch=counts.append,
    )
    assert (state, last, count) == (4, 5, 5)
    assert steps == [
        (2, 3, [Outgoing("ops.test.sum.alert", encode(alert(3)), "a3", alert(3))], ""),
        (3, 3, [], "rejected by the core: three is refused"),
        (4, 3, [], "dated 999999999 ms after it was stored (at most 5000 ms allowed)"),
    ]
    assert counts == [2, 4, 5]
    assert [(i.seq, i.stored_ns) for i in core.seen] == [(1, 0), (2, 0), (3, 0), (5, 0)]


async def test_a_fold_without_callbacks_just_folds() -> None:
    msgs = [stored(1, tick(2)), stored(2, tick(3)), stored(3, b"junk")]
    assert await fold_stream(Recording(), 0, batches_of(msgs), Rules(Ticker, ALERTS)) == (2, 3, 3)
