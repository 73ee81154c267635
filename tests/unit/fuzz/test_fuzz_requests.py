"""Hostile requests through the worker's path: decode → limits → model → evaluate → encode the Decision.

Two kinds of cases, 10,000+ in all, from one fixed seed (each case has its own ``Random(f"{SEED}:{i}")``, so a
failure names the seed and the case and :func:`case` rebuilds exactly that input):

* **mutated bytes** — valid encoded AccessRequests with bits flipped, bytes overwritten, ranges cut, duplicated
  or inserted, truncated, spliced with another request, invalid UTF-8 planted in a string, a length varint
  blown up, or the header damaged;
* **hostile values** — structurally valid requests (encoded by the codec, or by a writer that ignores the
  timestamps' logical type so any long goes through) carrying huge strings, extreme and out-of-range
  timestamps, weird addresses, unicode, empty ids, negative partitions and TTLs, odd actions and globs.

What must hold for every case: decode raises only ``WireError``; ``limits.exceeded`` and ``limits.shrink`` never
raise (and the shrunk copy encodes small); ``AccessRequest.from_avro`` raises only a short ``ValueError``;
``evaluate`` never raises and returns a Decision whose outcome is allow / deny / step_up and which encodes.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from streams import config
from streams.config import RequestLimits
from streams.contracts import limits, wire
from streams.model import DECISIONS, AccessRequest, Approval, Decision, Identity
from streams.model.inventory_file import read_inventory
from streams.policy import CompiledBundle, compile_bundle, evaluate, load_policy_dir

SEED = 20260311
MUTATED_CASES = 7000
HOSTILE_CASES = 4000
NOW = datetime(2026, 3, 11, 10, 30, tzinfo=UTC)
LIMITS = RequestLimits()
MAX_ERROR_CHARS = 300

# ---- inputs ---------------------------------------------------------------------------------------------

IDENTITY_IDS = ("agent-analytics", "agent-intern", "agent-config-bot", "sa-deploy-payments", "svc-billing",
                "wf-release-legacy", "", "unknown", "agent-analytics\x00", "AGENT-ANALYTICS")
ACTIONS = ("db:connect", "db:read", "db:write", "config:read", "config:write", "secrets:read", "api:call",
           "deploy:production", "", ":", "db:", "db:*", "*", "?", "[", "[!]", "db:[a-z]", "db:\n", "db:\x00",
           "db:" + "x" * 300, "DB:CONNECT", "db:connect ", "\u202edb:connect")
RESOURCE_TYPES = ("database", "config", "secret", "api", "deployment", "", " ", "database\x00", "t" * 300)
ENVIRONMENTS = (None, "production", "staging", "dev", "", "PRODUCTION", "production\n")
SENSITIVITIES = (None, "public", "internal", "confidential", "restricted", "", "secret", "Restricted", "x" * 5000)
ADDRESSES = (None, "", "10.0.0.1", "10.255.255.255", "192.168.1.1", "8.8.8.8", "::", "::1", "::ffff:10.0.0.1",
             "fe80::1%eth0", "fe80::1%" + "a" * 60, "10.0.0.1/8", " 10.0.0.1", "10.0.0.1 ", "010.000.000.001",
             "0x0a.0.0.1", "4294967295", "-1", "1.2.3.4.5", "256.0.0.1", "１０.０.０.１", "[::1]", "1" * 64,
             "1" * 65, "::ffff:" + "9" * 100, "2001:db8::" + ":" * 50, "\x00", "10.0.0.1\x00", "😀")
TEXTS = ("", " ", "a", "\x00", "\n", "é", "😀", "\u202e", "\ufeff", "'\"\\", "${jndi:ldap://x}", "<script>",
         "Robert'); DROP TABLE audit;--", "%s%n", "\u0000" * 10, "a" * 255, "\U0010ffff")
TIMESTAMPS = (NOW, NOW - timedelta(days=365 * 30), NOW + timedelta(days=365 * 30),
              datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
              datetime(1970, 1, 1, tzinfo=UTC), NOW - timedelta(milliseconds=1), NOW + timedelta(milliseconds=1))
#: Longs a timestamp-millis field may carry on the wire that no datetime can hold (or only just can).
RAW_MILLIS = (-(2**63), 2**63 - 1, -62135596800001, 253402300800000, 253402300799999, -62135596800000, 0, -1)
INT32 = (0, 1, -1, 7, 8, 2**31 - 1, -(2**31), 1000)
LONGS = (None, 0, 1, -1, 900, 3600, 86400 * 365 * 1000, 2**63 - 1, -(2**63), 2**53 + 1)


#: (identity, action, resource type, environment, repository): requests the shipped policies decide each way.
SCENARIOS = (
    ("agent-analytics", "db:connect", "database", "production", None),
    ("agent-intern", "db:read", "database", "staging", None),
    ("agent-intern", "db:connect", "database", "production", None),
    ("agent-config-bot", "config:read", "config", "production", None),
    ("agent-config-bot", "config:write", "config", "production", None),
    ("sa-deploy-payments", "secrets:read", "secret", "production", "payments-service"),
    ("sa-deploy-payments", "secrets:read", "secret", "production", "ledger"),
    ("svc-billing", "api:call", "api", "production", None),
    ("wf-release-legacy", "deploy:release", "pipeline", "production", None),
    ("wf-release-legacy", "api:call", "api", "production", None),
)


def base_request(i: int = 0) -> dict[str, Any]:
    identity_id, action, rtype, environment, repository = SCENARIOS[i % len(SCENARIOS)]
    return {
        "request_id": f"req-{i:08d}",
        "occurred_at": NOW,
        "identity_id": identity_id,
        "on_behalf_of": ["alice@example.com"] if i % 2 else [],
        "action": action,
        "resource": {
            "id": f"res-{i}",
            "type": rtype,
            "environment": environment,
            "sensitivity": ("public", "internal", "confidential", "restricted")[i % 4],
            "repository": repository,
            "owner": "data-platform",
            "attributes": {"team": "data"},
        },
        "context": {
            "source_ip": ("10.0.0.1", "192.168.1.1", None)[i % 3],
            "token_issued_at": NOW - timedelta(minutes=i % 30),
            "requested_ttl_s": (None, 900, 7200)[i % 3],
            "approval_id": "apr-1" if i % 5 == 0 else None,
            "change_ticket": "CHG-1" if i % 4 == 0 else None,
            "tool": "langchain",
            "attributes": {"session": f"s-{i}"},
        },
        "reply_to": config.TOPIC_DECISIONS,
        "reply_partition": i % 8,
        "deadline": NOW + timedelta(seconds=5),
    }


SEED_MESSAGES = tuple(wire.encode("AccessRequest", base_request(i)) for i in range(24))


def _strip_logical(node: Any) -> Any:
    """The schema with timestamp logical types removed: its writer puts any long where a timestamp goes."""
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


_RAW_SCHEMA = parse_schema(_strip_logical(copy.deepcopy(wire.schema("AccessRequest"))), {})
_HEADER = wire.MAGIC + wire.fingerprint("AccessRequest")


def _raw_encode(d: dict[str, Any]) -> bytes:
    """Encode with the AccessRequest layout and fingerprint, timestamps as raw millisecond longs."""
    out = BytesIO()
    out.write(_HEADER)
    schemaless_writer(out, _RAW_SCHEMA, d)
    return out.getvalue()


def _millis(dt: datetime | None) -> int | None:
    return None if dt is None else int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _mutate(rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(rng.choice(SEED_MESSAGES))
    start = wire.HEADER_LEN if rng.random() < 0.93 else 0  # mostly keep the header, to reach the body decoder
    kind = rng.choice(("flip", "flip", "overwrite", "truncate", "splice", "cut", "dup", "insert", "utf8", "varint",
                       "stack"))
    rounds = rng.randint(2, 6) if kind == "stack" else 1
    for _ in range(rounds):
        k = rng.choice(("flip", "overwrite", "truncate", "cut", "dup", "insert", "varint")) if kind == "stack" \
            else kind
        n = len(data)
        if n <= start:
            data += bytes([rng.randrange(256)])
            n = len(data)
        pos = rng.randrange(start, n)
        if k == "flip":
            for _ in range(rng.randint(1, 8)):
                p = rng.randrange(start, n)
                data[p] ^= 1 << rng.randrange(8)
        elif k == "overwrite":
            data[pos] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, rng.randrange(256)))
        elif k == "truncate":
            del data[pos:]
        elif k == "splice":
            other = rng.choice(SEED_MESSAGES)
            data = data[:pos] + other[rng.randrange(len(other)):]
        elif k == "cut":
            del data[pos:pos + rng.randint(1, 16)]
        elif k == "dup":
            end = min(n, pos + rng.randint(1, 32))
            data[pos:pos] = data[pos:end]
        elif k == "insert":
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif k == "utf8":  # plant invalid UTF-8 (a lone surrogate, an overlong, a stray continuation byte)
            bad = rng.choice((b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\xff", b"\xf4\x90\x80\x80"))
            data[pos:pos + len(bad)] = bad
        elif k == "varint":  # a length or count that is huge, negative, or runs off the end
            value = rng.choice((2**31, 2**62, -1, -(2**40), 10**9, n * 4, 2**63 - 1))
            data[pos:pos + 1] = _varint(value)
    return kind, bytes(data)


def _pick(rng: random.Random, choices: tuple[Any, ...], huge: bool = True) -> Any:
    """Mostly ``choices[0]`` (the base request's value, so that rules still match), else a hostile one."""
    r = rng.random()
    if huge and r < 0.015:
        return rng.choice(("x", "é", "😀", "\x00")) * rng.choice((4097, 20_000, 70_000, 300_000))
    if r < 0.12:
        return rng.choice(TEXTS)
    if r < 0.55:
        return choices[0]
    return rng.choice(choices)


def _hostile(rng: random.Random, i: int) -> tuple[str, bytes]:
    d = base_request(i)
    r, c = d["resource"], d["context"]
    d["request_id"] = _pick(rng, (d["request_id"], "", " ", "r" * 200))
    d["identity_id"] = _pick(rng, (d["identity_id"], *IDENTITY_IDS))
    d["action"] = _pick(rng, (d["action"], *ACTIONS))
    r["id"] = _pick(rng, (r["id"], "", "*", "orders-db", "payments-*"))
    r["type"] = _pick(rng, (r["type"], *RESOURCE_TYPES))
    r["environment"] = _pick(rng, (r["environment"], *ENVIRONMENTS))
    r["sensitivity"] = _pick(rng, SENSITIVITIES, huge=False) if rng.random() < 0.2 else r["sensitivity"]
    r["repository"] = _pick(rng, (r["repository"], None, "payments-service", ""))
    c["source_ip"] = _pick(rng, (c["source_ip"], *ADDRESSES))
    c["approval_id"] = _pick(rng, (c["approval_id"], None, "apr-1", "apr-2", ""))
    c["change_ticket"] = _pick(rng, (c["change_ticket"], None, "CHG-1"))
    c["tool"] = _pick(rng, ("langchain", None))
    if rng.random() < 0.2:
        d["on_behalf_of"] = [rng.choice(("alice", "", "bob", "😀")) for _ in range(rng.choice((0, 1, 3, 64, 65, 500)))]
    for attrs in (r["attributes"], c["attributes"]):
        if rng.random() < 0.15:
            value = rng.choice(TEXTS)
            attrs.update((f"k{j}", value) for j in range(rng.choice((1, 10, 64, 65, 500))))
        if rng.random() < 0.05:
            attrs[rng.choice(TEXTS)] = rng.choice(TEXTS) * rng.choice((1, 5000))
    d["reply_to"] = _pick(rng, (config.TOPIC_DECISIONS, "", "pdx.replies.svc", config.TOPIC_AUDIT, "pdx.replies."))
    d["reply_partition"] = rng.choice(INT32)
    c["requested_ttl_s"] = rng.choice(LONGS)
    if rng.random() < 0.25:  # any long where a timestamp goes, even one no datetime can hold
        d["occurred_at"] = rng.choice(RAW_MILLIS)
        c["token_issued_at"] = rng.choice((None, *RAW_MILLIS))
        d["deadline"] = rng.choice((None, *RAW_MILLIS))
        return "raw-timestamps", _raw_encode(d)
    d["occurred_at"] = rng.choice(TIMESTAMPS)
    c["token_issued_at"] = rng.choice((None, *TIMESTAMPS))
    d["deadline"] = rng.choice((None, *TIMESTAMPS))
    if rng.random() < 0.5:
        return "hostile", wire.encode("AccessRequest", d)
    d["occurred_at"] = _millis(d["occurred_at"])
    c["token_issued_at"] = _millis(c["token_issued_at"])
    d["deadline"] = _millis(d["deadline"])
    return "hostile-raw", _raw_encode(d)


def case(i: int) -> tuple[str, bytes]:
    """Case ``i`` of the run (reproducible alone: ``case(1234)``)."""
    rng = random.Random(f"{SEED}:{i}")
    return _mutate(rng) if i < MUTATED_CASES else _hostile(rng, i)


# ---- the path ---------------------------------------------------------------------------------------------


class Pipeline:
    def __init__(self, bundle: CompiledBundle, identities: dict[str, Identity], approvals: list[Approval]) -> None:
        self.bundle = bundle
        self.identities = identities
        self.ids = sorted(identities)
        self.approvals = approvals
        self.outcomes: dict[str, int] = {}

    def run(self, i: int, raw: bytes) -> None:
        try:
            decoded = wire.decode_as("AccessRequest", raw)
        except wire.WireError as exc:
            assert len(str(exc)) <= 1000, "a WireError message quotes at most a short prefix"
            self._count("wire_error")
            return
        found = limits.exceeded(len(raw), decoded, LIMITS)
        assert found is None or (isinstance(found, str) and len(found) <= MAX_ERROR_CHARS), found
        small = wire.encode("AccessRequest", limits.shrink(decoded, LIMITS))
        assert len(small) < 16 * 1024
        try:
            request = AccessRequest.from_avro(decoded)
        except ValueError as exc:
            assert len(str(exc)) <= MAX_ERROR_CHARS, f"{len(str(exc))}-char error: {str(exc)[:200]}"
            self._count("invalid")
            return
        # the request's own identity when it names one; otherwise a real one, so that rules run
        identity: Identity | None = None  # every 17th: an unknown identity
        if i % 17:
            identity = self.identities.get(request.identity_id) or self.identities[self.ids[i % len(self.ids)]]
        approvals = [a for a in self.approvals if identity is not None and a.identity_id == identity.id]
        now = NOW + timedelta(hours=i % 24, minutes=i % 7)
        decision = evaluate(self.bundle, request, identity, approvals, now)
        assert isinstance(decision, Decision) and decision.decision in DECISIONS, decision
        assert decision.request_id == request.request_id
        for reason in decision.reasons:
            assert len(reason.message) <= MAX_ERROR_CHARS, reason.message[:200]
        wire.encode("Decision", decision.to_dict(), trusted=True)  # what the worker replies with
        self._count(decision.decision if found is None else f"{decision.decision}+too_large")

    def _count(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    bundle = compile_bundle(load_policy_dir(config.POLICIES_DIR).to_bundle_content())
    identities = {i.id: i for i in read_inventory(config.REPO_ROOT / "examples" / "inventory.yaml", now=NOW)}
    approvals = [
        Approval(f"apr-{n}", ident, action, resource, "tests", NOW - timedelta(hours=1), NOW + timedelta(days=1))
        for n, (ident, action, resource) in enumerate(
            [(ident, action, resource) for ident in identities
             for action, resource in (("config:*", "*"), ("db:[rw]*", "res-[0-9]*"), ("*", "[!x]*"))],
            start=1,
        )
    ]
    return Pipeline(bundle, identities, approvals)


def _run_all(pipeline: Pipeline, indices: range, build: Callable[[int], tuple[str, bytes]]) -> None:
    for i in indices:
        kind, raw = build(i)
        try:
            pipeline.run(i, raw)
        except Exception as exc:
            raise AssertionError(
                f"fuzz seed {SEED} case {i} ({kind}; reproduce with case({i}) in {__name__}): "
                f"{type(exc).__name__}: {str(exc)[:300]}; first bytes {raw[:48].hex(' ')}"
            ) from exc


def test_mutated_and_hostile_requests_never_break_the_decision_path(pipeline: Pipeline) -> None:
    started = time.perf_counter()
    _run_all(pipeline, range(MUTATED_CASES + HOSTILE_CASES), case)
    elapsed = time.perf_counter() - started
    total = sum(pipeline.outcomes.values())
    print(f"fuzz seed {SEED}: {total} cases in {elapsed:.1f} s: {dict(sorted(pipeline.outcomes.items()))}")
    assert total == MUTATED_CASES + HOSTILE_CASES >= 10_000
    # the mutations reach every stage: some bytes are refused, some requests invalid, some decided each way
    out = pipeline.outcomes
    assert out.get("wire_error", 0) > 1000 and out.get("invalid", 0) > 10
    assert out.get("allow", 0) and out.get("deny", 0) and out.get("step_up", 0)
    assert sum(v for k, v in out.items() if k.endswith("+too_large")) > 50


def test_the_cases_are_reproducible() -> None:
    assert case(5) == case(5) and case(MUTATED_CASES + 5) == case(MUTATED_CASES + 5)
    assert case(5) != case(6)
