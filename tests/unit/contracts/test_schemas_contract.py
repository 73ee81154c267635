"""schemas/*.avsc must match docs/contracts.md field for field, and schemas/README.md must match the code.

The field lists are parsed from the markdown (bullet lists under "## <Record>" headings, plus the inline
definitions of Resource, RequestContext, Reason and MonitorOutcome), so changing one side without the other
fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from streams.config import REPO_ROOT
from streams.contracts import schema_dir, wire

#: The schemas as wire.py loads them (package data; in a checkout, schemas/ itself).
SCHEMAS = schema_dir()
CONTRACTS = (REPO_ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
README = (SCHEMAS / "README.md").read_text(encoding="utf-8")

#: `name: type` where type is a union `["null", T]`, `enum Name`, or a word like array<string> / timestamp-millis.
FIELD = re.compile(r'(\w+): (\["null", [\w<>\-]+\]|enum \w+|[\w<>\-]+)')


def _bullet_fields(record: str) -> list[tuple[str, str]]:
    """Fields listed as `- name: type ...` bullets under the `## <record>` heading."""
    match = re.search(rf"^## {record}\b.*?\n(.*?)(?=^## |\Z)", CONTRACTS, re.M | re.S)
    assert match, f"docs/contracts.md has no '## {record}' section"
    fields = []
    for line in match.group(1).splitlines():
        if line.startswith("- "):
            found = FIELD.match(line[2:])
            assert found, f"cannot parse contract bullet {line!r}"
            fields.append((found.group(1), found.group(2)))
    return fields


def _inline_fields(record: str) -> list[tuple[str, str]]:
    """Fields of a record defined inline: `Resource: id: string; ...` or `Reason = {code: string, ...}`."""
    braces = re.search(rf"{record} = \{{(.*?)\}}", CONTRACTS, re.S)
    if braces:
        text = braces.group(1)
    else:
        paragraph = re.search(rf"^{record}: (.*?)(?:\n\n)", CONTRACTS, re.M | re.S)
        assert paragraph, f"docs/contracts.md has no inline definition of {record}"
        text = re.sub(r"\([^)]*\)", "", paragraph.group(1))  # drop "(public | internal | ...)" remarks
    return [(m.group(1), m.group(2)) for m in FIELD.finditer(text)]


def _contract(record: str) -> list[tuple[str, str]]:
    if record in ("Resource", "RequestContext", "Reason", "MonitorOutcome"):
        return _inline_fields(record)
    return _bullet_fields(record)


def _named_types() -> dict[str, dict[str, Any]]:
    """Every named type defined in schemas/*.avsc by short name; fails on a duplicate definition."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed"):
                name = node["name"]
                assert name not in found, f"{name} is defined twice; define it once and reference it by name"
                found[name] = node
                for field in node.get("fields", ()):
                    walk(field["type"])
            elif node.get("type") == "array":
                walk(node["items"])
            elif node.get("type") == "map":
                walk(node["values"])

    for filename in wire.SCHEMA_FILES.values():
        walk(json.loads((SCHEMAS / filename).read_text(encoding="utf-8")))
    return found


NAMED = _named_types()


def _render(avro_type: Any) -> str:
    """An Avro field type in the notation of docs/contracts.md."""
    if isinstance(avro_type, str):
        return avro_type.rpartition(".")[2]
    if isinstance(avro_type, list):
        assert len(avro_type) == 2 and avro_type[0] == "null", f"only [null, T] unions are used: {avro_type}"
        return f'["null", {_render(avro_type[1])}]'
    if "logicalType" in avro_type:
        return str(avro_type["logicalType"])
    kind = avro_type["type"]
    if kind == "array":
        return f"array<{_render(avro_type['items'])}>"
    if kind == "map":
        return f"map<{_render(avro_type['values'])}>"
    if kind == "enum":
        return f"enum {avro_type['name']}"
    if kind in ("record", "fixed"):
        return str(avro_type["name"])
    return _render(kind)


RECORDS = [
    "Identity",
    "Credential",
    "Approval",
    "AccessRequest",
    "Resource",
    "RequestContext",
    "Decision",
    "Reason",
    "MonitorOutcome",
    "PolicyBundle",
    "AuditRecord",
    "ChainLink",
    "ReliedOn",
    "ApprovalRelied",
    "AuditCheckpoint",
    "DelegationGrant",
    "ApprovalRequest",
]


def test_every_contract_record_is_a_schema_record() -> None:
    assert set(RECORDS) <= set(NAMED)
    assert {name for name, node in NAMED.items() if node["type"] == "record"} == set(RECORDS)


@pytest.mark.parametrize("record", RECORDS)
def test_schema_fields_match_contract(record: str) -> None:
    expected = _contract(record)
    assert expected, f"no fields parsed for {record} from docs/contracts.md"
    actual = [(field["name"], _render(field["type"])) for field in NAMED[record]["fields"]]
    assert actual == expected


def test_decision_outcome_symbols_match_contract() -> None:
    match = re.search(r"DecisionOutcome \{([^}]*)\}", CONTRACTS)
    assert match
    assert NAMED["DecisionOutcome"]["symbols"] == [s.strip() for s in match.group(1).split(",")]
    assert NAMED["DecisionOutcome"]["default"] == "deny"  # an unknown future symbol reads as deny


def test_top_level_schemas_live_in_their_files_under_dev_pdx() -> None:
    for name, filename in wire.SCHEMA_FILES.items():
        node = json.loads((SCHEMAS / filename).read_text(encoding="utf-8"))
        assert (node["namespace"], node["name"]) == ("dev.pdx", name)
    assert sorted(p.name for p in SCHEMAS.iterdir() if p.name.endswith(".avsc")) == sorted(wire.SCHEMA_FILES.values())


@pytest.mark.parametrize("record", sorted(NAMED))
def test_every_type_and_field_is_documented_and_defaults_follow_the_rules(record: str) -> None:
    node = NAMED[record]
    assert node.get("doc"), f"{record} has no doc"
    for field in node.get("fields", ()):
        where = f"{record}.{field['name']}"
        assert field.get("doc"), f"{where} has no doc"
        kind = field["type"]
        if isinstance(kind, list):
            assert kind[0] == "null" and field.get("default", "absent") is None, f"{where}: optional => default null"
        elif isinstance(kind, dict) and kind.get("type") == "array":
            assert field.get("default") == [], f"{where}: arrays default to []"
        elif isinstance(kind, dict) and kind.get("type") == "map":
            assert field.get("default") == {}, f"{where}: maps default to {{}}"
        elif kind == "boolean":
            assert field.get("default") is False, f"{where}: booleans default to false"
        else:
            assert "default" not in field, f"{where}: required fields have no default (contracts.md)"


def test_readme_load_order_matches_the_code() -> None:
    listed = re.findall(r"^\d+\. `(\w+\.avsc)`", README, re.M)
    assert listed == list(wire.SCHEMA_FILES.values())


def test_readme_fingerprint_table_matches_the_code() -> None:
    for name in wire.known_schemas():
        row = re.search(rf"^\| {name} \| `(0x[0-9a-f]{{16}})` \| `([0-9a-f ]+)` \|", README, re.M)
        assert row, f"schemas/README.md has no fingerprint row for {name}; run `python -m streams.contracts.wire`"
        assert row.group(1) == wire.fingerprint_hex(name), f"{name} changed: update schemas/README.md"
        assert bytes.fromhex(row.group(2)) == b"\xc3\x01" + wire.fingerprint(name)


def test_contract_file_exists() -> None:
    assert Path(REPO_ROOT / "docs" / "contracts.md").is_file()
