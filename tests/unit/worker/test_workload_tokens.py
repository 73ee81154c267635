"""Verified workload tokens (issue 14 part 1): tokens minted here with the tests' own keys, decided by the Decider.

Every bad token is a deny with its precise reason code, never an allow; a good one becomes token.* attributes;
the audit keeps the token's hash and verified claims, never the token.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from streams import config
from streams.contracts import audit_chain, wire
from streams.model import RequestContext, Resource
from streams.model.tokens import TokenVerifier, token_sha256
from streams.policy import evaluate, policy_set_from_documents
from streams.worker.decide import Decider
from streams.worker.loop import ReplyRoutes, RequestLoop
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import FakeMetadata, FakeProducer
from tests.unit.worker.test_decider import incoming, request

ISSUER = "https://spire.pdx.test"
AUDIENCE = "pdx"
SUBJECT = "spiffe://pdx.dev/ns/billing/sa/svc-billing"  # registered for svc-billing in examples/inventory.yaml
INVOICES = Resource(id="invoices-api", type="api", environment="production", sensitivity="internal")

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk_of(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "alg": alg}


JWKS_CONFIG = {
    "issuers": [
        {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256", "RS256"],
         "jwks": {"keys": [jwk_of(EC_KEY, "ec-1", "ES256"), jwk_of(RSA_KEY, "rsa-1", "RS256")]}},
    ]
}


def mint(key: Any = EC_KEY, alg: str = "ES256", kid: str | None = "ec-1", now: datetime | None = None,
         **claims: Any) -> str:
    now = now or datetime.now(UTC)
    body: dict[str, Any] = {"iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE, "iat": int(now.timestamp()) - 60,
                            "exp": int(now.timestamp()) + 600, "jti": "jti-1"}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verifier() -> TokenVerifier:
    return TokenVerifier.from_dict(JWKS_CONFIG)


async def decide_token(state: WorkerState, token: str | None, tokens: TokenVerifier | None = None,
                       **changes: Any) -> FakeProducer:
    changes.setdefault("context", RequestContext(source_ip="10.1.2.3", token_issued_at=datetime.now(UTC)))
    changes.setdefault("on_behalf_of", [])  # svc-billing acts for nobody
    req = request(identity="svc-billing", action="api:call", resource=INVOICES, **changes)
    req.token = token
    producer = FakeProducer()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    decider = Decider(state, "w-test", routes, tokens=verifier() if tokens is None else tokens)
    await RequestLoop(decider, producer).process([incoming(wire.encode("AccessRequest", req.to_dict()))])
    return producer


def outcome(out: FakeProducer) -> tuple[str, list[str]]:
    d = wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[0].value)
    return d["decision"], [r["code"] for r in d["reasons"]]


def audited(out: FakeProducer) -> dict[str, Any]:
    return wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)


async def test_a_verified_token_of_the_identity_is_allowed_and_audited_without_the_token(
    loaded_state: WorkerState,
) -> None:
    token = mint(scope="api:read")
    out = await decide_token(loaded_state, token)
    assert outcome(out) == ("allow", ["m2m_verified_call_allowed"])
    record = audited(out)
    raw = out.on(config.TOPIC_AUDIT)[0].value
    assert token.encode() not in raw and token.split(".")[2].encode() not in raw  # never stored
    assert record["request"]["token"] == f"[redacted:sha256:{token_sha256(token)[:12]}]"
    attrs = record["request"]["context"]["attributes"]
    assert attrs["pdx.token.issuer"] == ISSUER and attrs["pdx.token.subject"] == SUBJECT
    assert attrs["pdx.token.jti"] == "jti-1" and attrs["pdx.token.sha256"] == token_sha256(token)
    link = record["chain"]
    assert link is None or link["request_digest"] == audit_chain.request_digest(record["request"])


async def test_a_request_without_a_token_is_decided_as_before(loaded_state: WorkerState) -> None:
    out = await decide_token(loaded_state, None)
    assert outcome(out) == ("allow", ["m2m_call_allowed"])  # the caller-stated issue time (fallback rule)
    assert "pdx.token.sha256" not in audited(out)["request"]["context"]["attributes"]


def hs256_with_public_key() -> str:
    """HS256 with the issuer's public key (PEM) as the HMAC secret: the classic algorithm confusion. PyJWT refuses
    to make one, so it is built here."""
    import hashlib
    import hmac

    secret = EC_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE,
                           "exp": int(datetime.now(UTC).timestamp()) + 600}).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def alg_none() -> str:
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE,
                           "exp": int(datetime.now(UTC).timestamp()) + 600}).encode())
    return f"{head}.{body}."


def tampered() -> str:
    head, body, sig = mint().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "spiffe://pdx.dev/ns/admin/sa/root"
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


BAD_TOKENS = {
    "expired": (lambda: mint(exp=int(datetime.now(UTC).timestamp()) - 120), "token_expired"),
    "not yet valid (nbf)": (lambda: mint(nbf=int(datetime.now(UTC).timestamp()) + 600), "token_not_yet_valid"),
    "issued in the future": (lambda: mint(iat=int(datetime.now(UTC).timestamp()) + 600), "token_not_yet_valid"),
    "wrong audience": (lambda: mint(aud="someone-else"), "token_wrong_audience"),
    "no audience": (lambda: mint(aud=None), "token_malformed"),
    "wrong key": (lambda: mint(key=OTHER_EC_KEY), "token_invalid_signature"),
    "unknown kid": (lambda: mint(kid="ec-9"), "token_invalid_signature"),
    "tampered claims": (tampered, "token_invalid_signature"),
    "untrusted issuer": (lambda: mint(iss="https://evil.example"), "token_untrusted_issuer"),
    "alg none": (alg_none, "token_algorithm_not_allowed"),
    "HS256 keyed with the public key": (hs256_with_public_key, "token_algorithm_not_allowed"),
    "EdDSA not configured": (lambda: mint(key=ed25519.Ed25519PrivateKey.generate(), alg="EdDSA", kid="ec-1"),
                             "token_algorithm_not_allowed"),
    "RS256 header on the EC key": (lambda: mint(key=RSA_KEY, alg="RS256", kid="ec-1"),
                                   "token_algorithm_not_allowed"),
    "malformed": (lambda: "not-a-jwt", "token_malformed"),
    "malformed JSON": (lambda: "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln", "token_malformed"),
    "no exp": (lambda: mint(exp=None), "token_malformed"),
    "string exp": (lambda: mint(exp="tomorrow"), "token_malformed"),
    "bad act": (lambda: mint(act={"client": "x"}), "token_malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_every_bad_token_is_a_deny_with_its_reason_code(loaded_state: WorkerState, case: str) -> None:
    make, code = BAD_TOKENS[case]
    token = make()
    out = await decide_token(loaded_state, token)
    assert outcome(out) == ("deny", [code]), case
    record = audited(out)
    assert record["decision"]["reasons"][0]["policy"] is None  # decided before any rule
    assert token.encode() not in out.on(config.TOPIC_AUDIT)[0].value
    assert record["request"]["context"]["attributes"]["pdx.token.sha256"] == token_sha256(token)


async def test_a_worker_without_trusted_issuers_denies_every_token(loaded_state: WorkerState) -> None:
    req_tokens = TokenVerifier()
    assert outcome(await decide_token(loaded_state, mint(), tokens=req_tokens)) == ("deny", ["token_untrusted_issuer"])
    producer = FakeProducer()
    decider = Decider(loaded_state, "w", ReplyRoutes(config.Settings.from_env({}), FakeMetadata()))  # tokens=None
    req = request(identity="svc-billing", action="api:call", resource=INVOICES)
    req.token = mint()
    await RequestLoop(decider, producer).process([incoming(wire.encode("AccessRequest", req.to_dict()))])
    assert outcome(producer) == ("deny", ["token_untrusted_issuer"])


async def test_a_caller_cannot_forge_the_audited_token_claims(loaded_state: WorkerState) -> None:
    req_ctx = RequestContext(source_ip="10.1.2.3", token_issued_at=datetime.now(UTC),
                             attributes={"pdx.token.subject": "spiffe://forged"})
    out = await decide_token(loaded_state, None, context=req_ctx)
    assert audited(out)["request"]["context"]["attributes"]["pdx.token.subject"].startswith("[redacted:sha256:")


def test_a_token_is_verified_once_then_served_from_the_cache_until_it_expires() -> None:
    v = verifier()
    now = datetime.now(UTC)
    token = mint(now=now, exp=int(now.timestamp()) + 100)
    first = v.verify(token, now)
    assert v.verify(token, now + timedelta(seconds=50)) is first and v.verified == 1
    with pytest.raises(Exception, match="expired"):
        v.verify(token, now + timedelta(seconds=200))  # past exp + leeway: verified again, and refused
    small = TokenVerifier(v.issuers.values(), cache_entries=2)
    for i in range(5):
        small.verify(mint(now=now, jti=f"j{i}"), now)
    assert len(small._cache) == 2  # bounded


def test_claims_become_token_attributes() -> None:
    v = verifier()
    now = datetime.now(UTC)
    token = mint(now=now, iat=int(now.timestamp()) - 30, aud=[AUDIENCE, "other"], scp=["api:read", "api:write"],
                 act={"sub": "agent-7", "act": {"sub": "alice"}})
    verified = v.verify(token, now)
    assert verified.scopes == ("api:read", "api:write") and verified.act == ("agent-7", "alice")
    docs = [{
        "name": "token-attrs", "owner": "tests", "mode": "enforce", "controls": [],
        "rules": [{
            "id": "all-token-attributes", "effect": "allow",
            "when": [
                {"action": "api:call"},
                {"token.verified": True},
                {"token.issuer": ISSUER},
                {"token.subject": SUBJECT},
                {"token.jti": "jti-1"},
                {"token.audience": {"contains": AUDIENCE}},
                {"token.scopes": {"contains_all": ["api:read", "api:write"]}},
                {"token.act": {"contains": "alice"}},
                {"token.age_s": {"lte": "1m"}},
                {"token.subject_matches_identity": True},
            ],
            "reason": {"code": "ok", "message": "every token attribute holds"},
        }],
    }]
    bundle = policy_set_from_documents(docs).compile()
    from streams.model import Identity

    ident = Identity(id="svc-billing", kind="service_account", workload_subjects=[SUBJECT])
    req = request(identity="svc-billing", action="api:call", resource=INVOICES, on_behalf_of=[])
    assert evaluate(bundle, req, ident, [], now, verified).decision == "allow"
    assert evaluate(bundle, req, ident, [], now, None).decision == "deny"  # token.verified false
    other = Identity(id="svc-billing", kind="service_account")
    assert evaluate(bundle, req, other, [], now, verified).decision == "deny"  # subject not registered


@pytest.mark.parametrize("bad", [
    {"algorithms": ["HS256"]},
    {"algorithms": ["none"]},
    {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}},
    {"jwks": {"keys": [json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(EC_KEY))]}},  # private key
    {"audiences": []},
])
def test_unsafe_issuer_configurations_are_refused(bad: dict[str, Any]) -> None:
    from streams.errors import UserError

    entry = {**JWKS_CONFIG["issuers"][0], **bad}  # type: ignore[dict-item]
    with pytest.raises(UserError):
        TokenVerifier.from_dict({"issuers": [entry]})
