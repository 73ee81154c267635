"""A dev workload-token issuer: the key the demo signs its callers' tokens with, and the JWKS file workers trust.

Why in the dev tooling: in production the issuer is the organisation's (SPIRE, an OIDC provider) and workers are
given its JWKS with PDX_JWKS_FILE. On a laptop the demo must show verified tokens without a second set-up step,
so `pdx dev up` and the demo create an ES256 key and ``jwks.json`` under the keys dir, which workers read when
PDX_JWKS_FILE is not set (``Settings.token_issuers_file``). The same file can be put on the signed topic pdx.jwks
with `pdx issuers publish` (:func:`issuer_entry` builds one entry of it for any public key, e.g. in tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.config import DEV_JWKS_FILE, Settings

DEV_ISSUER = "https://issuer.pdx.dev.local"
DEV_AUDIENCE = "pdx"
_KEY_FILE = "token-issuer.pem"
_KID = "dev-1"


def issuer_entry(issuer: str, public_key: Any, kid: str, audiences: tuple[str, ...] = (DEV_AUDIENCE,),
                 algorithm: str = "ES256") -> dict[str, Any]:
    """One trusted-issuer entry (of a JWKS file, or the value of a pdx.jwks record) trusting ``public_key``
    (a ``cryptography`` public key) under ``kid`` for tokens of ``issuer`` signed with ``algorithm``."""
    import jwt

    public = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(public_key))
    return {"issuer": issuer, "audiences": list(audiences), "algorithms": [algorithm],
            "jwks": {"keys": [{**public, "kid": kid, "alg": algorithm}]}}


def ensure_dev_issuer(cfg: Settings) -> Path:
    """The dev issuer's key and the JWKS trusting it, created under the keys dir when missing; returns the JWKS."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = cfg.signing_keys_dir
    jwks, key_file = directory / DEV_JWKS_FILE, directory / _KEY_FILE
    if jwks.exists() and key_file.exists():
        return jwks
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    issuer = issuer_entry(DEV_ISSUER, key.public_key(), _KID)
    jwks.write_text(json.dumps({"issuers": [issuer]}, indent=2) + "\n")
    return jwks


def mint(cfg: Settings, claims: Mapping[str, Any]) -> str:
    """A token signed by the dev issuer: ``claims`` (datetimes become epoch seconds) over iss/aud/exp defaults."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((cfg.signing_keys_dir / _KEY_FILE).read_bytes(), password=None)
    now = int(datetime.now(UTC).timestamp())
    body: dict[str, Any] = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "iat": now, "exp": now + 900}
    for name, value in claims.items():
        body[name] = int(value.timestamp()) if isinstance(value, datetime) else value
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": _KID})  # type: ignore[arg-type]
