"""Settings of the gateway (the `[gateway]` table)."""

from __future__ import annotations

import msgspec


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"  # browsers on this machine only, until auth is configured
    port: int = 8081
    auth: str = "off"  # off | tokens | jwt (secrets from SQT_GATEWAY_TOKENS / SQT_GATEWAY_JWT_SECRET)
    # Origins a browser's WebSocket may come from; empty: the gateway's own (the Host it was asked by).
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    control_wait: float = 5.0  # seconds an operator's control waits for the strategy to report
    # What a starting gateway reads back from the streams (it keeps no state of its own):
    candle_minutes: int = 1440  # 1m candles per market kept in memory (a day)
    market_lookback_minutes: int = 180  # candles read back on start (history needs 100)
    account_lookback_minutes: int = 1440  # order, fill, position and balance events read back
    # Fan-out: frames a client may have waiting; past half of it its klines are conflated,
    # at the limit it is closed (1013, "too slow").
    client_queue: int = 2000
    resume_frames: int = 5000  # recent frames kept per market for `resume`
    fills_kept: int = 500  # recent fills per market (REST and the first screen)
    # Inbound client frames.
    max_frame_bytes: int = 4096
    frames_per_second: float = 20.0
    frame_burst: int = 40
    idle_timeout: float = 120.0  # seconds without any client frame (pings included) before closing

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("`port` must be 0-65535")
        for name in (
            "candle_minutes",
            "market_lookback_minutes",
            "account_lookback_minutes",
            "fills_kept",
            "max_frame_bytes",
            "frame_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if self.client_queue < 10:
            raise ValueError("`client_queue` must be at least 10")
        if self.resume_frames < 1:
            raise ValueError("`resume_frames` must be at least 1")
        if self.auth not in ("off", "tokens", "jwt"):
            raise ValueError("`auth` must be off, tokens or jwt")
        if self.frames_per_second <= 0 or self.idle_timeout <= 0 or self.control_wait <= 0:
            raise ValueError("`frames_per_second`, `idle_timeout` and `control_wait` must be positive")
