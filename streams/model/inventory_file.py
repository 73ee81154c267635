"""Reading identity inventory files (YAML or CSV) for `pdx inventory load`.

YAML: a list of identities, or ``{identities: [...]}``, in the Identity contract shape (docs/contracts.md).
CSV: one row per identity, or per credential (rows with the same id merge their credentials); list columns
(environments, scopes, tags, approved_repositories, workload_subjects) are separated by ``;``; credential columns are
``credential_id, credential_type, credential_created_at, credential_rotated_at``.
Timestamps may be ISO-8601 or relative to load time: ``now``, ``now-90d``, ``now-12h``, ``now+30m``.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from streams.errors import UserError
from streams.model.identity import Identity

_RELATIVE = re.compile(r"^now(?:([+-])(\d+(?:\.\d+)?)([smhd]))?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TS_FIELDS = ("created_at", "rotated_at", "expires_at", "updated_at", "granted_at")
_LIST_COLUMNS = ("environments", "scopes", "tags", "approved_repositories", "workload_subjects")


def resolve_relative(value: Any, now: datetime) -> Any:
    """'now-90d' → a datetime 90 days before now; anything else unchanged."""
    if isinstance(value, str):
        m = _RELATIVE.match(value.strip())
        if m:
            sign, amount, unit = m.groups()
            if not sign:
                return now
            delta = timedelta(seconds=float(amount) * _UNIT_S[unit])
            return now - delta if sign == "-" else now + delta
    return value


def _timestamp(value: Any, now: datetime) -> Any:
    # YAML reads an unquoted 2025-01-01 as a date: take it as midnight UTC, like the quoted form.
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return resolve_relative(value, now)


def _resolve_times(obj: Any, now: datetime) -> Any:
    """Resolve relative and date-only timestamps in the timestamp fields (never inside free `attributes`)."""
    if isinstance(obj, dict):
        return {
            k: _timestamp(v, now) if k in _TS_FIELDS else v if k == "attributes" else _resolve_times(v, now)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_resolve_times(v, now) for v in obj]
    return obj


def _from_csv(path: Path) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's "CSV UTF-8" writes a BOM
        reader = csv.DictReader(f)
        for row in reader:
            lineno = reader.line_num
            iid = (row.get("id") or "").strip()
            if not iid:
                raise UserError(f"{path}:{lineno}: the 'id' column is empty")
            ident = merged.setdefault(iid, {"id": iid, "credentials": []})
            for key, value in row.items():
                if key is None or value is None or value == "" or key.startswith("credential_"):
                    continue
                ident[key] = [v.strip() for v in value.split(";") if v.strip()] if key in _LIST_COLUMNS else value
            if row.get("credential_id"):
                cred = {
                    "id": row["credential_id"],
                    "type": row.get("credential_type") or "api_key",
                    "created_at": row.get("credential_created_at") or "now",
                }
                if row.get("credential_rotated_at"):
                    cred["rotated_at"] = row["credential_rotated_at"]
                ident["credentials"].append(cred)
    return list(merged.values())


def read_inventory(path: str | Path, now: datetime | None = None) -> list[Identity]:
    """Parse and validate every identity in the file; a bad one is an error naming it (nothing is loaded)."""
    path = Path(path)
    now = now or datetime.now(UTC)
    if not path.exists():
        raise UserError(f"inventory file {path} does not exist")
    if path.suffix.lower() == ".csv":
        raw: Any = _from_csv(path)
    else:
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML: {exc}") from None
        if isinstance(raw, dict):
            raw = raw.get("identities")
        if not isinstance(raw, list):
            raise UserError(f"{path}: expected a list of identities (or a mapping with an 'identities' list)")
    identities, problems, seen = [], [], set()
    for i, item in enumerate(raw):
        try:
            item = _resolve_times(item, now)
            if isinstance(item, dict):
                item.setdefault("updated_at", now)
            ident = Identity.from_dict(item)
        except (ValueError, TypeError) as exc:
            problems.append(f"  entry {i + 1}: {exc}")
            continue
        if ident.id in seen:
            problems.append(f"  entry {i + 1}: duplicate identity id {ident.id!r}")
        seen.add(ident.id)
        identities.append(ident)
    if problems:
        raise UserError(f"{path}: {len(problems)} invalid identities, nothing loaded:\n" + "\n".join(problems))
    return identities
