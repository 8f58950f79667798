"""Counter-based random draws: the draw number k of a stream is a pure function of (seed, symbol,
stream, k), so whoever computes it (the price source, the engine, a replay, a restarted process)
gets the same number, with no generator state to save or restore."""

from __future__ import annotations

import hashlib
import math
import struct


def uniforms(seed: int, symbol: str, tag: str, step: int) -> tuple[float, float]:
    digest = hashlib.blake2b(f"{seed}|{symbol}|{tag}|{step}".encode(), digest_size=16).digest()
    a, b = struct.unpack("<QQ", digest)
    return (a + 1) / 2.0**64, (b + 1) / 2.0**64  # both in (0, 1]


def normal(seed: int, symbol: str, tag: str, step: int) -> tuple[float, float]:
    """A standard normal draw (Box-Muller) and the uniform it used for its angle (a second,
    independent-enough number for the same step: prices use it for the volume)."""
    u1, u2 = uniforms(seed, symbol, tag, step)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2), u2
