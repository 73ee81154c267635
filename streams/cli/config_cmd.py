"""`pdx config [--json]`: the effective settings and where each came from; secrets masked.

Every setting is declared once in streams/config.py (``setting(...)``); this prints what
``Settings.from_env_explained`` read: the variable, the value, and its source (``env``: the variable is set,
``default``, or ``derived`` from other settings), then each ClickHouse role's login and where it comes from
(a PDX_CLICKHOUSE_* variable, the dev stack's credentials file, or none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streams import config

MASK = "****"


def _shown(value: Any, secret: bool) -> Any:
    if secret:
        return MASK if value else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_shown(v, False) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v, False) for k, v in value.items()}
    return value


def _login_origin(cfg: config.Settings, role: str) -> dict[str, Any]:
    prefix = config.ENV_CLICKHOUSE_ROLE_PREFIX
    for key, env in ((role, f"{prefix}{role.upper()}_USER"), ("*", f"{prefix}USER")):
        if key in cfg.clickhouse_logins:
            user, password = cfg.clickhouse_logins[key]
            return {"user": user, "password": MASK if password else None, "source": f"env {env}"}
    path = cfg.clickhouse_credentials or cfg.state_dir / config.CLICKHOUSE_CREDENTIALS_FILE
    login = config.dev_clickhouse_login(path, role, cfg.clickhouse_url)
    if login is not None:
        return {"user": login[0], "password": MASK if login[1] else None, "source": f"dev stack file {path}"}
    return {"user": "default", "password": None, "source": "none (the server's default user)"}


def explain(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The effective settings as JSON-able data (``env``: default the process environment)."""
    cfg, origins = config.Settings.from_env_explained(env)
    settings = [
        {"env": o.env, "field": o.field, "value": _shown(o.value, o.secret), "source": o.source, "doc": o.doc}
        for o in origins
    ]
    issuers = cfg.token_issuers_file
    return {
        "settings": settings,
        "clickhouse_logins": {role: _login_origin(cfg, role) for role in config.CLICKHOUSE_ROLES},
        "token_issuers_file": {
            "value": str(issuers) if issuers else None,
            "source": "env " + config.ENV_JWKS_FILE if cfg.jwks_file else ("dev stack file" if issuers else "none"),
        },
    }


def cmd_config(args: argparse.Namespace) -> int:
    data = explain()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [(s["env"], json.dumps(s["value"]) if not isinstance(s["value"], str) else s["value"], s["source"])
            for s in data["settings"]]
    width = max(len(r[0]) for r in rows)
    vwidth = min(60, max(len(r[1]) for r in rows))
    for env, value, source in rows:
        print(f"{env:<{width}}  {value:<{vwidth}}  ({source})")
    print()
    for role, login in data["clickhouse_logins"].items():
        pw = " password " + login["password"] if login["password"] else ""
        print(f"clickhouse {role:<6}  user {login['user']}{pw}  ({login['source']})")
    t = data["token_issuers_file"]
    print(f"token issuers      {t['value']}  ({t['source']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="print the effective settings and where each came from (secrets masked)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_config)
