"""Validate policy documents into the canonical policy content, collecting every problem.

Validation never raises on bad *content*: every problem is collected with file, line and rule id so a person
can fix them all in one pass. The canonical form is the authored syntax fully expanded (shorthand written out,
``when`` always a list), so the same validator accepts both the YAML files and a published bundle.

Why apart from loader.py: the compiler validates every bundle it is offered (:func:`validate_bundle`), and
``PolicySet.compile()`` in loader.py calls the compiler, so the validator sits below both and imports neither.
Operand type rules come from the operator registry (operators.py).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.errors import PolicyError
from streams.model import iso_utc, parse_timestamp
from streams.model.durations import parse_duration_s
from streams.policy.language import (
    ATTRIBUTES,
    COMBINATORS,
    EFFECTS,
    FREE_ATTRIBUTE_PREFIXES,
    MODES,
    OBLIGATIONS,
    PRINCIPAL_PREFIX,
    QUANTIFIERS,
    SET,
    WEEKDAYS,
    lookup_attribute,
    minutes_of_day,
)
from streams.policy.operators import OPERATORS, check_operand, operators_for

BUNDLE_FORMAT = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
Locations = dict[str, tuple[str, int | None]]  # rule id -> (file, line)


# ---- problems ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy set (or a warning from lint)."""

    file: str
    line: int | None
    rule_id: str | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        rule = f" [rule {self.rule_id}]" if self.rule_id else ""
        return f"{where}:{rule} {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "rule_id": self.rule_id, "message": self.message,
                "severity": self.severity}


class PolicyValidationError(PolicyError):
    """A policy set (directory or bundle content) is invalid; ``.problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        first = str(problems[0]) if problems else "invalid policy set"
        more = f" (and {len(problems) - 1} more problem(s); run `pdx policy validate` to list them)" if len(
            problems) > 1 else ""
        super().__init__(f"invalid policy set: {first}{more}")


# ---- documents with line numbers ------------------------------------------------------------------------


class LineDict(dict):  # type: ignore[type-arg]
    """A dict that remembers where it (and each key) was in the YAML file."""

    line: int | None = None
    key_lines: dict[Any, int]
    duplicate_keys: list[tuple[Any, int]]


def _line(node: Any, key: Any = None) -> int | None:
    if isinstance(node, LineDict):
        if key is not None and key in node.key_lines:
            return node.key_lines[key]
        return node.line
    return None


# ---- validation -----------------------------------------------------------------------------------------


class _Validator:
    """Walks documents, collects problems and builds the canonical content."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.policies: list[dict[str, Any]] = []
        self.schedules: dict[str, dict[str, Any]] = {}
        self.locations: dict[str, tuple[str, int | None]] = {}  # rule id -> (file, line)
        self.policy_files: dict[str, str] = {}  # policy name -> file
        self._schedule_refs: list[tuple[str, str, int | None, str | None]] = []  # name, file, line, rule
        self._schedule_where: dict[str, tuple[str, int | None]] = {}
        self._quantifier: str | None = None  # the principal quantifier being validated (principal.* readable)

    def err(self, file: str, line: int | None, rule: str | None, msg: str) -> None:
        self.problems.append(Problem(file, line, rule, msg))

    # -- documents --
    def document(self, file: str, doc: Any) -> None:
        if doc is None:
            self.err(file, None, None, "file is empty; a policy file needs name, owner, mode, controls and rules")
            return
        if not isinstance(doc, Mapping):
            self.err(file, _line(doc), None, "a policy file must be a mapping with name, owner, mode, rules")
            return
        self._dups(file, doc, None)
        if "schedules" in doc:
            self.schedule_block(file, doc, doc["schedules"])
        if "rules" not in doc:
            if "schedules" not in doc:
                self.err(file, _line(doc), None, "no 'rules' (a policy file) and no 'schedules' (a schedule file)")
            else:
                extra = set(doc) - {"schedules", "description"}
                for k in sorted(map(str, extra)):
                    self.err(file, _line(doc, k), None, f"unknown key {k!r} in a schedule file")
            return
        self.policy(file, doc)

    def _dups(self, file: str, node: Any, rule: str | None) -> None:
        for key, line in getattr(node, "duplicate_keys", []):
            self.err(file, line, rule, f"duplicate key {key!r} (YAML keeps only the last one)")

    def policy(self, file: str, doc: Mapping[str, Any]) -> None:
        allowed = {"name", "description", "owner", "mode", "controls", "timezone", "rules", "schedules"}
        for k in doc:
            if k not in allowed:
                self.err(file, _line(doc, k), None, f"unknown policy key {k!r}{_suggest(str(k), allowed)}")
        name = doc.get("name")
        if not isinstance(name, str) or not _ID_RE.match(name):
            self.err(file, _line(doc, "name"), None,
                     "policy 'name' is required: letters, digits, '-', '_' or '.', e.g. production-data-access")
            name = f"<unnamed in {file}>"
        elif name in self.policy_files:
            self.err(file, _line(doc, "name"), None,
                     f"policy name {name!r} is already used by {self.policy_files[name]}")
        self.policy_files.setdefault(name, file)
        owner = doc.get("owner")
        if not isinstance(owner, str) or not owner:
            self.err(file, _line(doc, "owner"), None, "policy 'owner' is required (the team answerable for it)")
        description = doc.get("description", "")
        if not isinstance(description, str):
            self.err(file, _line(doc, "description"), None, "'description' must be a string")
            description = ""
        mode = doc.get("mode")
        if mode not in MODES:
            self.err(file, _line(doc, "mode"), None, f"'mode' must be one of {', '.join(MODES)}; got {mode!r}")
        controls = doc.get("controls", [])
        if not isinstance(controls, list) or not all(isinstance(c, str) and c for c in controls):
            self.err(file, _line(doc, "controls"), None,
                     "'controls' must be a list of control ids, e.g. [OWASP-NHI-04, NIST-CSF-2.0:PR.AA-05]")
            controls = []
        tz = doc.get("timezone", "UTC")
        tz = self._timezone(file, _line(doc, "timezone"), None, tz)
        rules_node = doc.get("rules")
        rules: list[dict[str, Any]] = []
        if not isinstance(rules_node, list) or not rules_node:
            self.err(file, _line(doc, "rules"), None, "'rules' must be a non-empty list of rules")
        else:
            for rule in rules_node:
                out = self.rule(file, rule, name)
                if out is not None:
                    rules.append(out)
        self.policies.append({
            "name": name,
            "description": description,
            "owner": owner if isinstance(owner, str) else "",
            "mode": mode if mode in MODES else "enforce",
            "controls": list(controls),
            "timezone": tz,
            "rules": rules,
        })

    def _timezone(self, file: str, line: int | None, rule: str | None, tz: Any) -> str:
        if not isinstance(tz, str):
            self.err(file, line, rule, f"timezone must be an IANA name such as UTC or Europe/Berlin; got {tz!r}")
            return "UTC"
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            self.err(file, line, rule, f"unknown timezone {tz!r} (use an IANA name such as UTC or Europe/Berlin)")
            return "UTC"
        return tz

    def rule(self, file: str, rule: Any, policy: str) -> dict[str, Any] | None:
        if not isinstance(rule, Mapping):
            self.err(file, _line(rule), None, "each rule must be a mapping with id, effect, when, reason")
            return None
        rid = rule.get("id")
        if not isinstance(rid, str) or not _ID_RE.match(rid):
            self.err(file, _line(rule, "id"), None,
                     f"rule 'id' is required: letters, digits, '-', '_' or '.'; got {rid!r}")
            return None
        self._dups(file, rule, rid)
        line = _line(rule)
        if rid in self.locations:
            other_file, other_line = self.locations[rid]
            self.err(file, _line(rule, "id"), rid,
                     f"duplicate rule id {rid!r}: also defined at {other_file}:{other_line} "
                     "(ids are unique per bundle)")
        else:
            self.locations[rid] = (file, line)
        allowed = {"id", "description", "effect", "when", "reason", "obligations", "timezone"}
        for k in rule:
            if k not in allowed:
                self.err(file, _line(rule, k), rid, f"unknown rule key {k!r}{_suggest(str(k), allowed)}")
        effect = rule.get("effect")
        if effect not in EFFECTS:
            self.err(file, _line(rule, "effect"), rid, f"'effect' must be one of allow, deny, step_up; got {effect!r}")
        reason = rule.get("reason")
        reason_out = {"code": "", "message": ""}
        if not isinstance(reason, Mapping) or not isinstance(reason.get("code"), str) or not reason.get("code") \
                or not isinstance(reason.get("message", ""), str):
            self.err(file, _line(rule, "reason"), rid,
                     "'reason' must be a mapping with 'code' (snake_case) and 'message' (for a person)")
        else:
            reason_out = {"code": reason["code"], "message": reason.get("message") or reason["code"]}
            if not re.match(r"^[a-z][a-z0-9_]*$", reason["code"]):
                self.err(file, _line(reason, "code"), rid, f"reason code {reason['code']!r} must be snake_case")
            for k in reason:
                if k not in ("code", "message"):
                    self.err(file, _line(reason, k), rid, f"unknown reason key {k!r}")
        tz = None
        if "timezone" in rule:
            tz = self._timezone(file, _line(rule, "timezone"), rid, rule["timezone"])
        if "when" not in rule:
            self.err(file, line, rid, "'when' is required (use `when: []` for a rule that always applies)")
            when: list[Any] = []
        else:
            when = self.when(file, rule["when"], rid, _line(rule, "when"))
        obligations = self.obligations(file, rule.get("obligations"), rid, _line(rule, "obligations"), effect)
        out: dict[str, Any] = {"id": rid, "effect": effect if effect in EFFECTS else "deny", "when": when,
                               "reason": reason_out, "obligations": obligations}
        if isinstance(rule.get("description"), str):
            out["description"] = rule["description"]
        if tz is not None:
            out["timezone"] = tz
        return out

    def obligations(self, file: str, node: Any, rid: str, line: int | None, effect: Any) -> dict[str, Any]:
        if node is None:
            return {}
        if not isinstance(node, Mapping):
            self.err(file, line, rid, "'obligations' must be a mapping, e.g. {expires_at: {max_ttl: 1h}}")
            return {}
        out: dict[str, Any] = {}
        for key, value in node.items():
            kline = _line(node, key) or line
            if key not in OBLIGATIONS:
                self.err(file, kline, rid, f"unknown obligation {key!r} (known: {', '.join(OBLIGATIONS)})")
            elif key == "expires_at":
                if effect != "allow":
                    self.err(file, kline, rid, "expires_at only applies to allow rules")
                if not isinstance(value, Mapping) or set(value) != {"max_ttl"}:
                    self.err(file, kline, rid, "expires_at must be {max_ttl: <duration>}, e.g. {max_ttl: 1h}")
                    continue
                try:
                    if parse_duration_s(str(value["max_ttl"])) <= 0:
                        raise ValueError("max_ttl must be positive")
                except ValueError as exc:
                    self.err(file, kline, rid, f"expires_at.max_ttl: {exc}")
                    continue
                out[key] = {"max_ttl": str(value["max_ttl"])}
            elif key == "require_approval":
                approvers = [value] if isinstance(value, str) else value
                if not isinstance(approvers, list) or not approvers or not all(
                        isinstance(a, str) and a and "," not in a for a in approvers):
                    self.err(file, kline, rid, "require_approval must list who may approve, e.g. [platform-oncall]")
                    continue
                out[key] = list(approvers)
            elif key == "audit_review":
                if not isinstance(value, bool):
                    self.err(file, kline, rid, "audit_review must be true or false")
                    continue
                if value:
                    out[key] = True
        return out

    def when(self, file: str, node: Any, rid: str, line: int | None) -> list[Any]:
        if node is None or node == []:
            return []
        items = node if isinstance(node, list) else [node]
        out: list[Any] = []
        for item in items:
            c = self.cond(file, item, rid, _line(item) or line)
            if c is None:
                continue
            if isinstance(c, dict) and set(c) == {"all"}:
                out.extend(c["all"])  # flatten: the top level of `when` is already a conjunction
            else:
                out.append(c)
        return out

    def cond(self, file: str, node: Any, rid: str, line: int | None) -> Any:
        if isinstance(node, list):
            if not node:
                self.err(file, line, rid, "empty condition list")
                return None
            kids = [self.cond(file, n, rid, _line(n) or line) for n in node]
            return {"all": [k for k in kids if k is not None]}
        if not isinstance(node, Mapping) or not node:
            self.err(file, line, rid,
                     f"a condition must be a mapping such as `identity.kind: agent`; got {node!r}")
            return None
        self._dups(file, node, rid)
        combinators = [k for k in node if k in COMBINATORS]
        if combinators:
            if len(node) != 1:
                self.err(file, line, rid, f"'{combinators[0]}' must be the only key of its mapping; "
                                          "put sibling conditions in a list")
                return None
            key = combinators[0]
            value = node[key]
            kline = _line(node, key) or line
            if key in ("all", "any"):
                if not isinstance(value, list) or not value:
                    self.err(file, kline, rid, f"'{key}' takes a non-empty list of conditions")
                    return None
                kids = [self.cond(file, n, rid, _line(n) or kline) for n in value]
                return {key: [k for k in kids if k is not None]}
            if key == "not":
                kid = self.cond(file, value, rid, _line(value) or kline)
                return None if kid is None else {"not": kid}
            if key in QUANTIFIERS:
                return self.quantifier(file, key, value, rid, kline)
            # within
            if not isinstance(value, str) or not value:
                self.err(file, kline, rid, "'within' takes a schedule name, e.g. `within: change-window`")
                return None
            self._schedule_refs.append((value, file, kline, rid))
            return {"within": value}
        leaves: list[Any] = []
        for path, spec_node in node.items():
            leaf = self.leaf(file, str(path), spec_node, rid, _line(node, path) or line)
            if leaf is not None:
                leaves.extend(leaf)
        if not leaves:
            return None
        return leaves[0] if len(leaves) == 1 else {"all": leaves}

    def quantifier(self, file: str, key: str, value: Any, rid: str, line: int | None) -> Any:
        """``any_principal`` / ``all_principals``: conditions over each principal of the delegation chain
        (``principal.*``, and the request's other attributes). Canonical form: ``{key: [conditions]}``."""
        if self._quantifier is not None:
            self.err(file, line, rid, f"'{key}' cannot be used inside '{self._quantifier}'; "
                                      "write the conditions on one principal in one quantifier")
            return None
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list) or not value:
            self.err(file, line, rid, f"'{key}' takes a non-empty list of conditions on principal.*, "
                                      f"e.g. `{key}: [{{principal.kind: human}}]`")
            return None
        self._quantifier = key
        try:
            kids = self.when(file, value, rid, line)
        finally:
            self._quantifier = None
        return {key: kids} if kids else None

    def leaf(self, file: str, path: str, value: Any, rid: str, line: int | None) -> list[Any] | None:
        if path.startswith(PRINCIPAL_PREFIX) and self._quantifier is None:
            self.err(file, line, rid, f"{path} names one principal of the delegation chain: use it inside "
                                      "`any_principal: [...]` or `all_principals: [...]`")
            return None
        spec = lookup_attribute(path)
        if spec is None:
            known = list(ATTRIBUTES) + [p + "<name>" for p in FREE_ATTRIBUTE_PREFIXES]
            self.err(file, line, rid, f"unknown attribute {path!r}{_suggest(path, known)}")
            return None
        if not isinstance(value, Mapping):
            # shorthand: `attr: value` means equals (contains for a set, in for a list)
            if isinstance(value, list):
                op = "contains_all" if spec.type == SET else "in"
            else:
                op = "contains" if spec.type == SET else "equals"
            value = {op: value}
        if not value:
            self.err(file, line, rid, f"{path}: no operator given")
            return None
        out: list[Any] = []
        for op, operand in value.items():
            oline = _line(value, op) or line
            if op not in OPERATORS:
                self.err(file, oline, rid, f"unknown operator {op!r} on {path}{_suggest(str(op), OPERATORS)}")
                continue
            if spec.type not in OPERATORS[op].types:
                fitting = operators_for(spec.type)
                self.err(file, oline, rid, f"operator {op!r} does not apply to {path} (a {spec.type}); "
                                           f"use one of: {', '.join(fitting)}")
                continue
            msg = check_operand(spec, op, operand)
            if msg is not None:
                self.err(file, oline, rid, f"{path} {op}: {msg}")
                continue
            out.append({path: {op: _canonical_operand(operand)}})
        return out

    # -- schedules --
    def schedule_block(self, file: str, doc: Mapping[str, Any], node: Any) -> None:
        line = _line(doc, "schedules")
        if not isinstance(node, Mapping):
            self.err(file, line, None, "'schedules' must be a mapping of schedule name to definition")
            return
        for name, sched in node.items():
            sline = _line(node, name) or line
            if not isinstance(name, str) or not _ID_RE.match(name):
                self.err(file, sline, None, f"schedule name {name!r} must be letters, digits, '-', '_' or '.'")
                continue
            if name in self._schedule_where:
                f2, l2 = self._schedule_where[name]
                self.err(file, sline, None, f"schedule {name!r} is already defined at {f2}:{l2}")
                continue
            self._schedule_where[name] = (file, sline)
            out = self.schedule(file, name, sched, sline)
            if out is not None:
                self.schedules[name] = out

    def schedule(self, file: str, name: str, node: Any, line: int | None) -> dict[str, Any] | None:
        where = f"schedule {name!r}"
        if not isinstance(node, Mapping):
            self.err(file, line, None, f"{where}: must be a mapping with timezone and windows and/or periods")
            return None
        for k in node:
            if k not in ("description", "timezone", "windows", "periods"):
                self.err(file, _line(node, k), None, f"{where}: unknown key {k!r}")
        tz = self._timezone(file, _line(node, "timezone"), None, node.get("timezone", "UTC"))
        windows: list[dict[str, Any]] = []
        periods: list[dict[str, Any]] = []
        for w in node.get("windows") or []:
            wline = _line(w) or line
            if not isinstance(w, Mapping) or set(w) - {"days", "start", "end"}:
                self.err(file, wline, None, f"{where}: a window is {{days: [mon, ...], start: 'HH:MM', end: 'HH:MM'}}")
                continue
            days = w.get("days", list(WEEKDAYS))
            if not isinstance(days, list) or not days or not all(d in WEEKDAYS for d in days):
                self.err(file, wline, None, f"{where}: window days must be a list of {', '.join(WEEKDAYS)}")
                continue
            start, end = w.get("start", "00:00"), w.get("end", "24:00")
            if not (isinstance(start, str) and _TIME_RE.match(start)) or not (
                    isinstance(end, str) and _TIME_RE.match(end)):
                self.err(file, wline, None, f"{where}: window start/end must be quoted 'HH:MM' times")
                continue
            if minutes_of_day(start) >= minutes_of_day(end) or minutes_of_day(end) > 1440:
                self.err(file, wline, None, f"{where}: window start {start} must be before end {end} "
                                            "(split overnight windows in two)")
                continue
            windows.append({"days": [d for d in WEEKDAYS if d in days], "start": start, "end": end})
        for p in node.get("periods") or []:
            pline = _line(p) or line
            if not isinstance(p, Mapping) or set(p) != {"start", "end"}:
                self.err(file, pline, None, f"{where}: a period is {{start: <ISO time>, end: <ISO time>}}")
                continue
            try:
                ps, pe = parse_timestamp(p["start"], "start"), parse_timestamp(p["end"], "end")
            except ValueError as exc:
                self.err(file, pline, None, f"{where}: {exc}")
                continue
            if ps >= pe:
                self.err(file, pline, None, f"{where}: period start must be before its end")
                continue
            periods.append({"start": iso_utc(ps), "end": iso_utc(pe)})
        if not node.get("windows") and not node.get("periods"):
            self.err(file, line, None, f"{where}: needs at least one window or period")
        out: dict[str, Any] = {"timezone": tz, "windows": windows, "periods": periods}
        if isinstance(node.get("description"), str):
            out["description"] = node["description"]
        return out

    def finish(self) -> None:
        for name, file, line, rid in self._schedule_refs:
            if name not in self.schedules and name not in self._schedule_where:
                known = sorted(self.schedules)
                self.err(file, line, rid, f"undefined schedule {name!r}{_suggest(name, known)}"
                         + ("" if known else " (no schedules are defined)"))

    def content(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "policies": sorted(self.policies, key=lambda p: p["name"]),
            "schedules": {k: self.schedules[k] for k in sorted(self.schedules)},
        }


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _canonical_operand(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _canonical_operand(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canonical_operand(x) for x in v]
    return v


def canonical_json(obj: Any) -> str:
    """The one serialisation whose sha256 is the bundle version: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bundle_version(content: str) -> str:
    """sha256 hex of the canonical bundle content."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def validate(documents: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any] | None, Locations, list[Problem]]:
    """Validate (filename, parsed document) pairs → (canonical content or None on any error, locations, problems)."""
    v = _Validator()
    for file, doc in documents:
        v.document(file, doc)
    v.finish()
    if v.problems:
        return None, v.locations, v.problems
    return v.content(), v.locations, []


def bundle_documents(obj: Any, source: str) -> list[tuple[str, Any]] | Problem:
    """The documents of a parsed bundle (``{"format": 1, "policies": [...], "schedules": {...}}``), or why not."""
    if not isinstance(obj, Mapping) or obj.get("format") != BUNDLE_FORMAT or not isinstance(
            obj.get("policies"), list) or not isinstance(obj.get("schedules", {}), Mapping):
        return Problem(source, None, None,
                       f"not a pdx policy bundle (expected format {BUNDLE_FORMAT} with policies and schedules)")
    docs: list[tuple[str, Any]] = [(source, p) for p in obj["policies"]]
    if obj.get("schedules"):
        docs.append((source, {"schedules": obj["schedules"]}))
    return docs


def validate_bundle(content: str) -> dict[str, Any]:
    """Parse and validate canonical bundle JSON → its content; raises :class:`PolicyValidationError`."""
    try:
        obj = json.loads(content)
    except (json.JSONDecodeError, TypeError) as exc:
        raise PolicyValidationError([Problem("<bundle>", None, None, f"bundle content is not JSON: {exc}")]) from None
    docs = bundle_documents(obj, "<bundle>")
    if isinstance(docs, Problem):
        raise PolicyValidationError([docs])
    checked, _locations, problems = validate(docs)
    if problems or checked is None:
        raise PolicyValidationError(problems)
    return checked
