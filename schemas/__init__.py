"""Event and command types, the subject grammar, deterministic ids and the codec."""

from schemas.account import Balance, BorrowInterest, Fill, FundingPayment, Liquidation, OrderUpdate, Position
from schemas.base import Message
from schemas.codec import ALL_TYPES, AnyMessage, DecodeError, decode, encode
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from schemas.ops import (
    BreakerChange,
    ControlCommand,
    FundingSpread,
    GridLevel,
    ReconciliationFinding,
    RiskAlert,
    StrategyState,
    VenueSnapshot,
)
from schemas.subjects import subject_of

__all__ = [
    "ALL_TYPES",
    "AnyMessage",
    "Balance",
    "BorrowInterest",
    "Liquidation",
    "BreakerChange",
    "CancelAll",
    "CancelOrder",
    "Candle",
    "ControlCommand",
    "DecodeError",
    "Fill",
    "FundingPayment",
    "FundingRate",
    "FundingSpread",
    "GapMarker",
    "GridLevel",
    "Message",
    "OrderUpdate",
    "PlaceOrder",
    "Position",
    "ReconciliationFinding",
    "RiskAlert",
    "StrategyState",
    "Ticker",
    "Trade",
    "VenueSnapshot",
    "decode",
    "encode",
    "subject_of",
]
