"""`--set KEY=VALUE`: parameters changed on the command line, validated by the struct's own schema."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from cli.config import ConfigError

T = TypeVar("T")


def with_sets(base: dict[str, Any], overrides: Iterable[str], struct: type[T], fixed: tuple[str, ...] = ()) -> T:
    """`base` (a struct's fields) with each KEY=VALUE applied, converted to `struct`; a
    ConfigError names the key (unknown, fixed, or a value the struct refuses)."""
    fields = dict(base)
    names = [f for f in struct.__struct_fields__ if f not in fixed]  # type: ignore[attr-defined]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
        fields[key] = value
    try:
        return msgspec.convert(fields, struct, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"--set: {exc}") from None
