"""`pdx issuers` without services: a bad JWKS file or a missing key is one clear line before anything is sent,
and the dev keys include one for jwks records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from streams import config as settings
from streams.cli.main import main
from streams.contracts import signing
from streams.devservices.issuer import issuer_entry
from streams.devservices.procs import free_port


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(settings.ENV_KEYS_DIR, str(tmp_path / "keys"))
    monkeypatch.setenv(settings.ENV_KAFKA_BOOTSTRAP, f"127.0.0.1:{free_port()}")  # nothing listens there
    for kind in signing.KINDS:
        monkeypatch.delenv(settings.ENV_SIGNING_KEY_PREFIX + kind.upper(), raising=False)
    return tmp_path


def _jwks(tmp: Path, *entries: object) -> str:
    path = tmp / "jwks.json"
    path.write_text(json.dumps({"issuers": list(entries)}))
    return str(path)


def test_dev_keys_include_a_jwks_key(env: Path) -> None:
    created = signing.ensure_dev_keys(settings.load())
    assert env / "keys" / "jwks.key" in created
    assert signing.trusted_keys(settings.load()).key_ids(signing.JWKS) == [
        signing.SigningKey.load(env / "keys" / "jwks.key").key_id]


def test_publish_without_a_key_says_how_to_get_one(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["issuers", "publish", _jwks(env)]) == 2
    err = capsys.readouterr().err
    assert "no signing key for jwks records" in err and "pdx keys generate" in err


@pytest.mark.parametrize(("entries", "problem"), [
    ((), "lists no issuers"),
    (({"issuer": "https://a.example"},), "'audiences' must be a non-empty list"),
    (("twice", "twice"), "is configured twice"),
])
def test_a_bad_file_is_refused_before_anything_is_sent(
    env: Path, capsys: pytest.CaptureFixture[str], entries: tuple[object, ...], problem: str
) -> None:
    signing.ensure_dev_keys(settings.load())
    good = issuer_entry("https://a.example", ec.generate_private_key(ec.SECP256R1()).public_key(), "k1")
    entries = tuple(good if e == "twice" else e for e in entries)
    assert main(["issuers", "publish", _jwks(env, *entries)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert "cannot reach Kafka" not in err  # the file was checked first


def test_unreachable_kafka_is_one_clear_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signing.ensure_dev_keys(settings.load())
    good = issuer_entry("https://a.example", ec.generate_private_key(ec.SECP256R1()).public_key(), "k1")
    assert main(["issuers", "publish", _jwks(env, good)]) == 2
    assert "cannot reach Kafka at 127.0.0.1:" in capsys.readouterr().err
