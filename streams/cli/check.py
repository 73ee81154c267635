"""`pdx check`: send one access request through Kafka and print the decision (exit 0 allow, 1 deny, 3 step-up)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.console import say
from streams.model import ReasonCode


def decision_json(decision: Any) -> dict[str, Any]:
    d: dict[str, Any] = decision.to_dict()
    d["evaluated_at"] = decision.evaluated_at.isoformat()
    return d


def cmd_check(args: argparse.Namespace) -> int:
    from streams.client import PolicyClient

    resource = {
        "id": args.resource_id,
        "type": args.resource_type,
        "environment": args.environment,
        "sensitivity": args.sensitivity,
        "repository": args.repository,
    }
    context: dict[str, Any] = {
        "requested_ttl_s": args.ttl,
        "source_ip": args.source_ip,
        "approval_id": args.approval_id,
    }
    if args.token_age is not None:
        context["token_issued_at"] = datetime.now(UTC) - timedelta(seconds=args.token_age)

    async def run() -> Any:
        async with PolicyClient(timeout_s=args.timeout) as client:
            return await client.check(
                args.identity, args.action, resource, context, args.timeout, on_behalf_of=args.on_behalf_of,
                token=args.token, wait_for_approval=args.wait_for_approval,
            )

    decision = asyncio.run(run())
    if decision.reason_codes == [ReasonCode.PDP_TIMEOUT]:
        say("no decision arrived in time: is a worker running? (`pdx worker`, or `pdx demo` starts one)")
    if args.json:
        print(json.dumps(decision_json(decision), indent=2))
    else:
        print(f"{decision.decision.upper()}  (request {decision.request_id}, bundle {decision.bundle_version[:12]})")
        for r in decision.reasons:
            print(f"  reason  {r.code}: {r.message}" + (f"  [{r.policy}/{r.rule}]" if r.rule else ""))
        for k, v in decision.obligations.items():
            print(f"  obligation  {k} = {v}")
    return {"allow": 0, "step_up": 3}.get(decision.decision, 1)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="send one access request through Kafka and print the decision")
    p.add_argument("identity")
    p.add_argument("action")
    p.add_argument("--resource-id", required=True)
    p.add_argument("--resource-type", required=True)
    p.add_argument("--environment")
    p.add_argument("--sensitivity", choices=["public", "internal", "confidential", "restricted"])
    p.add_argument("--repository")
    p.add_argument("--ttl", type=int, help="requested TTL in seconds (context.requested_ttl_s)")
    p.add_argument("--source-ip")
    p.add_argument("--token-age", type=int, help="token issued this many seconds ago")
    p.add_argument("--approval-id")
    p.add_argument("--on-behalf-of", action="append", default=[],
                   help="a principal the identity acts for (repeat for a chain, outermost first); believed only "
                        "with --token in the delegated shape or a signed grant (`pdx delegations grant`)")
    p.add_argument("--token", help="the caller's workload token (JWT), e.g. from `pdx dev token`")
    p.add_argument("--wait-for-approval", type=float, metavar="SECONDS",
                   help="on step_up, wait this long for the approval request to be resolved "
                        "(`pdx approvals grant|deny`) and print the final decision")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
