"""Trusted token issuers from the signed compacted topic pdx.jwks (issue 14 part 1), without Kafka: records are
fed to WorkerState.apply_jwks the way the replica feeds them, and tokens minted here are verified by the same
TokenVerifier the Decider uses.

A signed issuer is trusted live; an unsigned, forged, replayed or unusable record is refused, counted under
``rejected["jwks"]`` and leaves the last good issuer set in force; a tombstone withdraws the issuer; a key change
drops the cached tokens of that issuer; the JWKS file pins its issuers against the topic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from streams import metrics
from streams.contracts import signing
from streams.devservices.issuer import issuer_entry
from streams.model.tokens import TokenError, TokenVerifier, TrustedIssuer, entry_bytes
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import TEST_TRUST, signed
from tests.unit.worker.test_metrics import value
from tests.unit.worker.test_workload_tokens import decide_token, outcome

ISSUER = "https://spire.pdx.test"  # the issuer test_workload_tokens mints for (and svc-billing's subject)
SUBJECT = "spiffe://pdx.dev/ns/billing/sa/svc-billing"
KEY_1 = ec.generate_private_key(ec.SECP256R1())
KEY_2 = ec.generate_private_key(ec.SECP256R1())


def entry(key: Any = KEY_1, kid: str = "k1", issuer: str = ISSUER) -> bytes:
    return entry_bytes(issuer_entry(issuer, key.public_key(), kid))


def mint(key: Any = KEY_1, kid: str = "k1", issuer: str = ISSUER) -> str:
    now = int(datetime.now(UTC).timestamp())
    return jwt.encode({"iss": issuer, "sub": SUBJECT, "aud": "pdx", "iat": now - 60, "exp": now + 600}, key,
                      algorithm="ES256", headers={"kid": kid})


def publish(state: WorkerState, value: bytes | None, issuer: str = ISSUER, at_ms: int | None = None) -> None:
    key = issuer.encode()
    state.apply_jwks(key, value, signed(signing.JWKS, key, value, at_ms))


def code(state: WorkerState, token: str) -> str:
    """The reason code the state's verifier gives ``token`` ("ok" when it verifies)."""
    try:
        state.tokens.verify(token, datetime.now(UTC))
    except TokenError as exc:
        return exc.code
    return "ok"


def test_a_signed_issuer_is_trusted_live_and_a_tombstone_withdraws_it() -> None:
    state = WorkerState(TEST_TRUST)
    token = mint()
    assert code(state, token) == "token_untrusted_issuer"
    publish(state, entry())
    assert code(state, token) == "ok" and code(state, token) == "ok"  # the second from the cache
    assert type(state.tokens.issuers) is dict and ISSUER in state.tokens.issuers  # one dict lookup per token
    publish(state, None)
    assert code(state, token) == "token_untrusted_issuer"  # the cached verification went with the issuer
    assert state.rejected[signing.JWKS] == 0


@pytest.mark.parametrize("how", ["unsigned", "untrusted_key", "bad_signature", "other_kind", "replayed"])
def test_a_forged_record_is_refused_and_the_last_good_issuer_stays(how: str) -> None:
    state = WorkerState(TEST_TRUST)
    publish(state, entry(), at_ms=2_000_000_000_000)
    good = mint()
    assert code(state, good) == "ok"
    forged = entry(KEY_2, "evil")  # the attacker's key for the same issuer
    key = ISSUER.encode()
    headers: list[tuple[str, bytes]] | None
    if how == "unsigned":
        headers = None
    elif how == "untrusted_key":
        headers = signing.SigningKey.generate().headers(signing.JWKS, key, forged, 2_100_000_000_000)
    elif how == "bad_signature":
        headers = signed(signing.JWKS, key, entry(), 2_100_000_000_000)  # a signature over other bytes
    elif how == "other_kind":
        headers = signed(signing.POLICY, key, forged, 2_100_000_000_000)  # trusted for policies, not issuers
    else:
        headers = signed(signing.JWKS, key, forged, 1_900_000_000_000)  # validly signed, older than in force
    state.apply_jwks(key, forged, headers)
    assert state.rejected[signing.JWKS] == 1
    assert code(state, good) == "ok" and code(state, mint()) == "ok"
    assert code(state, mint(KEY_2, "evil")) == "token_invalid_signature"  # no key "evil": the forged set is out
    state.apply_jwks(key, None, None)  # an unsigned tombstone removes nothing either
    assert state.rejected[signing.JWKS] == 2 and code(state, good) == "ok"


def test_a_forged_record_for_a_new_issuer_trusts_nothing() -> None:
    state = WorkerState(TEST_TRUST)
    evil = "https://evil.example"
    key = evil.encode()
    value = entry(KEY_2, "e1", evil)
    state.apply_jwks(key, value, signing.SigningKey.generate().headers(signing.JWKS, key, value, 1))
    assert code(state, mint(KEY_2, "e1", evil)) == "token_untrusted_issuer"
    assert state.rejected == {signing.JWKS: 1}


@pytest.mark.parametrize("value", [
    b"not json",
    b"[" * 100_000,  # nested beyond what json parses
    json.dumps({"issuer": ISSUER}).encode(),  # no audiences, algorithms, keys
    entry(issuer="https://someone-else.example"),  # signed, but its value names another issuer than its key
    json.dumps({**issuer_entry(ISSUER, KEY_2.public_key(), "k2"), "algorithms": ["HS256"]}).encode(),
])
def test_a_signed_but_unusable_entry_is_refused_and_keeps_the_previous_one(value: bytes) -> None:
    state = WorkerState(TEST_TRUST)
    publish(state, entry())
    publish(state, value)
    assert state.rejected[signing.JWKS] == 1
    assert code(state, mint()) == "ok"


def test_private_key_material_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    private = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(KEY_2))
    bad = issuer_entry(ISSUER, KEY_2.public_key(), "k2")
    bad["jwks"]["keys"][0]["d"] = private["d"]
    state = WorkerState(TEST_TRUST)
    publish(state, entry_bytes(bad))
    assert state.rejected[signing.JWKS] == 1 and ISSUER not in state.tokens.issuers
    assert "private key material" in caplog.text


def test_a_key_rotation_drops_the_cached_tokens_of_the_old_key() -> None:
    state = WorkerState(TEST_TRUST)
    publish(state, entry())
    old = mint()
    assert code(state, old) == "ok"
    publish(state, entry(KEY_2, "k2"))  # the issuer now signs with k2 only
    assert code(state, old) == "token_invalid_signature"  # no longer answered from the cache
    assert code(state, mint(KEY_2, "k2")) == "ok"


def test_the_jwks_file_pins_its_issuers_against_the_topic() -> None:
    pinned = TrustedIssuer.from_json(entry())
    state = WorkerState(TEST_TRUST, TokenVerifier([pinned]))
    publish(state, entry(KEY_2, "k2"))  # validly signed, but the file pins this issuer
    assert state.rejected[signing.JWKS] == 0
    assert state.tokens.issuers[ISSUER] is pinned
    assert code(state, mint()) == "ok" and code(state, mint(KEY_2, "k2")) == "token_invalid_signature"
    publish(state, None)  # a tombstone does not remove a pinned issuer
    assert code(state, mint()) == "ok"
    other = "https://other.pdx.test"
    publish(state, entry(KEY_2, "k2", other), other)  # the topic adds issuers beside the file's
    assert code(state, mint(KEY_2, "k2", other)) == "ok" and code(state, mint()) == "ok"


async def test_the_decider_allows_a_token_of_a_published_issuer(loaded_state: WorkerState) -> None:
    """The worker wires the state's verifier into the Decider (streams/worker/app.py): a record applied to the
    state decides the next request, and a tombstone denies the one after."""
    token = mint()
    assert outcome(await decide_token(loaded_state, token, loaded_state.tokens))[1] == ["token_untrusted_issuer"]
    publish(loaded_state, entry())
    assert outcome(await decide_token(loaded_state, token, loaded_state.tokens)) == (
        "allow", ["m2m_verified_call_allowed"])
    publish(loaded_state, None)
    assert outcome(await decide_token(loaded_state, token, loaded_state.tokens))[1] == ["token_untrusted_issuer"]


def test_refused_issuer_records_are_exported_by_kind(loaded_state: WorkerState) -> None:
    registry, _ = metrics.worker_registry(loaded_state, [])
    loaded_state.apply_jwks(ISSUER.encode(), entry(), None)
    assert value(registry, "pdx_worker_state_rejected_total", kind=signing.JWKS) == 1
