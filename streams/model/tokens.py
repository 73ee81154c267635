"""Verified workload tokens: a caller's JWT (OIDC token, SPIFFE JWT-SVID) checked against trusted issuers.

Why here: the engine reads the verified claims (``token.*`` attributes, streams/policy/runtime.py) and the
worker verifies the token before any rule runs (streams/worker/decide.py); both need this module, and neither
Kafka nor the policy language is involved. Parsing and signature checks are PyJWT's; nothing here splits a JWT.

What is checked, in this order, each failure a :class:`TokenError` carrying its reason code
(:class:`streams.model.ReasonCode`; the Decider turns it into a deny, never an allow):

1. the token decodes as a JWS with a JSON header and claims (else ``token_malformed``);
2. its ``iss`` is a trusted issuer (``token_untrusted_issuer``);
3. its header ``alg`` is one the issuer is configured for — only asymmetric algorithms can be configured, so
   ``none`` and ``HS256`` signed with a public key as the secret never verify (``token_algorithm_not_allowed``);
4. a key of that issuer (by ``kid``; the only key when the token names none) verifies the signature with
   exactly that algorithm (``token_invalid_signature``);
5. ``aud`` holds one of the issuer's audiences (``token_wrong_audience``); ``exp``, ``iss``, ``sub`` and
   ``aud`` are present (``token_malformed``);
6. ``exp`` is after now, ``nbf`` and ``iat`` not after now, each with the issuer's leeway (``token_expired``,
   ``token_not_yet_valid``). The times are compared with the decision's own ``now`` (the clock the deadline
   and approvals use), not a second clock read inside the JWT library.

Verified tokens are cached by the SHA-256 of their text until they expire (bounded, oldest first out): a
caller reusing its token pays for the signature once. Tokens that fail are not cached.

The trusted issuers come from a JSON file (``PDX_JWKS_FILE``)::

    {"issuers": [{"issuer": "https://issuer.example", "audiences": ["pdx"], "algorithms": ["ES256"],
                  "leeway_s": 30, "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", ...}]}}]}

and from the signed compacted topic ``pdx.jwks``: key = the issuer, value = one entry of that list as JSON
(:meth:`TrustedIssuer.from_json`: the same parser as the file's), a tombstone withdraws the issuer. The worker
verifies each record's signature once, when it arrives (streams/worker/state.py), and hands the parsed issuer
to :meth:`TokenVerifier.publish` / :meth:`TokenVerifier.withdraw`; nothing on the request path changes: the
verifier's issuer lookup stays one dict lookup.

**The file wins** for an issuer in both: the file is the worker's own configuration, a pin set by whoever runs
the worker, while the topic is whatever the holder of the ``jwks`` signing key published. A compromised or
mistaken topic signer can therefore add issuers but never replace the keys, audiences or algorithms of a pinned
one; to manage a pinned issuer from the topic, remove it from the file (publishing the file's issuers to the
topic first, `pdx issuers publish FILE`, makes that a no-op for tokens).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK

from streams.errors import PdxError, UserError, quote
from streams.model.decision import ReasonCode

#: Algorithms an issuer may be configured for: asymmetric signatures only (never ``none`` or ``HS*``).
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat`` when an issuer names none.
DEFAULT_LEEWAY_S = 30.0
#: Most verified tokens kept (each a few hundred bytes of claims): beyond it the oldest entry goes.
DEFAULT_CACHE_ENTRIES = 10_000
#: Deepest RFC 8693 ``act`` nesting read; a deeper chain is malformed.
MAX_ACTOR_DEPTH = 16
#: The prefix of the context attributes an audited request gets for its token (see :meth:`audit_attributes`).
AUDIT_PREFIX = "pdx.token."


class TokenError(PdxError, ValueError):
    """A token failed verification; ``code`` is its :class:`ReasonCode` value."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code.value
        self.message = message


def token_sha256(token: str) -> str:
    """Hex SHA-256 of a token's text: what audit records keep instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims of a verified token that policies may read (``token.*``) and the audit keeps."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    expires_at: datetime
    issued_at: datetime | None = None
    jti: str | None = None
    scopes: tuple[str, ...] = ()
    #: RFC 8693 actor chain: the subjects of the nested ``act`` claims, outermost (the current actor) first
    act: tuple[str, ...] = ()
    sha256: str = ""

    def audit_attributes(self) -> dict[str, str]:
        """What an audit record keeps of the token (as ``context.attributes``): never the token itself."""
        out = {
            AUDIT_PREFIX + "issuer": self.issuer,
            AUDIT_PREFIX + "subject": self.subject,
            AUDIT_PREFIX + "sha256": self.sha256,
        }
        if self.jti is not None:
            out[AUDIT_PREFIX + "jti"] = self.jti
        if self.issued_at is not None:
            out[AUDIT_PREFIX + "iat"] = self.issued_at.isoformat()
        # the rest of what policies read (token.*), so that a replay evaluates the same claims
        out[AUDIT_PREFIX + "exp"] = self.expires_at.isoformat()
        if self.audience:
            out[AUDIT_PREFIX + "aud"] = " ".join(self.audience)
        if self.scopes:
            out[AUDIT_PREFIX + "scope"] = " ".join(self.scopes)
        if self.act:
            out[AUDIT_PREFIX + "act"] = " ".join(self.act)
        return out

    @classmethod
    def from_audit_attributes(cls, attributes: Mapping[str, str]) -> VerifiedToken | None:
        """The verified token an audited request carried, from its ``pdx.token.*`` attributes (replay); None
        when it carried no verified token. Space-separated lists, as ``scope`` is in a JWT."""
        issuer = attributes.get(AUDIT_PREFIX + "issuer")
        subject = attributes.get(AUDIT_PREFIX + "subject")
        if not issuer or not subject or any(
            v.startswith("[redacted:") for v in (issuer, subject, attributes.get(AUDIT_PREFIX + "sha256", ""))
        ):  # a caller's own pdx.token.* attributes are redacted by the worker: never a verified token
            return None
        iat = attributes.get(AUDIT_PREFIX + "iat")
        exp = attributes.get(AUDIT_PREFIX + "exp")
        return cls(
            issuer=issuer,
            subject=subject,
            audience=tuple(attributes.get(AUDIT_PREFIX + "aud", "").split()),
            expires_at=datetime.fromisoformat(exp) if exp else datetime.max.replace(tzinfo=UTC),
            issued_at=datetime.fromisoformat(iat) if iat else None,
            jti=attributes.get(AUDIT_PREFIX + "jti"),
            scopes=tuple(attributes.get(AUDIT_PREFIX + "scope", "").split()),
            act=tuple(attributes.get(AUDIT_PREFIX + "act", "").split()),
            sha256=attributes.get(AUDIT_PREFIX + "sha256", ""),
        )

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], sha256: str = "") -> VerifiedToken:
        """From a verified claims set (or a policy test case's ``token:``); ValueError if a claim has the wrong
        type. ``exp`` / ``iat`` are seconds since the epoch or timestamps."""
        sub = claims.get("sub")
        iss = claims.get("iss")
        if not isinstance(sub, str) or not sub or not isinstance(iss, str) or not iss:
            raise ValueError("the token needs string 'iss' and 'sub' claims")
        aud = claims.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(_strings(aud, "aud"))
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise ValueError("the 'jti' claim must be a string")
        exp = _instant(claims.get("exp"), "exp")
        if exp is None:
            raise ValueError("the token has no 'exp' claim")
        return cls(
            issuer=iss,
            subject=sub,
            audience=audience,
            expires_at=exp,
            issued_at=_instant(claims.get("iat"), "iat"),
            jti=jti,
            scopes=_scopes(claims),
            act=_actors(claims.get("act")),
            sha256=sha256,
        )


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"the {what!r} claim must be a string or a list of strings")
    return value


def _instant(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"the {what!r} claim must be a number of seconds since the epoch")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"the {what!r} claim is out of range") from None


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """OAuth ``scope`` (space-separated text, RFC 8693/9068) or ``scp`` (a list, or text)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return tuple(scp.split())
    if scope is not None:
        raise ValueError("the 'scope' claim must be space-separated text")
    return tuple(_strings(scp, "scp"))


def _actors(act: Any) -> tuple[str, ...]:
    chain: list[str] = []
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str):
            raise ValueError("an 'act' claim must be an object with a string 'sub'")
        if len(chain) >= MAX_ACTOR_DEPTH:
            raise ValueError(f"the 'act' chain is deeper than {MAX_ACTOR_DEPTH}")
        chain.append(act["sub"])
        act = act.get("act")
    return tuple(chain)


@dataclass(frozen=True)
class TrustedIssuer:
    """One issuer whose tokens pdx accepts: its audiences, algorithms and public keys."""

    issuer: str
    audiences: tuple[str, ...]
    algorithms: frozenset[str]
    #: public keys by ``kid`` ("" for a key without one)
    keys: Mapping[str, PyJWK] = field(repr=False)
    leeway_s: float = DEFAULT_LEEWAY_S

    @classmethod
    def from_json(cls, raw: bytes, where: str = "issuer") -> TrustedIssuer:
        """From one entry of the JWKS file as JSON bytes (a ``pdx.jwks`` record's value); UserError naming the
        problem, also for bytes that are not JSON (or are nested too deep to parse)."""
        try:
            d = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{where}: not a JSON issuer entry ({str(exc)[:120]})") from None
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "issuer") -> TrustedIssuer:
        """From one entry of the JWKS file (or of ``pdx.jwks``); UserError naming the problem."""
        if not isinstance(d, Mapping):
            raise UserError(f"{where}: expected an object")
        iss = d.get("issuer")
        if not isinstance(iss, str) or not iss:
            raise UserError(f"{where}: 'issuer' must be a non-empty string")
        where = f"issuer {quote(iss, 80)}"
        audiences = d.get("audiences")
        if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise UserError(f"{where}: 'audiences' must be a non-empty list of strings (pdx's own audience)")
        algorithms = d.get("algorithms")
        if not isinstance(algorithms, list) or not algorithms:
            raise UserError(f"{where}: 'algorithms' must list the algorithms its tokens use, e.g. [\"ES256\"]")
        for alg in algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise UserError(f"{where}: algorithm {quote(alg, 20)} is not allowed; only asymmetric ones: "
                                f"{', '.join(ASYMMETRIC_ALGORITHMS)}")
        leeway = d.get("leeway_s", DEFAULT_LEEWAY_S)
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or not 0 <= leeway <= 300:
            raise UserError(f"{where}: 'leeway_s' must be a number of seconds between 0 and 300")
        jwks = d.get("jwks")
        raw_keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(raw_keys, list) or not raw_keys:
            raise UserError(f"{where}: 'jwks' must be a JWK set with at least one key ({{\"keys\": [...]}})")
        keys: dict[str, PyJWK] = {}
        for i, jwk in enumerate(raw_keys):
            what = f"{where}: key {i}"
            if not isinstance(jwk, Mapping):
                raise UserError(f"{what}: expected a JWK object")
            if jwk.get("kty") == "oct":
                raise UserError(f"{what}: a symmetric key (kty oct) cannot be a trusted issuer key")
            if any(member in jwk for member in ("d", "p", "q", "k")):
                raise UserError(f"{what}: holds private key material; a trusted issuer's JWKS holds public keys")
            try:
                key = PyJWK(dict(jwk))
            except jwt.PyJWTError as exc:
                raise UserError(f"{what}: not a usable public JWK ({exc})") from None
            if key.algorithm_name not in algorithms:
                raise UserError(f"{what}: its algorithm {key.algorithm_name} is not in the issuer's algorithms "
                                f"{algorithms} (set the JWK's 'alg')")
            kid = jwk.get("kid") or ""
            if not isinstance(kid, str) or kid in keys:
                raise UserError(f"{what}: 'kid' must be a string, unique within the issuer")
            keys[kid] = key
        return cls(iss, tuple(audiences), frozenset(algorithms), keys, float(leeway))


def issuer_entries(
    d: Mapping[str, Any], where: str = "JWKS configuration"
) -> list[tuple[TrustedIssuer, dict[str, Any]]]:
    """Each entry of a JWKS configuration (``{"issuers": [...]}``), parsed, with the entry as written (what
    `pdx issuers publish` puts on ``pdx.jwks``); UserError naming the problem, also for an issuer listed twice."""
    issuers = d.get("issuers") if isinstance(d, Mapping) else None
    if not isinstance(issuers, list):
        raise UserError(f"{where}: expected {{\"issuers\": [...]}}")
    out: list[tuple[TrustedIssuer, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, entry in enumerate(issuers):
        issuer = TrustedIssuer.from_dict(entry, f"{where}: issuers[{i}]")
        if issuer.issuer in seen:
            raise UserError(f"{where}: issuer {quote(issuer.issuer, 80)} is configured twice")
        seen.add(issuer.issuer)
        out.append((issuer, dict(entry)))
    return out


def read_jwks_file(path: str | Path) -> dict[str, Any]:
    """The JSON of a trusted token issuers file; UserError saying what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise UserError(f"cannot read the trusted token issuers file {p}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{p} is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected {{\"issuers\": [...]}}")
    return data


def entry_bytes(entry: Mapping[str, Any]) -> bytes:
    """One issuer entry as the JSON value of its ``pdx.jwks`` record (compact, keys sorted: the same entry
    always signs to the same bytes)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class TokenVerifier:
    """Verifies workload tokens against trusted issuers, caching verified tokens until they expire.

    Two sources of issuers: the *pinned* ones given to the constructor (the JWKS file) and the *published* ones
    (``pdx.jwks``, changed live by :meth:`publish` / :meth:`withdraw`). :attr:`issuers` is the merge, rebuilt
    whenever a published issuer changes (a pinned issuer wins over a published one of the same name, see the
    module docstring), so a verification looks its issuer up in one dict, whatever the sources.
    """

    def __init__(self, issuers: Iterable[TrustedIssuer] = (), cache_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        #: the issuers in force: the published ones overlaid with the pinned ones (rebuilt, never mutated)
        self.issuers: dict[str, TrustedIssuer] = {}
        self.pinned: dict[str, TrustedIssuer] = {}
        for issuer in issuers:
            if issuer.issuer in self.pinned:
                raise UserError(f"issuer {quote(issuer.issuer, 80)} is configured twice")
            self.pinned[issuer.issuer] = issuer
        #: issuers from pdx.jwks, by issuer (those shadowed by a pinned issuer included)
        self.published: dict[str, TrustedIssuer] = {}
        self.issuers = dict(self.pinned)
        self.cache_entries = cache_entries
        self._cache: dict[str, VerifiedToken] = {}
        #: verifications done (cache misses that reached the signature check), for benchmarks and logs
        self.verified = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "JWKS configuration") -> TokenVerifier:
        return cls(issuer for issuer, _ in issuer_entries(d, where))

    @classmethod
    def from_file(cls, path: str | Path) -> TokenVerifier:
        return cls.from_dict(read_jwks_file(path), str(path))

    # ---- live changes from pdx.jwks (called by the worker's state replica, never on the request path) ----
    def publish(self, issuer: TrustedIssuer) -> bool:
        """Trust ``issuer`` as published on pdx.jwks (replacing its previous entry); returns whether it is in
        force, False when a pinned issuer of the same name shadows it."""
        self.published[issuer.issuer] = issuer
        self._rebuild()
        return self.issuers[issuer.issuer] is issuer

    def withdraw(self, name: str) -> bool:
        """Forget the published issuer ``name`` (a tombstone); returns whether one was published. A pinned
        issuer of that name stays trusted."""
        found = self.published.pop(name, None) is not None
        if found:
            self._rebuild()
        return found

    def _rebuild(self) -> None:
        """Swap in the merged issuers, then drop the cached tokens of every issuer that changed or went: a token
        verified with a withdrawn key must not stay valid from the cache."""
        old = self.issuers
        new = {**self.published, **self.pinned}
        self.issuers = new
        stale = [digest for digest, v in self._cache.items() if new.get(v.issuer) is not old.get(v.issuer)]
        for digest in stale:
            del self._cache[digest]

    def verify(self, token: str, now: datetime) -> VerifiedToken:
        """The verified claims of ``token`` at ``now``; TokenError (with the reason code) otherwise."""
        digest = token_sha256(token)
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at.timestamp() + self.issuers[cached.issuer].leeway_s > now.timestamp():
                return cached
            del self._cache[digest]
        verified = self._verify(token, digest, now)
        cache = self._cache
        if len(cache) >= self.cache_entries:
            del cache[next(iter(cache))]  # the oldest entry
        cache[digest] = verified
        return verified

    def _verify(self, token: str, digest: str, now: datetime) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError(ReasonCode.TOKEN_MALFORMED, f"the token is not a well-formed JWT: {exc}") from None
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise TokenError(ReasonCode.TOKEN_MALFORMED, "the token has no 'iss' (issuer) claim")
        issuer = self.issuers.get(iss)
        if issuer is None:
            raise TokenError(ReasonCode.TOKEN_UNTRUSTED_ISSUER, f"issuer {quote(iss, 80)} is not trusted")
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise TokenError(ReasonCode.TOKEN_ALGORITHM_NOT_ALLOWED,
                             f"algorithm {quote(alg, 20)} is not one issuer {quote(iss, 80)} signs with "
                             f"({', '.join(sorted(issuer.algorithms))})")
        kid = header.get("kid")
        key: PyJWK | None
        if kid is None and len(issuer.keys) == 1:
            key = next(iter(issuer.keys.values()))
        else:
            key = issuer.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError(ReasonCode.TOKEN_INVALID_SIGNATURE,
                             f"issuer {quote(iss, 80)} has no key {quote(kid, 40)} (kid) to verify the token")
        self.verified += 1
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                # the times are checked below against the decision's clock
                options={"require": ["exp", "iss", "sub", "aud"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise TokenError(ReasonCode.TOKEN_INVALID_SIGNATURE,
                             f"the token's signature does not verify with key {quote(kid, 40)} of issuer "
                             f"{quote(iss, 80)}") from None
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError(ReasonCode.TOKEN_ALGORITHM_NOT_ALLOWED, f"algorithm not allowed: {exc}") from None
        except jwt.InvalidAudienceError as exc:
            raise TokenError(ReasonCode.TOKEN_WRONG_AUDIENCE,
                             f"the token's audience is not {', '.join(issuer.audiences)}: {exc}") from None
        except jwt.InvalidIssuerError as exc:
            raise TokenError(ReasonCode.TOKEN_UNTRUSTED_ISSUER, f"untrusted issuer: {exc}") from None
        except jwt.PyJWTError as exc:
            raise TokenError(ReasonCode.TOKEN_MALFORMED, f"the token is malformed: {exc}") from None
        try:
            verified = VerifiedToken.from_claims(claims, digest)
            nbf = _instant(claims.get("nbf"), "nbf")
        except ValueError as exc:
            raise TokenError(ReasonCode.TOKEN_MALFORMED, f"the token is malformed: {exc}") from None
        t = now.timestamp()
        leeway = issuer.leeway_s
        if verified.expires_at.timestamp() + leeway <= t:
            raise TokenError(ReasonCode.TOKEN_EXPIRED,
                             f"the token expired at {verified.expires_at.isoformat()}")
        if nbf is not None and nbf.timestamp() - leeway > t:
            raise TokenError(ReasonCode.TOKEN_NOT_YET_VALID, f"the token is not valid before {nbf.isoformat()}")
        if verified.issued_at is not None and verified.issued_at.timestamp() - leeway > t:
            raise TokenError(ReasonCode.TOKEN_NOT_YET_VALID,
                             f"the token was issued in the future ({verified.issued_at.isoformat()})")
        return verified
