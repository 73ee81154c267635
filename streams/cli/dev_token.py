"""`pdx dev token`: a delegated workload token signed by the dev issuer (dev stack only).

The token has the delegated shape of RFC 8693 token exchange: ``sub`` = the principal acted for, ``act.sub`` = the
agent (nested ``act`` for each further ``--actor``, the last one being the current actor). Workers of the dev stack
trust the dev issuer (streams/devservices/issuer.py), so a request carrying it proves its ``on_behalf_of`` chain.
For tests, examples and the MCP gateway; in production an identity provider's token exchange issues these.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from streams import config
from streams.errors import UserError


def delegated_claims(subject: str, actors: list[str], ttl_s: float) -> dict[str, Any]:
    """``sub`` = subject; ``act`` nests the actors so the last one is the outermost (current) actor."""
    if not actors:
        raise UserError("pdx dev token: give at least one --actor (the identity acting for --subject)")
    act: dict[str, Any] | None = None
    for actor in actors:  # earliest first: each later actor wraps the chain so far
        act = {"sub": actor, **({"act": act} if act is not None else {})}
    now = datetime.now(UTC)
    return {"sub": subject, "act": act, "jti": f"dev-{uuid.uuid4().hex[:16]}", "iat": now,
            "exp": int(now.timestamp() + ttl_s)}


def cmd_token(args: argparse.Namespace) -> int:
    from streams.cli.approve import parse_ttl
    from streams.devservices.issuer import ensure_dev_issuer, mint

    cfg = config.load()
    ensure_dev_issuer(cfg)
    print(mint(cfg, delegated_claims(args.subject, args.actor, parse_ttl(args.ttl).total_seconds())))
    return 0


def add_parser(dev_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = dev_sub.add_parser("token", help="print a delegated token signed by the dev issuer (sub, act.sub)")
    p.add_argument("--subject", required=True, help="the principal acted for (sub), e.g. alice")
    p.add_argument("--actor", required=True, action="append",
                   help="the acting identity (act.sub), e.g. agent-config-bot; repeat for a chain, current actor last")
    p.add_argument("--ttl", default="15m", help="lifetime: 15m, 1h (default 15m)")
    p.set_defaults(func=cmd_token)
