"""The simulated exchange's settings: strict defaults, and a bad value named by its field."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from venues.sim.config import SimConfig, SimMarket
from venues.sim.prices import price_source

ROOT = Path(__file__).resolve().parent.parent
MARKET: dict[str, Any] = dict(symbol="BTC/USDT:USDT", tick_size="0.1", lot_size="0.001", min_amount="0.001", start_price="100")


def test_the_shipped_config_is_a_valid_sim_config() -> None:
    raw = tomllib.loads((ROOT / "configs" / "sqt.toml").read_text())["sim"]
    config = msgspec.convert(raw, SimConfig, strict=False)
    assert config.markets[0].depth == Decimal("5")  # unset: ten prints' volume, in whole lots


def test_every_spot_base_has_a_finite_borrow_limit_by_default() -> None:
    limits = SimConfig().borrow_limits()
    assert limits == {"BTC": Decimal("0.83333")}  # 50,000 USDT at 60,000, in lots of 0.00001
    assert all(limit.is_finite() for limit in limits.values())


@pytest.mark.parametrize(
    ("market", "field"),
    [
        ({"book_depth": "0.0015"}, "book_depth"),
        ({"book_depth": "0"}, "book_depth"),
        ({"book_step_ticks": 0}, "book_step_ticks"),
        ({"book_levels": 0}, "book_levels"),
        ({"symbol": "BTCUSDT"}, "symbol"),
        ({"taker_fee": "NaN"}, "taker_fee"),
        ({"tick_size": "Infinity"}, "tick_size"),
    ],
)
def test_a_bad_market_setting_names_its_field(market: dict[str, Any], field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"`{field}`"):
        msgspec.convert(MARKET | market, SimMarket, strict=False)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"maintenance_margin_rate": "0.2"}, "maintenance_margin_rate"),  # x leverage 5 = 1
        ({"liquidation_fee_rate": "-0.01"}, "liquidation_fee_rate"),
        ({"borrow_limit": {"BTC": "-1"}}, "borrow_limit.BTC"),
        ({"borrow_rate": {"BTC": "NaN"}}, "borrow_rate.BTC"),
        ({"default_borrow_value": "0"}, "default_borrow_value"),
        ({"spot_margin_ratio": "0"}, "spot_margin_ratio"),
        ({"orders_kept": 0}, "orders_kept"),
        ({"accounts": {"Main Account": {"USDT": "1"}}}, "accounts.Main Account"),
        ({"accounts": {"main": {"USDT": "Infinity"}}}, "accounts.main.USDT"),
        ({"markets": [MARKET, MARKET]}, "markets"),
    ],
)
def test_a_bad_exchange_setting_names_its_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"`{field}"):
        msgspec.convert(settings, SimConfig, strict=False)


def test_a_candle_file_row_the_journal_would_refuse_is_named_when_the_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    path.write_text("timestamp,open,high,low,close,volume\n1,100,101,99,100,5\n2,100,99,101,100,5\n3,100,101,99,100,5\n")
    with pytest.raises(ValueError, match=r"candles.csv:3: .*`low` 101 is above `high` 99"):
        price_source(SimConfig(prices="csv", csv_path=str(path)))
