"""The story of an approval request, for `pdx audit explain` and the risk report: the step_up that opened it, who
resolved it and when, and the decisions that relied on it afterwards.

Sources: the audit table (the step_up's ``obligations['approval_request_id']``; an allow's ``approvals`` relied on,
whose ``approval_id`` is the approval request's id, with the approver and the grant time) and the approval request's
own record on pdx.approval-requests (a denial leaves no decision to audit, so its resolution is read there).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from streams.config import Settings
from streams.model import approval_request as apq


def approval_request_of(row: dict[str, Any]) -> str | None:
    """The approval request a decision opened (a step_up) or relied on (an approval granted for it)."""
    aid = (row.get("obligations") or {}).get(apq.OBLIGATION)
    if aid:
        return str(aid)
    for a in row.get("approvals") or ():
        if str(a.get("approval_id", "")).startswith("apq-"):
            return str(a["approval_id"])
    return None


def decisions_of(audit: Any, approval_request_id: str) -> dict[str, list[dict[str, Any]]]:
    """The audited decisions around one approval request: the step_up(s) that opened it and those that relied
    on it, oldest first."""
    table = audit.table
    opened = audit.query(
        f"SELECT request_id, decision, decided_at, identity_id FROM {table} "
        f"WHERE obligations[{{k:String}}] = {{aid:String}} ORDER BY decided_at",
        {"k": apq.OBLIGATION, "aid": approval_request_id},
    )
    relied = audit.query(
        f"SELECT request_id, decision, decided_at, identity_id, "
        f"arrayFirst(a -> a.approval_id = {{aid:String}}, approvals) AS approval FROM {table} "
        f"WHERE has(arrayMap(a -> a.approval_id, approvals), {{aid:String}}) ORDER BY decided_at",
        {"aid": approval_request_id},
    )
    return {"opened_by": opened, "relied_on_by": relied}


def kafka_record(cfg: Settings, approval_request_id: str) -> dict[str, Any] | None:
    """The approval request's latest record on pdx.approval-requests, and whether its signature is trusted."""
    from streams import config
    from streams.contracts import signing
    from streams.kafka.approvals import read_approval_request
    from streams.kafka.state import latest_record

    try:
        found = asyncio.run(latest_record(cfg, config.TOPIC_APPROVAL_REQUESTS, approval_request_id, timeout_s=10))
    except Exception:  # Kafka down: the story from ClickHouse alone  # noqa: BLE001
        return None
    if found is None or found[0] is None:
        return None
    f = read_approval_request(signing.trusted_keys(cfg), approval_request_id.encode(), found[0], found[1])
    return {**f.record.to_json(datetime.now(f.record.opened_at.tzinfo)), "trusted": f.trusted}


def story(audit: Any, row: dict[str, Any], cfg: Settings | None) -> dict[str, Any] | None:
    """step_up → approval request → who resolved it and when → the decisions that relied on it (None when the
    decision has nothing to do with an approval request)."""
    aid = approval_request_of(row)
    if aid is None:
        return None
    out: dict[str, Any] = {"approval_request_id": aid, **decisions_of(audit, aid)}
    record = kafka_record(cfg, aid) if cfg is not None else None
    out["request"] = record
    opened = out["opened_by"][0]["decided_at"] if out["opened_by"] else None
    if record is not None and record.get("resolved_at") and opened is not None:
        out["time_to_resolve_s"] = round(
            (datetime.fromisoformat(record["resolved_at"]) - opened).total_seconds(), 3)
    elif out["relied_on_by"] and opened is not None:
        granted = out["relied_on_by"][0]["approval"]
        granted_at = granted["granted_at"] if isinstance(granted, dict) else granted[2]
        out["time_to_resolve_s"] = round((granted_at - opened).total_seconds(), 3)
    return out
