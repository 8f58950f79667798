"""`sqt auth`: the NATS users' passwords (`init`) and what each role may do (`roles`)."""

from __future__ import annotations

import argparse
import sys

from bus.auth import ROLES, init_credentials
from cli.config import Config


def add_parser(sub: argparse._SubParsersAction) -> None:
    auth = sub.add_parser("auth", help="NATS users: one per role, least privilege (bus/auth.py)")
    actions = auth.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="write a password for every role into the credentials file")
    init.add_argument("--force", action="store_true", help="replace the passwords (restart the server and every component after)")
    actions.add_parser("roles", help="the roles and the subjects each may publish and subscribe to")


def auth_command(config: Config, args: argparse.Namespace) -> int:
    path = config.credentials_path
    if args.action == "init":
        if init_credentials(path, force=args.force):
            print(f"wrote a password for each of {len(ROLES)} roles to {path} (mode 0600; never commit it)")
            return 0
        print(f"sqt: {path} exists; `sqt auth init --force` replaces the passwords", file=sys.stderr)
        return 1
    for role in ROLES.values():
        print(f"{role.name}: {role.purpose}")
        if role.everything:
            print("  everything")
            continue
        print(f"  publish:   {', '.join(role.publish)}")
        print(f"  subscribe: {', '.join(role.subscribe_allow())}")
    return 0
