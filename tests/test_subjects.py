"""The subject grammar: builders, parser, and reversible symbol tokens."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import subjects
from schemas.subjects import SubjectError, parse, symbol_from_token, symbol_token
from testkit import events as factories

# NATS subject tokens may not contain these (or be empty).
FORBIDDEN = re.compile(r"[.*>\s]")

part = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and ":" not in s)
settle = st.text(min_size=1, max_size=20)


@pytest.mark.parametrize(
    "symbol, token",
    [
        ("BTC/USDT", "BTC-USDT"),
        ("BTC/USDT:USDT", "BTC-USDT-USDT"),
        ("ETH/USD:ETH-240329", "ETH-USD-ETH-240329"),
        ("1000SHIB/USDT:USDT", "1000SHIB-USDT-USDT"),
    ],
)
def test_symbol_tokens_read_like_the_design(symbol: str, token: str) -> None:
    assert symbol_token(symbol) == token
    assert symbol_from_token(token) == symbol


@given(base=part, quote=part, settle_part=st.one_of(st.none(), settle))
def test_symbol_token_round_trips_and_is_a_valid_subject_token(base: str, quote: str, settle_part: str | None) -> None:
    symbol = f"{base}/{quote}" + (f":{settle_part}" if settle_part is not None else "")
    token = symbol_token(symbol)
    assert token and not FORBIDDEN.search(token)
    assert symbol_from_token(token) == symbol


@given(a=part, b=part)
def test_different_symbols_get_different_tokens(a: str, b: str) -> None:
    if a != b:
        assert symbol_token(f"{a}/USDT") != symbol_token(f"{b}/USDT")


@pytest.mark.parametrize("bad", ["BTCUSDT", "/USDT", "BTC/", "BTC/USDT:", ""])
def test_non_unified_symbols_are_refused(bad: str) -> None:
    with pytest.raises(SubjectError):
        symbol_token(bad)


def test_builders_and_parser_agree() -> None:
    s = subjects.md("sim", "BTC/USDT:USDT", "ticker")
    assert s == "md.sim.BTC-USDT-USDT.ticker"
    p = parse(s)
    assert (p.family, p.venue, p.symbol, p.kind) == ("md", "sim", "BTC/USDT:USDT", "ticker")

    s = subjects.acct("binanceusdm", "main", "ETH/USDT:USDT", "order")
    p = parse(s)
    assert (p.family, p.venue, p.account, p.symbol, p.kind) == ("acct", "binanceusdm", "main", "ETH/USDT:USDT", "order")

    p = parse(subjects.balance("sim", "main", "USDT"))
    assert (p.kind, p.asset) == ("balance", "USDT")

    p = parse(subjects.cmd("sim", "main", "BTC/USDT", "cancel_all"))
    assert (p.family, p.kind, p.symbol) == ("cmd", "cancel_all", "BTC/USDT")

    p = parse(subjects.ops("grid", "btc-neutral", "state"))
    assert (p.component, p.instance, p.kind) == ("grid", "btc-neutral", "state")

    assert parse(subjects.dlq("md.sim.BTC-USDT.ticker")).original == "md.sim.BTC-USDT.ticker"


def test_wildcards_build_subscription_patterns() -> None:
    assert subjects.md("sim", "*", "ticker") == "md.sim.*.ticker"
    assert subjects.acct("sim", "main", "BTC/USDT:USDT", ">") == "acct.sim.main.BTC-USDT-USDT.>"


@pytest.mark.parametrize(
    "call",
    [
        lambda: subjects.md("Sim Venue", "BTC/USDT", "ticker"),
        lambda: subjects.md("sim", "BTC/USDT", "orderbook"),
        lambda: subjects.acct("sim", "main.x", "BTC/USDT", "order"),
        lambda: subjects.cmd("sim", "main", "BTC/USDT", "amend"),
        lambda: parse("md.sim.ticker"),
        lambda: parse("nope.a.b.c"),
        lambda: parse("md.sim.BTCUSDT.ticker"),
    ],
)
def test_grammar_violations_are_refused_with_a_reason(call) -> None:
    with pytest.raises(SubjectError, match=r".+"):
        call()


def test_every_message_type_has_exactly_one_subject() -> None:
    assert subjects.subject_of(factories.ticker()) == "md.sim.BTC-USDT-USDT.ticker"
    assert subjects.subject_of(factories.candle()) == "md.sim.BTC-USDT-USDT.candle1m"
    assert subjects.subject_of(factories.order_update()) == "acct.sim.main.BTC-USDT-USDT.order"
    assert subjects.subject_of(factories.place()) == "cmd.sim.main.BTC-USDT-USDT.place"
