"""Ed25519 signatures for trusted state: policy bundles, inventory records, approvals, audit checkpoints and
trusted token issuers (pdx.jwks).

Why signatures and not only ACLs: Kafka ACLs say who may *write* a topic, but a worker that applies whatever
arrives still trusts every principal (and every admin, and every backup restore) that can write there. A
signature says who *made* the record, and a worker applies nothing that a key it trusts for that kind of
record did not sign. The last good state stays in force when a record is refused.

What is signed: the record's kind, its Kafka key, its value and the signing time, as one byte string
(:func:`signed_payload`). The signature travels in Kafka headers (``pdx-sig``, ``pdx-key-id``,
``pdx-signed-at``), so the Avro contracts in schemas/ stay as they are and readers in other languages are not
affected. Binding the kind and the key stops a signed record from being replayed under another key (an
approval for agent A produced again as agent B's) or on another topic (an identity record produced as a
bundle). The signing time lets the worker refuse an older signed record replayed over a newer one of the same
key (streams/worker/state.py), and a tombstone (value None) is signed like any value.

Keys: ``pdx keys generate`` writes a private key (PEM, mode 0600) and its public key. A key id is the first 16
hex digits of sha256 over the raw 32-byte public key. Workers trust, per kind, a set of public keys; listing two
at once is how a key is rotated (sign with the new key, then drop the old one from the trust list).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.config import SIGNED_KINDS, Settings
from streams.errors import PdxError, UserError, quote

#: The kinds of signed records, and who signs them.
POLICY = "policy"  # policy admins: pdx.policies
INVENTORY = "inventory"  # the inventory source: pdx.inventory
APPROVAL = "approval"  # approvers: pdx.approvals
AUDIT = "audit"  # workers: signed checkpoints of the audit hash chains
JWKS = "jwks"  # whoever manages trusted token issuers (`pdx issuers publish`): pdx.jwks
DELEGATION = "delegation"  # whoever records delegation grants (`pdx delegations grant`): pdx.delegations
KINDS = SIGNED_KINDS
assert (POLICY, INVENTORY, APPROVAL, AUDIT, JWKS, DELEGATION) == KINDS

HEADER_SIGNATURE = "pdx-sig"
HEADER_KEY_ID = "pdx-key-id"
HEADER_SIGNED_AT = "pdx-signed-at"

_DOMAIN = b"pdx-signed-state-v1"
_CREATE = "create one with `pdx keys generate`"


class SignatureError(PdxError, ValueError):
    """A record is unsigned, signed by a key not trusted for its kind, or its signature does not verify."""


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _field(data: bytes | None) -> bytes:
    """Length-prefixed, with a distinct marker for None: (b"", None) and (None, b"") never sign alike."""
    if data is None:
        return b"\xff" * 8
    return len(data).to_bytes(8, "big") + data


def signed_payload(kind: str, key: bytes | None, value: bytes | None, signed_at_ms: int) -> bytes:
    """The exact bytes an Ed25519 signature of a state record covers."""
    return b"".join((_DOMAIN, _field(kind.encode()), _field(key), _field(value), signed_at_ms.to_bytes(8, "big")))


@dataclass(frozen=True)
class Verified:
    """Who signed an accepted record, and when."""

    key_id: str
    signed_at_ms: int


class SigningKey:
    """A private Ed25519 key that signs records of one or more kinds."""

    def __init__(self, private: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)
        self.path = path

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        """The private key in ``path`` (PEM, PKCS#8, unencrypted); UserError saying what is wrong otherwise."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read signing key {p}: {exc.strerror}; {_CREATE}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{p} is not an unencrypted PEM private key ({exc}); {_CREATE}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise UserError(f"{p} holds a {type(private).__name__}, not an Ed25519 key; {_CREATE}")
        return cls(private, p)

    def sign_bytes(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def headers(self, kind: str, key: bytes | None, value: bytes | None, signed_at_ms: int) -> list[tuple[str, bytes]]:
        """The Kafka headers that sign one record of ``kind``."""
        signature = self.sign_bytes(signed_payload(kind, key, value, signed_at_ms))
        return [
            (HEADER_SIGNATURE, signature),
            (HEADER_KEY_ID, self.key_id.encode()),
            (HEADER_SIGNED_AT, str(signed_at_ms).encode()),
        ]

    def write(self, private_path: Path, public_path: Path) -> None:
        """Write the private key (mode 0600, created exclusively: an existing key is never overwritten) and the
        public key (PEM, SubjectPublicKeyInfo)."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        private_path.parent.mkdir(parents=True, exist_ok=True)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public_path.write_bytes(public_pem(self.public))
        self.path = private_path


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read trusted key {p}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"{p} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{p} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def header_value(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str:
    """A header's value as text ('' when absent): e.g. the key id that signed a record."""
    raw = _header(headers, name)
    return raw.decode(errors="replace") if raw is not None else ""


class TrustedKeys:
    """The public keys a worker trusts, per kind of record. Empty for a kind: nothing of that kind is applied."""

    def __init__(self, keys: Mapping[str, Iterable[Ed25519PublicKey]] | None = None) -> None:
        self._keys: dict[str, dict[str, Ed25519PublicKey]] = {kind: {} for kind in KINDS}
        for kind, publics in (keys or {}).items():
            if kind not in self._keys:
                raise UserError(f"unknown signed record kind {quote(kind, 20)}: expected one of {', '.join(KINDS)}")
            for public in publics:
                self._keys[kind][key_id_of(public)] = public

    @classmethod
    def from_files(cls, files: Mapping[str, Iterable[Path]]) -> TrustedKeys:
        return cls({kind: [load_public(p) for p in paths] for kind, paths in files.items()})

    def key_ids(self, kind: str) -> list[str]:
        return sorted(self._keys.get(kind, {}))

    def verify(
        self, kind: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
    ) -> Verified:
        """Check a consumed record's signature headers; SignatureError (saying what is wrong) if it is not signed
        by a key trusted for ``kind``."""
        signature = _header(headers, HEADER_SIGNATURE)
        raw_key_id = _header(headers, HEADER_KEY_ID)
        raw_at = _header(headers, HEADER_SIGNED_AT)
        if signature is None or raw_key_id is None or raw_at is None:
            raise SignatureError(
                f"unsigned {kind} record (no {HEADER_SIGNATURE}/{HEADER_KEY_ID}/{HEADER_SIGNED_AT} headers)"
            )
        key_id = raw_key_id.decode(errors="replace")
        try:
            signed_at_ms = int(raw_at.decode("ascii"))
            if not 0 <= signed_at_ms < 2**63:
                raise ValueError
        except ValueError:
            bad = quote(raw_at, 24)
            raise SignatureError(f"{kind} record has an invalid {HEADER_SIGNED_AT} header {bad}") from None
        self.verify_bytes(kind, signed_payload(kind, key, value, signed_at_ms), signature, key_id)
        return Verified(key_id, signed_at_ms)

    def verify_bytes(self, kind: str, data: bytes, signature: bytes, key_id: str) -> None:
        trusted = self._keys.get(kind, {})
        public = trusted.get(key_id)
        if public is None:
            if not trusted:
                raise SignatureError(f"no key is trusted for {kind} records: configure one (see `pdx keys`)")
            raise SignatureError(f"{kind} record signed by key {quote(key_id, 20)}, which is not trusted for {kind}")
        try:
            public.verify(signature, data)
        except InvalidSignature:
            raise SignatureError(f"bad signature on {kind} record (key {key_id})") from None


# ---- where keys are found (Settings) ---------------------------------------------------------------
def private_key_path(cfg: Settings, kind: str) -> Path:
    """The private key that signs ``kind`` records: PDX_SIGNING_KEY_<KIND>, else <keys dir>/<kind>.key."""
    return cfg.signing_key_files.get(kind) or cfg.signing_keys_dir / f"{kind}.key"


def signing_key(cfg: Settings, kind: str, path: str | Path | None = None) -> SigningKey:
    """The key that signs ``kind`` records: ``path`` (``--key``), else :func:`private_key_path`. UserError saying
    how to get one when there is none."""
    chosen = Path(path) if path is not None else private_key_path(cfg, kind)
    if path is None and not chosen.exists():
        raise UserError(
            f"no signing key for {kind} records at {chosen}: pass --key FILE, set "
            f"PDX_SIGNING_KEY_{kind.upper()}, or create dev keys with `pdx dev up` / `pdx keys generate --dev`"
        )
    return SigningKey.load(chosen)


def optional_signing_key(cfg: Settings, kind: str) -> SigningKey | None:
    """The configured key for ``kind``, or None when none exists (e.g. a worker without an audit key)."""
    path = private_key_path(cfg, kind)
    return SigningKey.load(path) if path.exists() else None


def trusted_key_files(cfg: Settings, kind: str) -> tuple[Path, ...]:
    """PDX_TRUSTED_KEYS_<KIND>, else every <keys dir>/<kind>*.pub (two files at once while rotating)."""
    configured = cfg.trusted_key_files.get(kind)
    if configured:
        return tuple(configured)
    directory = cfg.signing_keys_dir
    return tuple(sorted(directory.glob(f"{kind}*.pub"))) if directory.is_dir() else ()


def trusted_keys(cfg: Settings) -> TrustedKeys:
    """Every kind's trusted public keys, as the settings name them."""
    return TrustedKeys.from_files({kind: trusted_key_files(cfg, kind) for kind in KINDS})


def ensure_dev_keys(cfg: Settings) -> list[Path]:
    """Create a key pair per kind under the keys dir where none exists (``pdx dev up``, the demo, the tests);
    returns the private keys created. Dev keys sign with files on local disk: fine for a laptop, and the reason
    production sets PDX_SIGNING_KEY_* / PDX_TRUSTED_KEYS_* to keys its operators hold."""
    created = []
    for kind in KINDS:
        private = cfg.signing_keys_dir / f"{kind}.key"
        if private.exists():
            continue
        SigningKey.generate().write(private, cfg.signing_keys_dir / f"{kind}.pub")
        created.append(private)
    return created
