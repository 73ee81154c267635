"""`pdx inventory load | suspend | rotate`: load and change the identity inventory."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from streams import config
from streams.console import say
from streams.errors import UserError
from streams.model import Identity
from streams.ops import load_inventory, update_identity


def cmd_inventory_load(args: argparse.Namespace) -> int:
    n = asyncio.run(load_inventory(args.file, cfg=config.load(), key=args.key))
    say(f"loaded {n} identities from {args.file} into {config.TOPIC_INVENTORY}")
    return 0


def cmd_inventory_suspend(args: argparse.Namespace) -> int:
    def suspend(identity: Identity) -> None:
        identity.status = "decommissioned" if args.decommission else "suspended"

    identity = asyncio.run(update_identity(args.identity, suspend, cfg=config.load(), key=args.key))
    say(f"{identity.id}: status {identity.status}; its next request is denied")
    return 0


def cmd_inventory_rotate(args: argparse.Namespace) -> int:
    def rotate(identity: Identity) -> None:
        for cred in identity.credentials:
            if cred.id == args.credential:
                cred.rotated_at = datetime.now(UTC)
                cred.status = "active"
                return
        known = ", ".join(c.id for c in identity.credentials) or "none"
        raise UserError(f"identity {identity.id} has no credential {args.credential!r} (it has: {known})")

    identity = asyncio.run(update_identity(args.identity, rotate, cfg=config.load(), key=args.key))
    say(f"{identity.id}: credential {args.credential} rotated")
    return 0


def _key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        help="private key that signs the identity records"
        " (default: PDX_SIGNING_KEY_INVENTORY or <keys dir>/inventory.key)"
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("inventory", help="load and change identity inventory")
    sub = group.add_subparsers(dest="inventory_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("load", help="load identities from a YAML or CSV file")
    p.add_argument("file")
    _key_option(p)
    p.set_defaults(func=cmd_inventory_load)
    p = sub.add_parser("suspend", help="kill switch: suspend an identity (its next request is denied)")
    p.add_argument("identity")
    p.add_argument("--decommission", action="store_true", help="mark decommissioned instead of suspended")
    _key_option(p)
    p.set_defaults(func=cmd_inventory_suspend)
    p = sub.add_parser("rotate", help="record that a credential was rotated now")
    p.add_argument("identity")
    p.add_argument("credential")
    _key_option(p)
    p.set_defaults(func=cmd_inventory_rotate)
