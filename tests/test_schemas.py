"""Message types: tagged JSON with Decimal strings, validation, deterministic ids, JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import msgspec
import pytest

from schemas import ALL_TYPES, AnyMessage, DecodeError, decode, encode, ids
from schemas.codec import json_schemas
from testkit import events as factories


def test_payloads_are_plain_tagged_json_with_decimal_strings() -> None:
    doc = json.loads(encode(factories.ticker("60000.5")))
    assert doc["type"] == "ticker"
    assert doc["last"] == "60000.5"  # a string: no float rounding anywhere
    assert isinstance(doc["ts"], int)
    assert {"id", "venue", "symbol", "ts", "ts_local"} <= doc.keys()


@pytest.mark.parametrize("message", [factories.ticker(), factories.candle(), factories.order_update(), factories.place()])
def test_round_trip_through_the_union_decoder(message) -> None:
    assert decode(encode(message)) == message


def test_every_message_type_is_frozen_tagged_and_has_an_id() -> None:
    tags = set()
    for t in ALL_TYPES:
        cfg = t.__struct_config__
        assert cfg.frozen and cfg.tag_field == "type", t
        with pytest.raises(TypeError):  # keyword-only: no positional construction
            t("an-id")
        assert "id" in t.__struct_fields__, t
        tags.add(cfg.tag)
    assert len(tags) == len(ALL_TYPES)
    assert {
        "candle",
        "ticker",
        "trade",
        "funding_rate",
        "order",
        "fill",
        "position",
        "balance",
        "gap",
        "place_order",
        "cancel_order",
        "cancel_all",
        "strategy_state",
        "risk_alert",
        "breaker",
        "reconciliation",
        "control",
        "venue_snapshot",
    } <= tags


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b'{"type":"ticker","id":"x","venue":"sim","symbol":"B/U","last":"-1","ts":1,"ts_local":1}', "positive"),
        (b'{"type":"ticker","id":"x","venue":"sim","symbol":"B/U","last":"NaN","ts":1,"ts_local":1}', "positive"),
        (b'{"type":"ticker","id":"x","venue":"sim","symbol":"B/U","ts":1,"ts_local":1}', "last"),
        (b'{"type":"ticker","id":"x","venue":"sim","symbol":"B/U","last":"1","ts":"soon","ts_local":1}', "ts"),
        (
            b'{"type":"order","id":"x","venue":"s","account":"a","symbol":"B/U","client_order_id":"c","side":"hold",'
            b'"amount":"1","remaining":"1","status":"open","ts":1,"ts_local":1}',
            "side",
        ),
        (b'{"type":"teleport","id":"x"}', "type"),
        (b"not json", "malformed"),
    ],
)
def test_bad_payloads_fail_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(payload)
    assert fragment in str(err.value)


def test_commands_validate_what_a_venue_would_refuse() -> None:
    with pytest.raises(ValueError, match="amount"):
        factories.place(amount="0")
    with pytest.raises(ValueError, match="client_order_id"):
        factories.place(client_order_id="has-dash")
    with pytest.raises(ValueError, match="client_order_id"):
        factories.place(client_order_id="x" * 33)
    with pytest.raises(msgspec.ValidationError, match="price"):
        decode(
            b'{"type":"place_order","id":"p","venue":"sim","account":"main","symbol":"B/U","client_order_id":"a1",'
            b'"side":"buy","order_type":"limit","amount":"1","origin":"t","ts":1}'
        )


def test_ids_name_the_fact_not_the_publish() -> None:
    a = ids.order_event_id("sim", "main", "c1", "open", Decimal("0.10"))
    b = ids.order_event_id("sim", "main", "c1", "open", Decimal("0.1"))
    assert a == b
    assert a != ids.order_event_id("sim", "main", "c1", "closed", Decimal("0.1"))
    assert ids.content_id("p", {"x": 1}) == ids.content_id("p", {"x": 1}) != ids.content_id("p", {"x": 2})


def test_json_schema_documents_every_type() -> None:
    schema = json_schemas()
    assert set(schema["messages"]) == {t.__struct_config__.tag for t in ALL_TYPES}
    ticker = schema["$defs"]["Ticker"]
    assert ticker["properties"]["last"]["format"] == "decimal"
    assert "last" in ticker["required"]


def test_sqt_schemas_prints_the_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "cli.main", "schemas"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert "place_order" in doc["messages"] and "OrderUpdate" in doc["$defs"]


def test_any_message_union_covers_all_types() -> None:
    for t in ALL_TYPES:
        assert t in AnyMessage.__args__
