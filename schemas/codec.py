"""The one codec: msgspec JSON, Decimals as strings, tagged unions decoded in one pass."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar, Union

import msgspec

from schemas.account import Balance, BorrowInterest, Fill, FundingPayment, Liquidation, OrderUpdate, Position
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from schemas.ops import (
    BreakerChange,
    Clock,
    ControlCommand,
    FundingSpread,
    ReconciliationFinding,
    RiskAlert,
    StrategyState,
    VenueSnapshot,
)
from schemas.registry import RegistryChange

T = TypeVar("T")

MARKET_TYPES: tuple[type[msgspec.Struct], ...] = (Candle, Ticker, Trade, FundingRate, GapMarker)
ACCOUNT_TYPES: tuple[type[msgspec.Struct], ...] = (OrderUpdate, Fill, Position, Balance, BorrowInterest, Liquidation, FundingPayment)
COMMAND_TYPES: tuple[type[msgspec.Struct], ...] = (PlaceOrder, CancelOrder, CancelAll)
OPS_TYPES: tuple[type[msgspec.Struct], ...] = (
    StrategyState,
    RiskAlert,
    BreakerChange,
    ReconciliationFinding,
    ControlCommand,
    VenueSnapshot,
    Clock,
    FundingSpread,
    RegistryChange,
)
ALL_TYPES: tuple[type[msgspec.Struct], ...] = MARKET_TYPES + ACCOUNT_TYPES + COMMAND_TYPES + OPS_TYPES

AnyMessage: Any = Union[ALL_TYPES]  # a runtime union, used as a value (a decoder's type)

DecodeError = msgspec.DecodeError  # ValidationError is a subclass: both mean "bad input"

_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


@lru_cache(maxsize=None)
def decoder(message_type: Any) -> msgspec.json.Decoder[Any]:
    """A cached decoder for a type or a union of tagged types."""
    return msgspec.json.Decoder(message_type)


def decode(data: bytes, message_type: Any = AnyMessage) -> Any:
    """Decode and validate; raises DecodeError (or its ValidationError) with the reason."""
    return decoder(message_type).decode(data)


def union(*types: type) -> Any:
    """The decodable union of some message types (a single type stays itself)."""
    return types[0] if len(types) == 1 else Union[types]


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every message type, keyed by tag; generated from the code itself."""
    refs, components = msgspec.json.schema_components(ALL_TYPES, ref_template="#/$defs/{name}")
    tags = [t.__struct_config__.tag for t in ALL_TYPES]
    return {"messages": dict(zip(tags, refs)), "$defs": components}
