"""The Decider: a batch of AccessRequest records → the audit, reply and dead-letter records to produce.

The hot path, per request: decode → look up identity, approvals, bundle (cached decoded objects) → evaluate →
encode the Decision → splice the AuditRecord from the bytes already held. Fail closed: anything that
prevents a real evaluation is a deny with a reason code; bytes we cannot decode at all go to the dead-letter
topic with the error, and the worker moves on.

Why the Decider only *plans* records: it is synchronous and pure (no Kafka, no faust), so a whole fetch is
decided in one pass with no await between requests, and unit tests check every outcome without a broker.
Producing them, in the order "audit durable, then reply" (streams/worker/loop.py), is the loop's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams import config
from streams.config import DEFAULT_REQUEST_LIMITS, RequestLimits
from streams.contracts import audit_chain, limits, signing, splice, wire
from streams.contracts.dlq import dead_letter_headers
from streams.contracts.redact import Redactor
from streams.model import AccessRequest, Decision, Identity, ReasonCode
from streams.model import approval_request as apq
from streams.model.delegation import DelegationProof, DelegationUnproven, prove_chain
from streams.model.tokens import TokenError, TokenVerifier, VerifiedToken, token_sha256
from streams.policy import evaluate
from streams.worker.chain import AuditChains
from streams.worker.recorded import RecordedDecisions
from streams.worker.state import WorkerState

log = logging.getLogger("pdx.decide")

#: ``route_error(topic, partition)``: why a reply cannot go there (None: it can).
RouteCheck = Callable[[str, Any], str | None]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed request record: what the Decider needs of a Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Out:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Planned:
    """What one request leads to. The reply may be sent only once the audit record is durable; a reply
    without an audit record repeats a decision recorded before (a redelivery)."""

    request_id: str | None
    audit: Out | None = None
    reply: Out | None = None
    dead_letter: Out | None = None
    #: the approval request a step_up opens (pdx.approval-requests), produced with the audit record
    approval_request: Out | None = None


def _reply(request_id: str, reply_to: str, reply_partition: Any, decision_msg: bytes) -> Out:
    """A Decision to the request's reply route, keyed and correlated by the request id (docs/contracts.md)."""
    key = request_id.encode()
    return Out(reply_to, key, decision_msg, reply_partition, [("correlation_id", key)])


def _now() -> datetime:
    return datetime.now(UTC)


def _approvals_relied_on(d: Decision) -> list[tuple[str, str, datetime, datetime]]:
    """(approval_id, approved_by, granted_at, expires_at) of the approvals a decision relied on (AuditRecord
    relied_on: encoded by streams.contracts.splice, hashed by streams.contracts.audit_chain)."""
    return [(a.approval_id, a.approved_by, a.granted_at, a.expires_at) for a in d.relied_on_approvals]


class _EverySecond:
    """At most one log line per second, then how many were left out: a flood of bad requests must not
    become a flood of log lines (the DLQ has every one of them, with its error)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.next_at = 0.0
        self.left_out = 0

    def __call__(self, msg: Incoming, error: str) -> None:
        now = self.clock()
        if now < self.next_at:
            self.left_out += 1
            return
        more = f" (and {self.left_out} more since the last line)" if self.left_out else ""
        log.warning("dead-lettered %s[%s]@%s: %s%s", msg.topic, msg.partition, msg.offset, error[:200], more)
        self.next_at, self.left_out = now + 1.0, 0


class Decider:
    def __init__(
        self,
        state: WorkerState,
        worker_id: str,
        route_error: RouteCheck,
        clock: Callable[[], datetime] = _now,
        audit_on_request_partition: bool = False,
        recorded: RecordedDecisions | None = None,
        request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS,
        chains: AuditChains | None = None,
        redactor: Redactor | None = None,
        tokens: TokenVerifier | None = None,
        max_delegation_depth: int = config.DEFAULT_MAX_DELEGATION_DEPTH,
        approval_signer: signing.SigningKey | None = None,
    ) -> None:
        self.state = state
        self.worker_id = worker_id
        self.route_error = route_error
        self.clock = clock
        #: pdx.audit has as many partitions as pdx.requests: write each audit record to its request's
        #: partition (co-partitioned by identity, and no per-record partitioner on the hot path)
        self.audit_on_request_partition = audit_on_request_partition
        #: decisions already recorded in pdx.audit for redelivered requests (streams/worker/recorded.py)
        self.recorded = recorded if recorded is not None else RecordedDecisions()
        #: past these a request is denied request_too_large and audited as a shrunk copy
        self.limits = request_limits
        #: the worker's audit hash chains (streams/worker/chain.py); None: audit records carry no chain link
        self.chains = chains
        #: secret attribute values replaced before the request is audited (streams/contracts/redact.py)
        self.redactor = redactor if redactor is not None else Redactor()
        #: the trusted workload-token issuers (streams/model/tokens.py); None: every request with a token is
        #: denied token_untrusted_issuer
        self.tokens = tokens
        #: longer on_behalf_of chains are denied delegation_too_deep (Settings.max_delegation_depth)
        self.max_delegation_depth = max_delegation_depth
        #: signs the approval requests a step_up opens (the worker's audit key); None: they go unsigned
        self.approval_signer = approval_signer
        self._log_dead_letter = _EverySecond()

    def decide_batch(self, msgs: Sequence[Incoming]) -> list[Planned]:
        return [self._decide_guarded(m) for m in msgs]

    def _decide_guarded(self, msg: Incoming) -> Planned:
        """``decide``, and if a bug makes it raise anyway: fail closed. The request is denied
        ``evaluation_failed``, audited and answered when its id and reply route can be read, and dead-lettered
        with the error in any case; the worker goes on with the rest of the fetch."""
        try:
            return self.decide(msg)
        except Exception as exc:  # one request must never stop the worker
            log.exception("deciding %s[%s]@%s failed", msg.topic, msg.partition, msg.offset)
            error = f"internal error: {type(exc).__name__}: {str(exc)[:200]}"
            planned = self._failed_deny(msg, error)
            planned.dead_letter = self._dead_letter(msg, error)
            return planned

    def _failed_deny(self, msg: Incoming, error: str) -> Planned:
        """An audited ``evaluation_failed`` deny for a request whose decision raised (nothing but the DLQ entry
        when even that cannot be built: then the caller's deadline denies)."""
        try:
            received_at = self.clock()
            request_dict = limits.shrink(wire.decode_as("AccessRequest", msg.value), self.limits)
            rid = str(request_dict.get("request_id") or "")
            reply_to = request_dict.get("reply_to") or ""
            reply_partition = request_dict.get("reply_partition")
            decision = self._fail_closed(rid, ReasonCode.EVALUATION_FAILED,
                                         "pdx could not evaluate this request (an internal error); failing closed")
            decision_dict = decision.to_dict()
            decision_msg = wire.encode("Decision", decision_dict, trusted=True)
            audited = self.redactor.redact(request_dict) or request_dict
            planned = Planned(rid, audit=self._audit(msg, None, audited, decision_dict, decision_msg, None,
                                                     received_at, decision))
            if reply_to and self.route_error(reply_to, reply_partition) is None:
                planned.reply = _reply(rid, reply_to, reply_partition, decision_msg)
            return planned
        except Exception:
            log.exception("could not even audit the failure of %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            return Planned(None)

    def decide(self, msg: Incoming) -> Planned:
        """Decide one request; never raises for bad input (it becomes a deny and/or a DLQ entry)."""
        received_at = self.clock()
        raw = msg.value
        try:  # past the byte limit only the head is read: the deny must not cost more than a normal request
            oversized = len(raw) > self.limits.max_message_bytes
            request_dict = wire.decode_request_head(raw) if oversized else wire.decode_as("AccessRequest", raw)
        except wire.WireError as exc:
            return Planned(None, dead_letter=self._dead_letter(msg, str(exc)))
        too_large = limits.exceeded(len(raw), request_dict, self.limits)
        if too_large is not None:  # from here on only a small copy exists: the deny and its audit stay small
            request_dict = limits.shrink(request_dict, self.limits)
        rid = str(request_dict.get("request_id") or "")
        reply_to = request_dict.get("reply_to") or ""
        reply_partition = request_dict.get("reply_partition")
        route_problem = self.route_error(reply_to, reply_partition) if reply_to else "no reply_to"
        recorded = self.recorded.take(msg.partition, msg.offset, rid)
        if recorded is not None:  # redelivered: its decision is durable in pdx.audit already; repeat it
            if route_problem is not None:
                return Planned(rid)
            return Planned(rid, reply=_reply(rid, reply_to, reply_partition, recorded))
        request: AccessRequest | None = None
        invalid = ""
        if too_large is None:
            try:
                request = AccessRequest.from_avro(request_dict)
            except (ValueError, TypeError, KeyError) as exc:
                invalid = str(exc)
        identity = None
        #: what the audit keeps of the request's token and delegation proof (context.attributes pdx.token.*,
        #: pdx.delegation.*), None: neither
        token_audit: dict[str, str] | None = None
        proof: DelegationProof | None = None
        opened: Out | None = None
        if route_problem is not None:
            decision = self._fail_closed(rid, ReasonCode.INVALID_REPLY_ROUTE, f"invalid reply route: {route_problem}")
        elif too_large is not None:
            decision = self._fail_closed(rid, ReasonCode.REQUEST_TOO_LARGE, f"request too large: {too_large}")
        elif request is None:
            decision = self._fail_closed(rid, ReasonCode.INVALID_REQUEST, f"invalid request: {invalid}")
        else:
            identity = self.state.identities.get(request.identity_id)
            if request.deadline is not None and request.deadline <= received_at:
                decision = self._fail_closed(
                    rid,
                    ReasonCode.DEADLINE_EXPIRED,
                    f"request deadline {request.deadline.isoformat()} passed before evaluation",
                )
            else:
                verified: VerifiedToken | None = None
                failed: TokenError | None = None
                if request.token is not None:  # verified before any rule: a bad token is a deny, never an allow
                    try:
                        verified = self._verify_token(request.token, received_at)
                        token_audit = verified.audit_attributes()
                    except TokenError as exc:
                        failed = exc
                        token_audit = {"pdx.token.sha256": token_sha256(request.token)}
                if failed is not None:
                    decision = self._fail_closed(rid, failed.code, f"workload token rejected: {failed.message}")
                else:
                    approvals = self.state.approvals_for(request.identity_id)
                    chain = request.on_behalf_of
                    principals = [self.state.identities.get(p) for p in chain] if chain else ()
                    unproven: str | None = None
                    if chain and identity is not None:
                        try:
                            proof = self._prove(request, identity, principals, verified, received_at)
                        except DelegationUnproven as exc:
                            unproven = str(exc)
                        if proof is not None:
                            token_audit = {**(token_audit or {}), **proof.audit_attributes()}
                        if approvals:  # separation of duties: nobody in the chain approves its own request
                            approvals = [a for a in approvals
                                         if not apq.self_granted(a.approved_by, request.identity_id, chain)]
                    if unproven is not None:
                        decision = self._fail_closed(rid, ReasonCode.DELEGATION_UNPROVEN, unproven)
                        decision.principals = [p for p in principals if p is not None]  # what a replay needs
                    else:
                        decision = evaluate(self.state.bundle, request, identity, approvals, received_at, verified,
                                            principals, self.max_delegation_depth, proof)
                        decision.worker_id = self.worker_id
                        if decision.decision == "step_up":
                            opened = self._open_approval_request(request, decision, received_at)
        decision_dict = decision.to_dict()
        decision_msg = wire.encode("Decision", decision_dict, trusted=True)
        planned = Planned(rid)
        raw_request = None if too_large is not None else msg.value
        audited_request = self.redactor.redact(request_dict)
        if audited_request is None and token_audit is not None:  # a delegation proof to keep: audit a copy
            audited_request = {**request_dict, "context": dict(request_dict["context"])}
        if audited_request is not None:  # secrets never reach the audit trail: audit the redacted copy
            request_dict, raw_request = audited_request, None
            if token_audit is not None:
                ctx = request_dict["context"]
                request_dict["context"] = {**ctx, "attributes": {**ctx["attributes"], **token_audit}}
            if too_large is None:  # re-encoded, the copy is spliced like a request as received
                try:
                    raw_request = wire.encode("AccessRequest", request_dict)
                except (ValueError, TypeError, OverflowError):
                    raw_request = None
        planned.audit = self._audit(msg, raw_request, request_dict, decision_dict, decision_msg, identity, received_at,
                                    decision)
        planned.approval_request = opened
        if route_problem is None:
            planned.reply = _reply(rid, reply_to, reply_partition, decision_msg)
        if route_problem is not None:
            planned.dead_letter = self._dead_letter(msg, f"invalid reply route: {route_problem}")
        elif request is None and too_large is None:
            planned.dead_letter = self._dead_letter(msg, f"invalid AccessRequest: {invalid}")
        return planned

    def _audit(
        self,
        msg: Incoming,
        raw_request: bytes | None,
        request_dict: dict[str, Any],
        decision: dict[str, Any],
        decision_msg: bytes,
        identity: Any,
        received_at: datetime,
        evaluated: Decision,
    ) -> Out:
        decided_at = self.clock()
        identity_msg = self.state.identity_messages.get(str(request_dict["identity_id"])) if identity else None
        chains = self.chains
        relied, relied_part = self._relied_on(evaluated)
        audit = None if raw_request is None or relied is None else wire.splice_audit_record(
            raw_request,
            identity_msg,
            decision_msg,
            received_at=received_at,
            decided_at=decided_at,
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            worker_id=self.worker_id,
            relied_on=relied,  # type: ignore[arg-type]  # not None here
        )
        link = None
        if audit is None:  # a shrunk request, or a part in another schema version: encode the ordinary way
            relied = self._encoded_relied_on(evaluated)
            audit = self._encode_audit(request_dict, decision, identity, received_at, decided_at, msg)[:-1] + relied
            if chains is not None:  # hash what was encoded, as it decodes (the rare path: it may decode)
                request_digest, body_digest = audit_chain.record_digests(wire.decode_as("AuditRecord", audit))
                link, field_bytes = chains.link(msg.topic, msg.partition, request_digest, body_digest)
                audit = splice.with_chain(audit, field_bytes, relied)
        elif chains is not None:  # the hot path: hash the values the spliced bytes hold, without decoding them
            link, field_bytes = chains.link(
                msg.topic,
                msg.partition,
                audit_chain.request_digest(request_dict),
                audit_chain.body_digest(
                    None if identity_msg is None else chains.identity_digest(
                        str(request_dict["identity_id"]), identity_msg
                    ),
                    decision, received_at, decided_at, self.worker_id or str(decision["worker_id"] or ""),
                    msg.topic, msg.partition, msg.offset, relied_part,
                ),
            )
            audit = splice.with_chain(audit, field_bytes, relied)  # type: ignore[arg-type]  # not None here
        partition = msg.partition if self.audit_on_request_partition else None
        out = Out(config.TOPIC_AUDIT, str(request_dict.get("request_id") or "").encode(), audit, partition)
        if link is not None and chains is not None:
            chains.track(out, link)
        return out

    def _relied_on(self, d: Decision) -> tuple[bytes | None, audit_chain.ReliedOn | None]:
        """(encoded ``relied_on`` field, its hashed form) for the spliced record: the approvals and principal
        snapshots the decision read, spliced from the inventory messages the worker holds. (None, None) when a
        principal's message is in another schema version (the record is then encoded the ordinary way)."""
        if not d.relied_on_approvals and not d.principals:
            return splice.NOTHING_RELIED_ON, None
        approvals = _approvals_relied_on(d)
        bodies: list[bytes] = []
        digests: list[str] = []
        for p in d.principals:
            msg = self.state.identity_messages.get(p.id)
            body = wire.identity_body(msg) if msg is not None else None
            if msg is None or body is None:
                return None, None
            bodies.append(body)
            if self.chains is not None:
                digests.append(self.chains.identity_digest(p.id, msg))
        part = audit_chain.relied_on_part(approvals, digests) if self.chains is not None else None
        return splice.encode_relied_on(approvals, bodies), part

    @staticmethod
    def _encoded_relied_on(d: Decision) -> bytes:
        """The ``relied_on`` field encoded from the decision's objects (the rare path)."""
        approvals = _approvals_relied_on(d)
        bodies = [wire.identity_body(wire.encode("Identity", p.to_dict())) or b"" for p in d.principals]
        return splice.encode_relied_on(approvals, bodies)

    def _encode_audit(
        self,
        request_dict: dict[str, Any],
        decision: dict[str, Any],
        identity: Any,
        received_at: datetime,
        decided_at: datetime,
        msg: Incoming,
    ) -> bytes:
        """The AuditRecord encoded from its parts. A decoded request can still hold values its schema cannot
        re-encode (Avro ints are not range-checked on decode); then the shrunk copy, which clamps them, is
        audited instead: an audit record is always written."""
        record = {
            "request": request_dict,
            "identity": identity.to_dict() if identity is not None else None,
            "decision": decision,
            "received_at": received_at,
            "decided_at": decided_at,
            "source_topic": msg.topic,
            "source_partition": msg.partition,
            "source_offset": msg.offset,
            "worker_id": self.worker_id,
        }
        try:
            return wire.encode("AuditRecord", record)
        except (ValueError, TypeError, OverflowError):
            return wire.encode("AuditRecord", {**record, "request": limits.shrink(request_dict, self.limits)})

    def _prove(self, request: AccessRequest, identity: Identity, principals: Sequence[Identity | None],
               token: VerifiedToken | None, now: datetime) -> DelegationProof | None:
        """The proof of the request's delegation chain (streams/model/delegation.py). None when the engine must
        deny the chain first for what it is (too deep, or naming a principal the inventory does not hold)."""
        chain = request.on_behalf_of
        if len(chain) > self.max_delegation_depth or any(p is None for p in principals):
            return None
        grants = self.state.grants_to([*chain[1:], identity.id])
        return prove_chain(chain, identity, principals, token, grants, request.action, request.resource.id, now)

    def _open_approval_request(self, request: AccessRequest, decision: Decision, now: datetime) -> Out:
        """The approval request a step_up opens; its id goes to the caller in ``obligations``. Deterministic
        from the request id, so a request decided again after a crash opens the same one."""
        aid = apq.approval_request_id(request.request_id)
        decision.obligations = {**decision.obligations, apq.OBLIGATION: aid}
        record = apq.ApprovalRequest(
            approval_request_id=aid, request_id=request.request_id, identity_id=request.identity_id,
            action=request.action, resource_type=request.resource.type, resource_id=request.resource.id,
            opened_at=now, expires_at=now + apq.DEFAULT_TTL, on_behalf_of=list(request.on_behalf_of),
            reasons=[r.code for r in decision.reasons],
            rules=[f"{r.policy}/{r.rule}" for r in decision.reasons if r.policy],
        )
        value = wire.encode("ApprovalRequest", record.to_dict(), trusted=True)
        key = aid.encode()
        signer = self.approval_signer
        headers = signer.headers(signing.AUDIT, key, value, int(now.timestamp() * 1000)) if signer else []
        return Out(config.TOPIC_APPROVAL_REQUESTS, key, value, None, headers)

    def _verify_token(self, token: str, now: datetime) -> VerifiedToken:
        if self.tokens is None:
            raise TokenError(ReasonCode.TOKEN_UNTRUSTED_ISSUER,
                             f"this worker trusts no token issuers ({config.ENV_JWKS_FILE} is not set)")
        return self.tokens.verify(token, now)

    def _fail_closed(self, request_id: str, code: str, message: str) -> Decision:
        return Decision.fail_closed(
            request_id, code, message, bundle_version=self.state.bundle_version(), worker_id=self.worker_id
        )

    def _dead_letter(self, msg: Incoming, error: str) -> Out:
        self._log_dead_letter(msg, error)
        headers = dead_letter_headers(error, msg.topic, msg.partition, msg.offset, self.worker_id)
        return Out(config.TOPIC_DLQ, msg.key, msg.value, None, headers)
