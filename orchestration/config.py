"""`[hosting]`: how `sqt up` puts the registry's grid instances into processes."""

from __future__ import annotations

import msgspec

MAX_SHARDS = 64


class HostingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # 0: one process per instance (`sqt run grid --instance ID`); M > 0: M processes, each hosting
    # the instances whose id hashes to its shard (`sqt run grids --shard N/M`). docs/adr/0025.
    grid_shards: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.grid_shards <= MAX_SHARDS:
            raise ValueError(f"`hosting.grid_shards` must be 0 (a process per instance) to {MAX_SHARDS}, got {self.grid_shards}")
