"""`pdx dev up --secure`: the ACLs of the trusted token issuers topic pdx.jwks on a real SASL_SSL broker.

pdx-policy publishes issuers (`pdx issuers publish` with its login), workers read them, and the principals of
services, inventory and workers may not write there (the records are signed too: an ACL is the first wall, the
signature the second, see tests/integration/test_jwks_topic.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from cryptography.hazmat.primitives.asymmetric import ec

from streams import config as settings
from streams.contracts import signing
from streams.devservices.issuer import issuer_entry
from streams.kafka.state import latest_records
from tests.integration.test_secure_kafka import SecureStack, _produce, secure  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

ISSUER = "https://secure-jwks.pdx.test"


def test_policy_admins_publish_issuers_workers_read_them_others_may_not_write(
    secure: SecureStack, tmp_path: Path  # noqa: F811 - the imported fixture
) -> None:
    keys = {settings.ENV_KEYS_DIR: str(tmp_path / "keys")}
    signing.ensure_dev_keys(settings.Settings.from_env(keys))
    jwks = tmp_path / "jwks.json"
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks.write_text(json.dumps({"issuers": [issuer_entry(ISSUER, public, "k1")]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDX_")}
    published = subprocess.run([sys.executable, "-m", "streams.cli.main", "issuers", "publish", str(jwks)],
                               env={**env, **secure.env("pdx-policy"), **keys}, capture_output=True, text=True,
                               timeout=120, check=False)
    assert published.returncode == 0, published.stderr
    worker = secure.settings("pdx-worker")
    records = asyncio.run(latest_records(worker, settings.TOPIC_JWKS))
    value, headers = records[ISSUER.encode()]
    assert value is not None and signing.header_value(headers, signing.HEADER_KEY_ID)
    for principal in ("pdx-service", "pdx-inventory", "pdx-worker"):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce(secure.settings(principal), settings.TOPIC_JWKS))
