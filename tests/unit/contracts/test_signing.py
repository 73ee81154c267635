"""Signing keys on disk and where pdx finds them (streams/contracts/signing.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streams import config
from streams.contracts import signing
from streams.errors import UserError


def _cfg(tmp_path: Path, **env: str) -> config.Settings:
    return config.Settings.from_env({config.ENV_STATE_DIR: str(tmp_path / "state"), **env})


def test_dev_keys_are_created_once_private_keys_0600_and_trusted_by_kind(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    created = signing.ensure_dev_keys(cfg)
    assert [p.name for p in created] == [f"{k}.key" for k in signing.KINDS]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in created)
    assert signing.ensure_dev_keys(cfg) == []  # never overwritten
    trust = signing.trusted_keys(cfg)
    for kind in signing.KINDS:
        key = signing.signing_key(cfg, kind)
        assert trust.key_ids(kind) == [key.key_id]
        trust.verify(kind, b"k", b"v", key.headers(kind, b"k", b"v", 7))
    with pytest.raises(signing.SignatureError, match="not trusted for policy"):
        audit_key = signing.signing_key(cfg, signing.AUDIT)
        trust.verify(signing.POLICY, b"k", b"v", audit_key.headers(signing.POLICY, b"k", b"v", 7))


def test_environment_names_the_trusted_keys_and_the_signing_key(tmp_path: Path) -> None:
    a, b = signing.SigningKey.generate(), signing.SigningKey.generate()
    a.write(tmp_path / "a.key", tmp_path / "a.pub")
    b.write(tmp_path / "b.key", tmp_path / "b.pub")
    cfg = _cfg(
        tmp_path,
        PDX_TRUSTED_KEYS_POLICY=f"{tmp_path / 'a.pub'}, {tmp_path / 'b.pub'}",
        PDX_SIGNING_KEY_POLICY=str(tmp_path / "b.key"),
    )
    assert signing.trusted_keys(cfg).key_ids(signing.POLICY) == sorted([a.key_id, b.key_id])
    assert signing.signing_key(cfg, signing.POLICY).key_id == b.key_id
    assert signing.trusted_keys(cfg).key_ids(signing.INVENTORY) == []


def test_missing_or_wrong_key_files_say_what_to_do(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    with pytest.raises(UserError, match="pdx keys generate"):
        signing.signing_key(cfg, signing.POLICY)
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(UserError, match="not an unencrypted PEM private key"):
        signing.signing_key(cfg, signing.POLICY, tmp_path / "junk.key")
    with pytest.raises(UserError, match="not a PEM public key"):
        signing.load_public(tmp_path / "junk.key")


def test_signatures_bind_kind_key_value_and_time() -> None:
    key = signing.SigningKey.generate()
    trust = signing.TrustedKeys({kind: [key.public] for kind in signing.KINDS})
    headers = key.headers(signing.APPROVAL, b"a/1", b"v", 5)
    assert trust.verify(signing.APPROVAL, b"a/1", b"v", headers) == signing.Verified(key.key_id, 5)
    others = [(signing.INVENTORY, b"a/1", b"v"), (signing.APPROVAL, b"b/1", b"v"), (signing.APPROVAL, b"a/1", None)]
    for kind, k, v in others:
        with pytest.raises(signing.SignatureError, match="bad signature"):
            trust.verify(kind, k, v, headers)
    later = [(n, b"6" if n == signing.HEADER_SIGNED_AT else v) for n, v in headers]
    with pytest.raises(signing.SignatureError, match="bad signature"):
        trust.verify(signing.APPROVAL, b"a/1", b"v", later)
    with pytest.raises(signing.SignatureError, match="unsigned"):
        trust.verify(signing.APPROVAL, b"a/1", b"v", [])
    bad_time = [(n, b"x" * 100 if n == signing.HEADER_SIGNED_AT else v) for n, v in headers]
    with pytest.raises(signing.SignatureError, match="invalid pdx-signed-at"):
        trust.verify(signing.APPROVAL, b"a/1", b"v", bad_time)
