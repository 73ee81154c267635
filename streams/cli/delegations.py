"""`pdx delegations grant | revoke | list`: signed delegation grants on pdx.delegations.

A grant says that ``--delegate`` (an agent) may act for ``--delegator`` (a human, or another identity) on matching
actions and resources until it expires or is revoked. It is one of the two proofs a request's ``on_behalf_of``
needs (the other is a verified delegated token): docs/delegation.md.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from datetime import UTC, datetime

from streams import config
from streams.console import say
from streams.grants import grant_delegation, list_delegations, revoke_delegation

_KEY_HELP = ("private key that signs the grant (default: PDX_SIGNING_KEY_DELEGATION or <keys dir>/delegation.key; "
             "the dev key under `pdx dev`)")


def cmd_grant(args: argparse.Namespace) -> int:
    from streams.cli.approve import parse_ttl

    grant = asyncio.run(grant_delegation(config.load(), args.delegator, args.delegate, args.action, args.resource,
                                         parse_ttl(args.ttl), args.by or getpass.getuser(), args.id, args.key))
    print(grant.grant_id)
    say(f"{args.delegate} may act for {args.delegator} on {args.action} / {args.resource} until "
        f"{grant.expires_at.isoformat()} (signed by key {grant.signer})")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    asyncio.run(revoke_delegation(config.load(), args.grant_id, args.key))
    say(f"revoked delegation grant {args.grant_id}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    grants = asyncio.run(list_delegations(config.load()))
    now = datetime.now(UTC)
    rows = [{**g.to_dict(), "granted_at": g.granted_at.isoformat(), "expires_at": g.expires_at.isoformat(),
             "signer": g.signer, "expired": g.expires_at <= now} for g in grants]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        say(f"{config.TOPIC_DELEGATIONS} holds no trusted delegation grants "
            "(record one with `pdx delegations grant`)")
        return 0
    for r in rows:
        state = "expired" if r["expired"] else f"until {r['expires_at']}"
        print(f"{r['grant_id']}  {r['delegator']} -> {r['delegate']}  {r['action']} / {r['resource_id']}  {state}  "
              f"by {r['granted_by'] or '-'} (key {r['signer']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("delegations", help="signed delegation grants: who may act for whom")
    s = p.add_subparsers(dest="delegations_command", metavar="grant|revoke|list", required=True)
    g = s.add_parser("grant", help="let --delegate act for --delegator on matching actions and resources")
    g.add_argument("--delegator", required=True, help="identity id whose authority is delegated (e.g. alice)")
    g.add_argument("--delegate", required=True, help="identity id that may act for it (e.g. agent-config-bot)")
    g.add_argument("--action", required=True, help="action or glob, e.g. 'config:*'")
    g.add_argument("--resource", default="*", help="resource id or glob (default '*')")
    g.add_argument("--ttl", default="8h", help="how long the grant is valid: 30m, 8h, 2d (default 8h)")
    g.add_argument("--by", default=None, help="who records the grant (default: current user)")
    g.add_argument("--id", default=None, help="grant id (default: generated)")
    g.add_argument("--key", help=_KEY_HELP)
    g.set_defaults(func=cmd_grant)
    r = s.add_parser("revoke", help="revoke a grant (a signed tombstone)")
    r.add_argument("grant_id")
    r.add_argument("--key", help=_KEY_HELP)
    r.set_defaults(func=cmd_revoke)
    ls = s.add_parser("list", help="the trusted grants on pdx.delegations")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)
