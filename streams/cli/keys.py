"""`pdx keys generate | list`: Ed25519 keys that sign policy bundles, inventory records, approvals, audit
checkpoints and trusted token issuers on pdx.jwks (streams/contracts/signing.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streams import config
from streams.console import say
from streams.contracts import signing
from streams.errors import UserError


def cmd_keys_generate(args: argparse.Namespace) -> int:
    cfg = config.load()
    if args.dev:
        created = signing.ensure_dev_keys(cfg)
        say(f"dev keys in {cfg.signing_keys_dir}: {len(created)} created, {len(signing.KINDS) - len(created)} kept")
        return 0
    if not args.kind:
        raise UserError("pdx keys generate: give --kind (one of " + ", ".join(signing.KINDS) + ") or --dev")
    out = Path(args.out) if args.out else cfg.signing_keys_dir
    name = args.name or args.kind
    private, public = out / f"{name}.key", out / f"{name}.pub"
    if private.exists():
        raise UserError(f"{private} exists: keys are never overwritten; choose another --name or --out")
    key = signing.SigningKey.generate()
    key.write(private, public)
    print(key.key_id)
    say(
        f"wrote {private} (private, mode 0600) and {public}; workers trust it for {args.kind} records when it is "
        f"listed in {config.ENV_TRUSTED_KEYS_PREFIX}{args.kind.upper()} or sits in their keys dir as {args.kind}*.pub"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    cfg = config.load()
    rows: list[dict[str, Any]] = []
    for kind in signing.KINDS:
        signer = signing.private_key_path(cfg, kind)
        trusted = [
            {"file": str(path), "key_id": signing.key_id_of(signing.load_public(path))}
            for path in signing.trusted_key_files(cfg, kind)
        ]
        rows.append({"kind": kind, "signing_key": str(signer) if signer.exists() else None, "trusted": trusted})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        ids = ", ".join(t["key_id"] for t in row["trusted"]) or "NONE: records of this kind are refused"
        print(f"{row['kind']:<10} signs with {row['signing_key'] or '-'}; trusts {ids}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser(
        "keys", help="signing keys for policy bundles, inventory, approvals, audit checkpoints, token issuers"
    )
    keys_sub = group.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    p = keys_sub.add_parser("generate", help="create an Ed25519 key pair (prints its key id)")
    p.add_argument("--kind", choices=signing.KINDS, help="what the key signs")
    p.add_argument("--name", help="file stem (default: the kind; e.g. policy-2027 for a rotation)")
    p.add_argument("--out", help="directory (default: PDX_KEYS_DIR or <state dir>/keys)")
    p.add_argument("--dev", action="store_true", help="create any missing dev key pair of every kind")
    p.set_defaults(func=cmd_keys_generate)
    p = keys_sub.add_parser("list", help="which key signs each kind, and which keys workers trust")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
