"""`pdx approve`: grant a time-bounded pre-approval."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from datetime import timedelta

from streams import config
from streams.console import say
from streams.errors import UserError
from streams.model.durations import parse_duration_s
from streams.ops import grant_approval


def parse_ttl(text: str) -> timedelta:
    """A duration (``30m``, ``4h``, ``2d``, ``1h30m``: streams.model.durations) or plain seconds; must be positive."""
    text = text.strip()
    # a leading "-" is read so that "-5m" is reported as not positive rather than as unreadable
    negative = text.startswith("-")
    body = text[1:] if negative else text
    try:
        try:
            seconds = parse_duration_s(body)
        except ValueError:
            seconds = float(body)  # plain seconds, e.g. 90
        ttl = timedelta(seconds=-seconds if negative else seconds)
    except (ValueError, OverflowError):
        raise UserError(f"--ttl {text!r}: give a duration like 30m, 4h, 2d or 1h30m") from None
    if ttl <= timedelta(0):
        raise UserError(f"--ttl {text!r}: the duration must be positive")
    return ttl


def cmd_approve(args: argparse.Namespace) -> int:
    approval = asyncio.run(
        grant_approval(
            args.identity, args.action, args.resource, parse_ttl(args.ttl), args.by or getpass.getuser(), args.id,
            cfg=config.load(), key=args.key,
        )
    )
    print(approval["approval_id"])
    say(f"approved {args.identity} for {args.action} on {args.resource} until {approval['expires_at'].isoformat()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("approve", help="grant a time-bounded pre-approval")
    p.add_argument("--identity", required=True)
    p.add_argument("--action", required=True, help="action or glob, e.g. config:write")
    p.add_argument("--resource", required=True, help="resource id or glob")
    p.add_argument("--ttl", default="1h", help="how long the approval is valid: 30m, 4h, 2d, 1h30m (default 1h)")
    p.add_argument("--by", default=None, help="who approves (default: current user)")
    p.add_argument("--id", default=None, help="approval id (default: generated)")
    p.add_argument(
        "--key",
        help="private key that signs the approval"
        " (default: PDX_SIGNING_KEY_APPROVAL or <keys dir>/approval.key)"
    )
    p.set_defaults(func=cmd_approve)
