"""`pdx approvals pending | watch | grant | deny`: the approval requests step_up decisions open.

A step_up opens an approval request on pdx.approval-requests (its id is in the Decision's
``obligations.approval_request_id``); a second person grants it (an Approval scoped to exactly that identity,
action and resource, for ``--ttl``) or denies it. Both are signed with an approval key. Nobody resolves a request
they make or one made for them (``approval_self_granted``). A caller waiting with
``PolicyClient.check(..., wait_for_approval=...)`` gets the final decision.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from datetime import UTC, datetime
from typing import Any

from streams import config
from streams.console import say
from streams.grants import deny_request, follow, grant_request, pending
from streams.model import approval_request as apq

_KEY_HELP = ("private key that signs the resolution (default: PDX_SIGNING_KEY_APPROVAL or <keys dir>/approval.key; "
             "the dev key under `pdx dev`)")


def _line(r: apq.ApprovalRequest, now: datetime) -> str:
    chain = f" for {' > '.join(r.on_behalf_of)}" if r.on_behalf_of else ""
    return (f"{r.approval_request_id}  {r.state(now):8}  {r.identity_id}{chain}  {r.action} on "
            f"{r.resource_type}:{r.resource_id}  reasons {','.join(r.reasons) or '-'}  "
            f"expires {r.expires_at.isoformat(timespec='seconds')}")


def cmd_pending(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    found = asyncio.run(pending(config.load(), now))
    if args.json:
        print(json.dumps([r.to_json(now) for r in found], indent=2))
        return 0
    if not found:
        say("no open approval requests")
    for r in found:
        print(_line(r, now))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    async def run() -> None:
        async for f in follow(config.load()):
            now = datetime.now(UTC)
            if args.json:
                out: dict[str, Any] = {**f.record.to_json(now), "trusted": f.trusted}
                print(json.dumps(out), flush=True)
            else:
                print(_line(f.record, now) + ("" if f.trusted else "  [UNTRUSTED: not signed by a trusted key]"),
                      flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    from streams.cli.approve import parse_ttl

    r = asyncio.run(grant_request(config.load(), args.approval_request_id, parse_ttl(args.ttl),
                                  args.by or getpass.getuser(), args.key))
    say(f"granted {r.approval_request_id}: {r.identity_id} may {r.action} on {r.resource_id} until "
        f"{r.approval_expires_at.isoformat() if r.approval_expires_at else '?'} (approved by {r.resolved_by})")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    r = asyncio.run(deny_request(config.load(), args.approval_request_id, args.reason,
                                 args.by or getpass.getuser(), args.key))
    say(f"denied {r.approval_request_id} ({r.identity_id} {r.action} on {r.resource_id}): {args.reason}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("approvals", help="approval requests opened by step-up decisions: list, follow, resolve")
    s = p.add_subparsers(dest="approvals_command", metavar="pending|watch|grant|deny", required=True)
    pe = s.add_parser("pending", help="the open approval requests")
    pe.add_argument("--json", action="store_true", help="print JSON (each entry has approval_request_id, "
                    "identity_id, action, resource_id, on_behalf_of, reasons, expires_at)")
    pe.set_defaults(func=cmd_pending)
    w = s.add_parser("watch", help="follow new approval requests and resolutions as they arrive (Ctrl-C stops)")
    w.add_argument("--json", action="store_true", help="one JSON object per line (for a chat-ops bot)")
    w.set_defaults(func=cmd_watch)
    g = s.add_parser("grant", help="grant an open approval request (scoped to exactly its identity/action/resource)")
    g.add_argument("approval_request_id")
    g.add_argument("--ttl", default="30m", help="how long the approval is valid: 30m, 4h (default 30m)")
    g.add_argument("--by", default=None, help="who approves (default: current user); never the requester")
    g.add_argument("--key", help=_KEY_HELP)
    g.set_defaults(func=cmd_grant)
    d = s.add_parser("deny", help="deny an open approval request")
    d.add_argument("approval_request_id")
    d.add_argument("--reason", required=True, help="why (the waiting caller sees it)")
    d.add_argument("--by", default=None, help="who denies (default: current user)")
    d.add_argument("--key", help=_KEY_HELP)
    d.set_defaults(func=cmd_deny)
