"""The core contract: what a pure core sees, what it returns, and how one input is admitted.

A consumer's logic is a pure core, `step(state, inbound) -> (state, outputs)`: no clock, no
I/O, no randomness (DESIGN.md "Consumers", rule 2). This module is everything a core, a live
runtime and an offline replay share, and it imports nothing from NATS: a core's purity shows
in its imports, and live processing and every replay go through the same `apply_input`, so
they cannot disagree about an input.

One input is admitted in three steps, each of which can dead-letter it with a reason:
1. it decodes into its declared type (msgspec validates every field);
2. the subject is the authority: a message whose body names another venue, account or symbol
   than the subject it arrived on is refused, never acted on under the body's names;
3. it is not dated further after the moment JetStream stored it than `max_future_ms` (a
   ticker from the future would freeze every later one out).
Then the core steps, and every output is addressed (its subject built from its body, checked
against the declared outputs, encoded, and sized against the server's limit) before anything
is published: an output that cannot be addressed dead-letters the input that produced it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec

from schemas.codec import decoder, encode
from schemas.subjects import SubjectError, matcher, subject_of

S = TypeVar("S")
E = TypeVar("E")

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024  # the embedded server's limit (bus/embedded.py)
DEFAULT_MAX_FUTURE_MS = 5_000


class Inbound(NamedTuple, Generic[E]):
    """One input as a core or handler sees it: the event and where it sits in the input stream.

    A tuple: one is built per input, and replays build hundreds of thousands a second."""

    seq: int
    subject: str
    event: E
    stored_ns: int = 0  # when JetStream stored it (server clock): for time-to-live checks, not decisions
    # 2 when an earlier session may already have handled this input (an effectful handler
    # then settles what it did before doing it again); pure cores never look at it.
    delivered: int = 1


class StoredMsg(NamedTuple):
    """One message as stored in a stream (a tuple: replays build hundreds of thousands)."""

    seq: int
    subject: str
    data: bytes
    raw_headers: bytes  # the NATS/1.0 header block, unparsed (most readers never need it)
    ts_ns: int  # when the stream stored it (server clock)

    def headers(self) -> dict[str, str]:
        return parse_headers(self.raw_headers)

    def header(self, name: str) -> str | None:
        return self.headers().get(name)


def parse_headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    if not raw:
        return out
    for line in raw.split(b"\r\n")[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b":")
        if sep:
            out[key.decode(errors="replace").strip()] = value.decode(errors="replace").strip()
    return out


class Core(Protocol[S, E]):
    def initial_state(self) -> S: ...

    def step(self, state: S, inbound: Inbound[E]) -> tuple[S, Sequence[Any]]: ...


class InputRejected(ValueError):
    """Raised by a core for an input it refuses (the reason goes to the DLQ; state unchanged)."""


class Outgoing(NamedTuple):
    """An output ready to publish: subject, encoded payload, deduplication id, and the message."""

    subject: str
    payload: bytes
    msg_id: str | None
    message: Any


@dataclass(frozen=True)
class Rules:
    """How one consumer admits inputs and addresses outputs (built from its declaration)."""

    input_type: Any
    outputs: tuple[str, ...] = ()  # subject patterns it may publish (NATS wildcards)
    route: Callable[[Any], str] | None = subject_of  # the subject an input must have arrived on
    max_future_ms: int | None = DEFAULT_MAX_FUTURE_MS
    max_payload: int = DEFAULT_MAX_PAYLOAD
    decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)
    declared: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    future_ns: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", decoder(self.input_type))
        object.__setattr__(self, "declared", matcher(self.outputs))
        object.__setattr__(self, "future_ns", None if self.max_future_ms is None else self.max_future_ms * 1_000_000)


def admit(rules: Rules, subject: str, data: bytes, stored_ns: int = 0) -> tuple[Any, str]:
    """The decoded input, or the reason it is dead-lettered."""
    try:
        event = rules.decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        return None, f"undecodable input: {exc}"
    route = rules.route
    if route is not None:
        try:
            expected = route(event)
        except (SubjectError, ValueError) as exc:
            return None, f"the body does not name a valid subject: {exc}"
        if expected != subject:
            return None, f"the body says {expected}, the subject is {subject}: the subject is the authority"
    future_ns = rules.future_ns
    if future_ns is not None and stored_ns:
        ts = getattr(event, "ts", None)
        if type(ts) is int and ts * 1_000_000 - stored_ns > future_ns:
            ahead = ts - stored_ns // 1_000_000
            return None, f"dated {ahead} ms after it was stored (at most {rules.max_future_ms} ms allowed)"
    return event, ""


_new_tuple = tuple.__new__
_NOTHING: list[Outgoing] = []  # shared by every input without outputs; never appended to


class OutputRefused(ValueError):
    """An output cannot be published as it is (no subject, undeclared, too large)."""


def address(rules: Rules, outputs: Sequence[Any]) -> list[Outgoing]:
    """Subject, payload and id of every output, or OutputRefused for the first that has none."""
    out: list[Outgoing] = []
    for message in outputs:
        try:
            subject = subject_of(message)
        except (SubjectError, ValueError) as exc:
            raise OutputRefused(f"output {type(message).__name__} has no valid subject: {exc}") from None
        if not rules.declared(subject):
            raise OutputRefused(f"output subject {subject} is not declared")
        payload = encode(message)
        if len(payload) > rules.max_payload - 1024:  # headers (the id) travel in the same frame
            raise OutputRefused(f"output {type(message).__name__} of {len(payload)} bytes exceeds the server's limit")
        out.append(Outgoing(subject, payload, message.id, message))  # every routed type has one
    return out


def apply_input(
    core: Core[S, E], state: S, rules: Rules, seq: int, subject: str, data: bytes, stored_ns: int = 0
) -> tuple[S, list[Outgoing], str]:
    """Admit one input and step the core: (new state, addressed outputs, reason).

    A non-empty reason means the input is dead-lettered and the state is unchanged.
    """
    event, reason = admit(rules, subject, data, stored_ns)
    if reason:
        return state, [], reason
    try:
        # tuple.__new__ rather than Inbound(...): one input each, and the generated __new__ of a
        # NamedTuple is a Python call (measurable in a replay of a million ticks).
        new_state, outputs = core.step(state, _new_tuple(Inbound, (seq, subject, event, stored_ns, 1)))
        addressed = address(rules, outputs) if outputs else _NOTHING
    except InputRejected as exc:
        return state, [], f"rejected by the core: {exc}"
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the consumer
        return state, [], f"rejected by the core: {type(exc).__name__}: {exc}"
    return new_state, addressed, ""


async def fold_stream(
    core: Core[S, E],
    state: S,
    batches: AsyncIterable[list[StoredMsg]],
    rules: Rules,
    on_step: Callable[[StoredMsg, S, list[Outgoing], str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[S, int, int]:
    """Fold stored inputs through a core offline: (state, last seq, inputs folded).

    Used for recovery and for incident replay; `on_step` sees each input that produced outputs
    or was dead-lettered (with the state after it), `on_batch` the running count.
    """
    seq = count = 0
    async for batch in batches:
        for m in batch:
            mseq, subject, data, _headers, ts_ns = m  # unpacked at once: the replay's hot loop
            state, outs, reason = apply_input(core, state, rules, mseq, subject, data, ts_ns)
            if (outs or reason) and on_step is not None:
                on_step(m, state, outs, reason)
        seq = batch[-1].seq
        count += len(batch)
        if on_batch is not None:
            on_batch(count)
    return state, seq, count
