"""Load policy YAML files and directories into a validated :class:`PolicySet`.

``load_policy_dir`` raises :class:`PolicyValidationError` (a ``UserError``) carrying every problem found; the
``validate_*`` functions return the problems instead. The validation itself is validation.py's (shared with
the compiler, which validates every bundle it is offered); this module adds the YAML reading with line numbers
and the :class:`PolicySet` API on top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from streams.policy.compiler import CompiledBundle, compile_content
from streams.policy.validation import (
    LineDict,
    PolicyValidationError,
    Problem,
    bundle_documents,
    bundle_version,
    canonical_json,
    validate,
)

__all__ = [  # Problem, PolicyValidationError, bundle_version, canonical_json are re-exported from validation.py
    "PolicySet",
    "PolicyValidationError",
    "Problem",
    "bundle_version",
    "canonical_json",
    "load_policy_dir",
    "load_yaml",
    "policy_files",
    "policy_set_from_documents",
    "read_yaml_file",
    "validate_content_obj",
    "validate_documents",
    "validate_policy_dir",
]


# ---- YAML with line numbers ----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that records line numbers and follows YAML 1.2 where 1.1 surprises policy authors.

    YAML 1.1 would read an unquoted ``17:00`` as the sexagesimal integer 1020, ``2025-01-01`` as a date and
    ``no`` as false; here only plain decimal integers are integers, only true/false are booleans, and
    timestamps stay strings (parsed where a timestamp is expected).
    """


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*))$"), list("-+0123456789")
)
# YAML 1.2 booleans only: `no`, `off`, `yes`, `on` stay strings (`message: no` is a message, not false)
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterable[LineDict]:
    data = LineDict()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.duplicate_keys = []
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark) from None
        if key in data:
            data.duplicate_keys.append((key, key_node.start_mark.line + 1))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[arg-type]


def load_yaml(text: str, filename: str) -> Any:
    """Parse YAML text; raises :class:`PolicyValidationError` with the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyValidationError([Problem(filename, line, None, f"YAML syntax error: {problem}")]) from None


def read_yaml_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyValidationError([Problem(str(path), None, None, f"cannot read file: {exc.strerror}")]) from None
    return load_yaml(text, str(path))


# ---- public API ---------------------------------------------------------------------------------------------


class PolicySet:
    """A validated policy set in canonical form, plus where each rule came from (for messages and lint)."""

    def __init__(self, content: dict[str, Any], locations: dict[str, tuple[str, int | None]] | None = None,
                 source: str = "<bundle>") -> None:
        self.content = content
        self.locations = locations or {}
        self.source = source
        self._json: str | None = None

    @property
    def policies(self) -> list[dict[str, Any]]:
        return list(self.content["policies"])

    @property
    def schedules(self) -> dict[str, dict[str, Any]]:
        return dict(self.content["schedules"])

    def rules(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(policy, rule) pairs in bundle order."""
        return [(p, r) for p in self.content["policies"] for r in p["rules"]]

    def rule_ids(self) -> list[str]:
        return [r["id"] for _p, r in self.rules()]

    def location(self, rule_id: str) -> tuple[str, int | None]:
        return self.locations.get(rule_id, (self.source, None))

    def to_bundle_content(self) -> str:
        if self._json is None:
            self._json = canonical_json(self.content)
        return self._json

    @property
    def version(self) -> str:
        return bundle_version(self.to_bundle_content())

    def compile(self) -> CompiledBundle:
        return compile_content(self.content, self.version)


def validate_documents(documents: Iterable[tuple[str, Any]]) -> tuple[PolicySet | None, list[Problem]]:
    """Validate (filename, parsed document) pairs. Returns the policy set (None on any error) and problems."""
    content, locations, problems = validate(documents)
    if content is None:
        return None, problems
    return PolicySet(content, locations), []


def validate_content_obj(obj: Any, source: str = "<bundle>") -> tuple[PolicySet | None, list[Problem]]:
    """Validate a parsed bundle (``{"format": 1, "policies": [...], "schedules": {...}}``)."""
    docs = bundle_documents(obj, source)
    if isinstance(docs, Problem):
        return None, [docs]
    ps, problems = validate_documents(docs)
    if ps is not None:
        ps.source = source
    return ps, problems


def policy_files(path: str | Path) -> list[Path]:
    root = Path(path)
    return sorted([*root.glob("*.yaml"), *root.glob("*.yml")])


def _load_dir(path: str | Path) -> tuple[PolicySet | None, list[Problem]]:
    root = Path(path)
    if not root.is_dir():
        return None, [Problem(str(root), None, None,
                              "not a directory (give the folder holding the policy *.yaml files)")]
    files = policy_files(root)
    if not files:
        return None, [Problem(str(root), None, None, "no policy files (*.yaml) in this directory")]
    docs: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for f in files:
        try:
            docs.append((str(f), read_yaml_file(f)))
        except PolicyValidationError as exc:
            problems.extend(exc.problems)
    ps, more = validate_documents(docs)
    problems.extend(more)
    if problems:
        return None, problems
    assert ps is not None
    ps.source = str(root)
    return ps, []


def validate_policy_dir(path: str | Path) -> list[Problem]:
    """Every problem in the policy files of ``path`` (an empty list means valid)."""
    return _load_dir(path)[1]


def load_policy_dir(path: str | Path) -> PolicySet:
    """Load and validate ``path/*.yaml``; raises :class:`PolicyValidationError` listing every problem."""
    ps, problems = _load_dir(path)
    if problems or ps is None:
        raise PolicyValidationError(problems)
    return ps


def policy_set_from_documents(documents: Iterable[Mapping[str, Any]], source: str = "<generated>") -> PolicySet:
    """Build a policy set from in-memory policy documents (benchmarks, tests); raises on problems."""
    ps, problems = validate_documents((source, d) for d in documents)
    if problems or ps is None:
        raise PolicyValidationError(problems)
    ps.source = source
    return ps
