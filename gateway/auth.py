"""Who is asking: tokens (static, or JWTs signed with a shared secret) and their roles.

Secrets come from the environment only, never from the config file:
- SQT_GATEWAY_TOKENS: `name=role:token,...` (role `viewer` or `operator`), for `auth = "tokens"`;
- SQT_GATEWAY_JWT_SECRET: the HS256 secret, for `auth = "jwt"` (claims `sub` and `role`; `exp`
  is checked when present).
With `auth = "off"` (the default, and the gateway bound to 127.0.0.1) everyone is a viewer:
operator controls need a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import jwt

from bus.secrets import SECRET_VARIABLES as SECRET_VARIABLES  # re-exported: cli/config.py leaves these alone

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


class AuthConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role


ANONYMOUS = Identity("anonymous", "viewer")


class Auth:
    def __init__(self, mode: str, tokens: Mapping[str, Identity] | None = None, jwt_secret: str | None = None) -> None:
        if mode not in ("off", "tokens", "jwt"):
            raise AuthConfigError(f"`gateway.auth` must be off, tokens or jwt, not {mode!r}")
        if mode == "tokens" and not tokens:
            raise AuthConfigError("`gateway.auth` is tokens but SQT_GATEWAY_TOKENS names none")
        if mode == "jwt" and not jwt_secret:
            raise AuthConfigError("`gateway.auth` is jwt but SQT_GATEWAY_JWT_SECRET is not set")
        self.mode = mode
        self._tokens = dict(tokens or {})
        self._secret = jwt_secret

    @classmethod
    def from_env(cls, mode: str, environ: Mapping[str, str]) -> Auth:
        return cls(mode, parse_tokens(environ.get("SQT_GATEWAY_TOKENS", "")), environ.get("SQT_GATEWAY_JWT_SECRET") or None)

    @property
    def required(self) -> bool:
        return self.mode != "off"

    def identify(self, token: str | None) -> Identity | None:
        """The identity a token proves (ANONYMOUS when auth is off); None when it proves nothing."""
        if self.mode == "off":
            return ANONYMOUS
        if not token:
            return None
        if self.mode == "tokens":
            for known, identity in self._tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):  # no timing hint
                    return identity
            return None
        assert self._secret is not None  # checked in __init__
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["sub", "role"]})
        except jwt.PyJWTError:
            return None
        role, name = claims.get("role"), claims.get("sub")
        if role not in ROLES or not isinstance(name, str) or not name:
            return None
        return Identity(name, role)


def parse_tokens(text: str) -> dict[str, Identity]:
    """`alice=operator:s3cret,bob=viewer:t0ken` -> token -> identity."""
    out: dict[str, Identity] = {}
    for i, item in enumerate(filter(None, (part.strip() for part in text.split(",")))):
        name, sep, rest = item.partition("=")
        role, sep2, token = rest.partition(":")
        if not (sep and sep2 and name and token):
            raise AuthConfigError(f"SQT_GATEWAY_TOKENS entry {i + 1} is not name=role:token")
        if role not in ROLES:
            raise AuthConfigError(f"SQT_GATEWAY_TOKENS entry {i + 1} ({name}): role must be viewer or operator")
        if len(token) < 16:
            raise AuthConfigError(f"SQT_GATEWAY_TOKENS entry {i + 1} ({name}): a token must be at least 16 characters")
        out[token] = Identity(name, role)
    return out
