"""Backtests that run the live code: the same strategy core and the same simulated exchange's
matching engine as live trading, in one process, over recorded candles (docs/adr/0021-backtest.md)."""
