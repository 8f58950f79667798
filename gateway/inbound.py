"""What a browser may send, checked before anything is done with it (docs/gateway-protocol.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.view import STREAMS

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Subscribe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: Name
    symbol: Name


class Resume(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: Name
    symbol: Name
    after: dict[str, Seq]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.after) - set(STREAMS))
        if unknown:
            raise ValueError(f"`after` names unknown streams {unknown} (known: {', '.join(STREAMS)})")


class Ping(msgspec.Struct, frozen=True):
    pass


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator's instruction for the strategies on a market (one instance, or all of them)."""

    action: Literal["pause", "resume", "cancel_all"]
    venue: Name
    symbol: Name
    instance: Name | None = None


Param = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Value = Annotated[str, msgspec.Meta(max_length=64)]


class RegistryOp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator's change to the instance registry, as `sqt grid` makes it: `add` a grid (its
    parameters as `sqt grid add --set` takes them), `pause`, `resume`, or `remove` with a policy."""

    op: Literal["add", "pause", "resume", "remove"]
    instance: Name
    symbol: Name | None = None
    venue: Name = "sim"
    account: Name = "main"
    params: Annotated[dict[Param, Value], msgspec.Meta(max_length=32)] = {}
    policy: Literal["cancel", "flatten"] | None = None

    def __post_init__(self) -> None:
        if self.op == "add" and self.symbol is None:
            raise ValueError("`symbol` is needed to add a grid")
        if self.op == "remove" and self.policy is None:
            raise ValueError("`policy` (cancel or flatten) is needed to remove a grid")
        fixed = {"instance", "venue", "account", "symbol"} & set(self.params)
        if fixed:
            raise ValueError(f"`params` may not set {', '.join(sorted(fixed))}: they are fields of the frame")


class PlaybackControl(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: Literal["pause", "resume", "step"]


ClientFrame = Subscribe | Resume | Ping | Control | RegistryOp | PlaybackControl


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: Literal["subscribe", "resume", "ping", "control", "registry", "playback"]
    data: msgspec.Raw = msgspec.Raw(b"null")


_envelope = msgspec.json.Decoder(_Envelope)
_BODIES: dict[str, type[Subscribe] | type[Resume] | type[Control] | type[RegistryOp] | type[PlaybackControl]] = {
    "subscribe": Subscribe,
    "resume": Resume,
    "control": Control,
    "registry": RegistryOp,
    "playback": PlaybackControl,
}


def parse(data: str | bytes) -> ClientFrame:
    """The frame, or msgspec.DecodeError / ValueError saying what is wrong with it."""
    envelope = _envelope.decode(data)
    body = _BODIES.get(envelope.type)
    if body is None:
        return Ping()
    return msgspec.json.decode(envelope.data, type=body)


class RateLimit:
    """A token bucket that refuses instead of waiting (a browser's frames, not our venue calls)."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.rate, self.burst = per_second, float(burst)
        self.tokens = float(burst)
        self.at: float | None = None

    def take(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
