"""`pdx issuers publish | list | remove`: the trusted workload-token issuers on the signed topic pdx.jwks.

Each record is one issuer: key = its ``iss``, value = its entry of a JWKS file (streams/model/tokens.py, the same
format and parser as ``PDX_JWKS_FILE``), signed with the ``jwks`` key (streams/contracts/signing.py). Workers
apply a record when it arrives, without a restart; an issuer their own JWKS file pins wins over the topic's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from streams import config
from streams.console import say
from streams.contracts import signing
from streams.errors import UserError, quote
from streams.kafka import clients
from streams.kafka.state import delete_issuer, latest_records, partition_count, put_issuers
from streams.model.tokens import TrustedIssuer, entry_bytes, issuer_entries, read_jwks_file

_KEY_HELP = "private key that signs the pdx.jwks records (default: PDX_SIGNING_KEY_JWKS or <keys dir>/jwks.key)"


def _trust_note(cfg: config.Settings, signer: signing.SigningKey) -> None:
    """Say so when this machine's settings do not trust the signer for jwks records: workers configured alike
    refuse what was just produced (counted as state.rejected{kind="jwks"})."""
    trusted = signing.trusted_keys(cfg).key_ids(signing.JWKS)
    if signer.key_id not in trusted:
        say(f"note: key {signer.key_id} is not among the keys trusted here for jwks records "
            f"({', '.join(trusted) or 'none'}): workers refuse its records unless they trust it "
            f"({config.ENV_TRUSTED_KEYS_PREFIX}JWKS or jwks*.pub in their keys dir)")


async def _publish(cfg: config.Settings, entries: list[tuple[str, bytes]], signer: signing.SigningKey) -> int:
    producer = await clients.start_producer(cfg)
    try:
        await partition_count(producer, config.TOPIC_JWKS)  # a UserError naming `pdx topics create` if missing
        return await put_issuers(producer, entries, signer)
    finally:
        await producer.stop()


def cmd_issuers_publish(args: argparse.Namespace) -> int:
    cfg = config.load()
    signer = signing.signing_key(cfg, signing.JWKS, args.key)
    parsed = issuer_entries(read_jwks_file(args.file), str(args.file))  # validated whole before anything is sent
    if not parsed:
        raise UserError(f"{args.file} lists no issuers: nothing to publish")
    entries = [(issuer.issuer, entry_bytes(entry)) for issuer, entry in parsed]
    n = asyncio.run(_publish(cfg, entries, signer))
    names = ", ".join(issuer.issuer for issuer, _ in parsed)
    say(f"published {n} trusted issuer(s) to {config.TOPIC_JWKS}, signed by key {signer.key_id}: {names}")
    _trust_note(cfg, signer)
    return 0


def _rows(cfg: config.Settings) -> list[dict[str, Any]]:
    """What pdx.jwks holds now: one row per issuer (tombstoned ones left out), with whether this machine's
    trusted jwks keys accept its signature (what a worker configured alike would do)."""
    records = asyncio.run(latest_records(cfg, config.TOPIC_JWKS))
    trust = signing.trusted_keys(cfg)
    rows = []
    for key, (value, headers) in sorted(records.items()):
        if value is None:
            continue
        name = key.decode(errors="replace")
        try:
            trust.verify(signing.JWKS, key, value, headers)
            status = "trusted"
        except signing.SignatureError as exc:
            status = f"refused: {exc}"
        try:
            issuer = TrustedIssuer.from_json(value, f"record {quote(name, 80)}")
            kids = sorted(issuer.keys)
            audiences = list(issuer.audiences)
            if issuer.issuer != name:
                status = f"refused: its value is issuer {quote(issuer.issuer, 80)}"
        except UserError as exc:
            kids, audiences, status = [], [], f"refused: {exc}"
        raw_at = signing.header_value(headers, signing.HEADER_SIGNED_AT)
        signed_at = (datetime.fromtimestamp(int(raw_at) / 1000, UTC).isoformat(timespec="seconds")
                     if raw_at.isdigit() else None)
        rows.append({"issuer": name, "key_ids": kids, "audiences": audiences,
                     "signer": signing.header_value(headers, signing.HEADER_KEY_ID) or None,
                     "signed_at": signed_at, "status": status})
    return rows


def cmd_issuers_list(args: argparse.Namespace) -> int:
    rows = _rows(config.load())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        say(f"{config.TOPIC_JWKS} holds no trusted issuers (publish some with `pdx issuers publish FILE`)")
        return 0
    for row in rows:
        print(f"{row['issuer']}  keys {', '.join(row['key_ids']) or '-'}  signer {row['signer'] or '-'}  "
              f"signed_at {row['signed_at'] or '-'}  {row['status']}")
    return 0


async def _remove(cfg: config.Settings, issuer: str, signer: signing.SigningKey) -> None:
    records = await latest_records(cfg, config.TOPIC_JWKS)
    found = records.get(issuer.encode())
    if found is None or found[0] is None:
        raise UserError(f"issuer {quote(issuer, 80)} is not on {config.TOPIC_JWKS}: `pdx issuers list` shows "
                        "what is there (an issuer pinned by a worker's JWKS file is removed from that file)")
    producer = await clients.start_producer(cfg)
    try:
        await delete_issuer(producer, issuer, signer)
    finally:
        await producer.stop()


def cmd_issuers_remove(args: argparse.Namespace) -> int:
    cfg = config.load()
    signer = signing.signing_key(cfg, signing.JWKS, args.key)
    asyncio.run(_remove(cfg, args.issuer, signer))
    say(f"removed issuer {args.issuer} from {config.TOPIC_JWKS} (signed tombstone, key {signer.key_id}); workers "
        "deny its tokens token_untrusted_issuer unless their JWKS file pins it")
    _trust_note(cfg, signer)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("issuers", help=f"trusted workload-token issuers on the signed topic {config.TOPIC_JWKS}")
    issuers_sub = group.add_subparsers(dest="issuers_command", metavar="SUBCOMMAND", required=True)
    p = issuers_sub.add_parser("publish", help="publish every issuer of a JWKS file, signed (workers apply it live)")
    p.add_argument("file", help='a JWKS file: {"issuers": [{issuer, audiences, algorithms, leeway_s, jwks}]}')
    p.add_argument("--key", help=_KEY_HELP)
    p.set_defaults(func=cmd_issuers_publish)
    p = issuers_sub.add_parser("list", help="the issuers the topic holds: key ids, signer, signed_at, trusted?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_issuers_list)
    p = issuers_sub.add_parser("remove", help="withdraw an issuer (a signed tombstone): its tokens are denied")
    p.add_argument("issuer", help="the issuer's 'iss', as `pdx issuers list` shows it")
    p.add_argument("--key", help=_KEY_HELP)
    p.set_defaults(func=cmd_issuers_remove)
