"""`sqt backup` / `sqt restore`: every JetStream stream and KV bucket to a directory and back.

    sqt backup /var/backups/sqt-2024-05-01                 every stream and bucket on the server
    sqt backup DIR --streams ACCOUNT,checkpoints           only these (a bucket by its name or KV_<name>)
    sqt restore DIR                                        into a server that has none of them
    sqt restore DIR --streams ACCOUNT --replace            delete the server's ACCOUNT first

It uses JetStream's snapshot API (bus/backup.py): a restored stream has the same sequences,
times, headers and gaps as the one backed up. Refusals (a non-empty directory, a stream that
is not there or is in the way) exit 2; failures (server, damaged file) exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from bus.backup import BackupFailed, Refused, backup, check_target, read_manifest, restore
from bus.connection import connect
from bus.errors import Unreachable
from cli.config import Config

EXIT_USAGE = 2
EXIT_FAILED = 1


def add_parser(sub: Any) -> None:
    b = sub.add_parser("backup", help="snapshot every JetStream stream and KV bucket (or some) into a directory")
    b.add_argument("dir", type=Path, help="where to write it; must be empty (or --force)")
    b.add_argument("--streams", help="comma-separated stream or bucket names (default: every one on the server)")
    b.add_argument("--force", action="store_true", help="write into a directory that is not empty")
    b.add_argument("--consumers", action="store_true", help="also keep durable consumers and their positions")
    r = sub.add_parser("restore", help="restore a `sqt backup` directory into a server that lacks those streams")
    r.add_argument("dir", type=Path, help="a directory written by `sqt backup`")
    r.add_argument("--streams", help="comma-separated stream or bucket names (default: every one in the backup)")
    r.add_argument("--replace", action="store_true", help="delete a stream that exists on the server before restoring it")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def backup_command(config: Config, args: argparse.Namespace) -> int:
    if args.streams is not None and not _names(args.streams):
        print("sqt: --streams needs at least one name", file=sys.stderr)
        return EXIT_USAGE
    try:  # what can be refused without the server is refused before connecting to it
        if args.command == "backup":
            check_target(args.dir, args.force)
        else:
            read_manifest(args.dir)
        return asyncio.run(_run(config, args))
    except Refused as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BackupFailed, Unreachable, OSError) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(config: Config, args: argparse.Namespace) -> int:
    # Snapshots, restores and deletes are the admin's (bus/auth.py).
    nc = await connect(config.nats_url, name=f"sqt-{args.command}", attempts=3, role="admin")
    try:
        if args.command == "backup":
            done = await backup(nc, args.dir, _names(args.streams), force=args.force, consumers=args.consumers, say=print)
            what = "backed up"
        else:
            done = await restore(nc, args.dir, _names(args.streams), replace=args.replace, say=print)
            what = "restored"
        print(f"{what} {len(done)} stream{'s' if len(done) != 1 else ''}: {sum(s.messages for s in done)} messages")
        return 0
    finally:
        await nc.close()
