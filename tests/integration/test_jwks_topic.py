"""Issue 14 part 1: trusted token issuers from the signed compacted topic pdx.jwks, through the real Kafka and a
running worker that is never restarted.

`pdx issuers publish` puts a new issuer on the topic and the worker verifies that issuer's tokens (allowed as the
shipped machine-to-machine policy says); a record signed by a key the worker does not trust is refused and its
issuer's tokens stay denied token_untrusted_issuer; `pdx issuers remove` (a signed tombstone) withdraws the
issuer and its token is denied again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from streams import config as settings
from streams.cli.main import main
from streams.client import PolicyClient
from streams.contracts import signing
from streams.devservices.issuer import issuer_entry
from streams.kafka import clients
from streams.model.tokens import entry_bytes

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SUBJECT = "spiffe://pdx.dev/ns/billing/sa/svc-billing"  # svc-billing's workload subject (examples/inventory.yaml)
INVOICES = {"id": "invoices-api", "type": "api", "environment": "production", "sensitivity": "internal"}
INTERNAL = {"source_ip": "10.20.30.40"}
#: how long a published record may take to reach the worker: one replica fetch, with a loaded machine's margin
PROPAGATION_S = 20.0


def _mint(key: Any, issuer: str, kid: str) -> str:
    now = int(datetime.now(UTC).timestamp())
    return jwt.encode({"iss": issuer, "sub": SUBJECT, "aud": "pdx", "iat": now - 60, "exp": now + 600,
                       "jti": uuid.uuid4().hex}, key, algorithm="ES256", headers={"kid": kid})


async def _pdx(*args: str) -> int:
    """The real CLI, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(args))


async def _codes(client: PolicyClient, token: str) -> tuple[str, list[str]]:
    d = await client.check("svc-billing", "api:call", INVOICES, INTERNAL, token=token)
    return d.decision, list(d.reason_codes)


async def _until(client: PolicyClient, token: str, wanted: str) -> tuple[str, list[str]]:
    """Decide ``token`` until its decision is ``wanted`` (the worker applies records within one fetch) or
    PROPAGATION_S passed; returns the last decision."""
    deadline = asyncio.get_running_loop().time() + PROPAGATION_S
    while True:
        got = await _codes(client, token)
        if got[0] == wanted or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.2)


async def _produce_forged(issuer: str, value: bytes) -> None:
    """Write an issuer record the way an attacker with a plain Kafka client and a key of their own would."""
    key = issuer.encode()
    producer = await clients.start_producer(settings.load())
    try:
        attacker = signing.SigningKey.generate()
        await producer.send_and_wait(settings.TOPIC_JWKS, value, key=key,
                                     headers=attacker.headers(signing.JWKS, key, value, 2**41))
    finally:
        await producer.stop()


async def test_issuers_published_on_pdx_jwks_are_trusted_live(
    client: PolicyClient, pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = uuid.uuid4().hex[:8]
    issuer, forged_issuer, sentinel = (f"https://{name}-{run}.pdx.test" for name in ("jwks", "forged", "sentinel"))
    key = ec.generate_private_key(ec.SECP256R1())
    token = _mint(key, issuer, "k1")
    assert await _codes(client, token) == ("deny", ["token_untrusted_issuer"])

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"issuers": [issuer_entry(issuer, key.public_key(), "k1")]}))
    assert await _pdx("issuers", "publish", str(jwks_file)) == 0
    assert await _until(client, token, "allow") == ("allow", ["m2m_verified_call_allowed"])

    # forged: a new issuer, and new keys for the trusted one, signed by a key the worker does not trust
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    await _produce_forged(forged_issuer, entry_bytes(issuer_entry(forged_issuer, attacker_key.public_key(), "e1")))
    await _produce_forged(issuer, entry_bytes(issuer_entry(issuer, attacker_key.public_key(), "k1")))
    # a trusted record after them on the one partition: once it is in force, the worker has read the forged ones
    sentinel_key = ec.generate_private_key(ec.SECP256R1())
    jwks_file.write_text(json.dumps({"issuers": [issuer_entry(sentinel, sentinel_key.public_key(), "s1")]}))
    assert await _pdx("issuers", "publish", str(jwks_file)) == 0
    assert (await _until(client, _mint(sentinel_key, sentinel, "s1"), "allow"))[0] == "allow"
    assert await _codes(client, _mint(attacker_key, forged_issuer, "e1")) == ("deny", ["token_untrusted_issuer"])
    assert await _codes(client, _mint(attacker_key, issuer, "k1")) == ("deny", ["token_invalid_signature"])
    assert (await _codes(client, token))[0] == "allow"  # the last good issuer set stays in force
    log = (pipeline / "workers" / "w1.log").read_text()
    assert f"refused trusted issuer '{forged_issuer}'" in log and "not trusted for jwks" in log

    capsys.readouterr()
    assert await _pdx("issuers", "list", "--json") == 0
    listed = {row["issuer"]: row for row in json.loads(capsys.readouterr().out)}
    jwks_key = signing.SigningKey.load(signing.private_key_path(settings.load(), signing.JWKS)).key_id
    assert listed[issuer]["key_ids"] == ["k1"] and listed[issuer]["status"].startswith("refused")  # the forged one
    assert listed[sentinel]["signer"] == jwks_key and listed[sentinel]["status"] == "trusted"
    assert listed[forged_issuer]["status"].startswith("refused") and listed[forged_issuer]["signed_at"]

    # the forged record is the latest for `issuer`; removing it is a signed tombstone all the same
    assert await _pdx("issuers", "remove", issuer) == 0
    assert await _until(client, token, "deny") == ("deny", ["token_untrusted_issuer"])
    assert await _pdx("issuers", "remove", sentinel) == 0
    assert await _pdx("issuers", "remove", sentinel) == 2  # already gone: says so
