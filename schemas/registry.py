"""The strategy instance registry: what should run, and every change to it as an event.

The `registry` bucket holds one `InstanceRecord` per instance under `instance.<kind>.<id>`
(the bucket is the truth); every write is also a `RegistryChange` on
`ops.registry.<kind>.<id>`, whose id is the bucket revision it announces, so the set of
instances at any moment replays from the OPS stream (docs/adr/0025).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

from schemas.account import ZERO
from schemas.base import Message

Desired = Literal["running", "paused", "removed"]
RemovePolicy = Literal["cancel", "flatten"]
# Where a removal is: `stopping` (the instance's consumer is being stopped), `canceling` (its
# orders, found at the venue by client id prefix), `flattening` (reduce-only orders until the
# instance's share of the venue's position is closed), `done`.
RemovalPhase = Literal["", "stopping", "canceling", "flattening", "done"]
InstanceKind = Literal["grid"]
Action = Literal["seed", "add", "pause", "resume", "remove", "progress", "removed"]


class InstanceRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: InstanceKind
    instance: str
    venue: str
    account: str
    symbol: str
    params: dict[str, Any]  # the instance's whole config in its own schema (a grid's GridConfig)
    desired: Desired = "running"
    source: str  # "config" (seeded from the config file) or "sqt" (added at runtime)
    created_by: str
    created_ts: int
    changed_by: str
    changed_ts: int
    policy: RemovePolicy | None = None  # set with desired = "removed"
    phase: RemovalPhase = ""
    flatten_attempt: int = 0  # the number in the client id of the next flattening order
    left_position: Decimal = ZERO  # what the venue still held for it when the removal ended
    note: str = ""  # the last thing the removal said (e.g. why it waits)


class RegistryChange(Message, frozen=True, kw_only=True, tag="registry_change"):
    """A write to the registry bucket: who did what, and the record as written."""

    kind: InstanceKind
    instance: str
    action: Action
    by: str
    revision: int  # the bucket revision of `record`
    record: InstanceRecord
    ts: int


def key(kind: str, instance: str) -> str:
    return f"instance.{kind}.{instance}"
