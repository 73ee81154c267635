"""Encode-side type checks for :mod:`streams.contracts.wire`, built once per schema at load.

fastavro's writer already rejects a missing required field, a non-str string, a value matching no union
branch and an unknown enum symbol, but silently coerces floats/bools into int/long (1.5 -> 1), any value
into boolean (None -> false), a str into array<string> ('ab' -> ['a','b']), a list into a map, naive
datetimes (taken as UTC) and ints beyond 32 bits into "int". Two checkers are built per schema:

* the *fast* check (:func:`_generate_fast_check`): straight-line Python generated from the schema that only
  looks at what fastavro would coerce and answers True/False; it runs on every encode (a few µs);
* the *explaining* check (:func:`_compile`): closures that check every field and raise :class:`_CheckFailed`
  with a field path; it runs only when the fast check or the fastavro writer failed, to produce the
  WireError message.

Both take a *self-contained* schema (named types defined at first use, as wire.py's loader makes them). The
schema-walking helpers (:func:`_collect_named`, :func:`_fullname`) are shared with that loader.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from typing import Any

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = ("record", "enum", "fixed")


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_named(node: Any, namespace: str, out: dict[str, dict[str, Any]]) -> None:
    """Record every named type defined in ``node`` under its full name."""
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, namespace, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED:
            full = _fullname(node["name"], node.get("namespace", namespace))
            out[full] = node
            namespace = full.rpartition(".")[0]
            for field in node.get("fields", ()):
                _collect_named(field["type"], namespace, out)
        elif kind == "array":
            _collect_named(node["items"], namespace, out)
        elif kind == "map":
            _collect_named(node["values"], namespace, out)
        elif isinstance(kind, (dict, list)):
            _collect_named(kind, namespace, out)


_Check = Callable[[Any, str], None]
_MISSING = object()
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIMESTAMP_TYPES = ("timestamp-millis", "timestamp-micros")


class _CheckFailed(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '<record>'} {problem}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_label(node: Any) -> str:
    if isinstance(node, str):
        return node.rpartition(".")[2]
    if isinstance(node, list):
        return " | ".join(_type_label(branch) for branch in node)
    logical = node.get("logicalType")
    if logical:
        return str(logical)
    kind = node["type"]
    if kind in _NAMED:
        return str(node["name"]).rpartition(".")[2]
    if kind == "array":
        return f"array<{_type_label(node['items'])}>"
    if kind == "map":
        return f"map<{_type_label(node['values'])}>"
    return _type_label(kind)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compile(node: Any, named: dict[str, _Check]) -> _Check:
    """An explaining checker for values of schema ``node``: raises _CheckFailed naming the field path."""
    if isinstance(node, str) and node not in _PRIMITIVES:
        return named[node]  # a named type defined earlier in the self-contained schema
    if isinstance(node, list):
        checks = [(branch, _compile(branch, named)) for branch in node]
        label = _type_label(node)
        non_null = [check for branch, check in checks if branch != "null"]
        if len(node) == 2 and len(non_null) == 1:  # ["null", T]: T's own message, with its field path
            inner = non_null[0]

            def check_optional(value: Any, path: str) -> None:
                if value is not None:
                    inner(value, path)

            return check_optional

        def check_union(value: Any, path: str) -> None:
            for branch, check in checks:
                if branch == "null" and value is None:
                    return
                if branch != "null":
                    try:
                        check(value, path)
                        return
                    except _CheckFailed:
                        continue
            raise _CheckFailed(path, f"must be {label}, got {_describe(value)}")

        return check_union
    kind = node if isinstance(node, str) else node["type"]
    logical = None if isinstance(node, str) else node.get("logicalType")
    if logical in _TIMESTAMP_TYPES:

        def check_timestamp(value: Any, path: str, label: str = str(logical)) -> None:
            if not isinstance(value, _dt.datetime):
                raise _CheckFailed(path, f"must be a timezone-aware datetime ({label}), got {_describe(value)}")
            if value.utcoffset() is None:
                raise _CheckFailed(path, f"must be a timezone-aware datetime (UTC), got naive {value.isoformat()}")

        return check_timestamp
    if kind in ("int", "long"):
        low, high = _INT_RANGE[kind]

        def check_int(value: Any, path: str, low: int = low, high: int = high, kind: str = kind) -> None:
            if not _is_int(value):
                raise _CheckFailed(path, f"must be {kind}, got {_describe(value)}")
            if not low <= value <= high:
                raise _CheckFailed(path, f"is out of range for Avro {kind}: {value}")

        return check_int
    if kind == "boolean":

        def check_bool(value: Any, path: str) -> None:
            if value is not True and value is not False:
                raise _CheckFailed(path, f"must be boolean, got {_describe(value)}")

        return check_bool
    if kind == "string":

        def check_str(value: Any, path: str) -> None:
            if not isinstance(value, str):
                raise _CheckFailed(path, f"must be string, got {_describe(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _CheckFailed(path, f"is not valid UTF-8 text: {exc.reason}") from None

        return check_str
    if kind == "enum":
        symbols = tuple(node["symbols"])

        def check_enum(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, str) or value not in symbols:
                raise _CheckFailed(path, f"must be one of {', '.join(symbols)} ({label}), got {_describe(value)}")

        return check_enum
    if kind == "array":
        items = _compile(node["items"], named)

        def check_array(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, (list, tuple)):
                raise _CheckFailed(path, f"must be a list ({label}), got {_describe(value)}")
            for index, item in enumerate(value):
                items(item, f"{path}[{index}]")

        return check_array
    if kind == "map":
        values = _compile(node["values"], named)

        def check_map(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, Mapping):
                raise _CheckFailed(path, f"must be a mapping ({label}), got {_describe(value)}")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _CheckFailed(path, f"keys must be strings, got {_describe(key)}")
                values(item, f"{path}[{key!r}]")

        return check_map
    if kind == "record":
        fields: list[tuple[str, _Check, bool, str]] = []

        def check_record(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, Mapping):
                raise _CheckFailed(path, f"must be a mapping ({label} record), got {_describe(value)}")
            for field_name, check, required, field_label in fields:
                item = value.get(field_name, _MISSING)
                if item is _MISSING:
                    if required:
                        raise _CheckFailed(_join(path, field_name), f"is missing (required {field_label})")
                    continue
                check(item, _join(path, field_name))

        named[node["name"]] = check_record  # before the fields, so a recursive reference resolves
        for field in node["fields"]:
            check = _compile(field["type"], named)
            fields.append((field["name"], check, "default" not in field, _type_label(field["type"])))
        return check_record

    def check_nothing(value: Any, path: str) -> None:  # null/float/double/bytes/fixed: fastavro checks them
        return None

    if kind == "fixed":  # a named type: later uses refer to it by name
        named[node["name"]] = check_nothing
    return check_nothing


def _generate_fast_check(root: dict[str, Any]) -> Callable[[Any], bool]:
    """Generate ``check(obj) -> bool``: False when a value would be silently coerced by fastavro."""
    definitions: dict[str, Any] = {}
    _collect_named(root, "", definitions)
    counter = iter(range(1_000_000))
    lines = ["def check(o):"]

    def emit(node: Any, var: str, depth: int, expanding: frozenset[str]) -> list[str]:
        pad = "    " * depth
        if isinstance(node, str) and node not in _PRIMITIVES:
            if node in expanding:  # recursive type: leave the rest to fastavro and the explaining check
                return []
            node = definitions[node]
        if isinstance(node, list):
            branches = [branch for branch in node if branch != "null"]
            if len(branches) != 1:
                return []
            inner = emit(branches[0], var, depth + 1, expanding)
            return [f"{pad}if {var} is not None:", *inner] if inner else []
        kind = node if isinstance(node, str) else node["type"]
        logical = None if isinstance(node, str) else node.get("logicalType")
        if logical in _TIMESTAMP_TYPES:
            return [
                f"{pad}if ({var}.__class__ is not datetime and not isinstance({var}, datetime))"
                f" or {var}.utcoffset() is None:",
                f"{pad}    return False",
            ]
        if kind in ("int", "long"):
            low, high = _INT_RANGE[kind]
            return [f"{pad}if {var}.__class__ is not int or not {low} <= {var} <= {high}:", f"{pad}    return False"]
        if kind == "boolean":
            return [f"{pad}if {var} is not True and {var} is not False:", f"{pad}    return False"]
        if kind == "array":
            item = f"i{next(counter)}"
            inner = emit(node["items"], item, depth + 1, expanding)
            out = [
                f"{pad}if {var}.__class__ is not list and not isinstance({var}, (list, tuple)):",
                f"{pad}    return False",
            ]
            return [*out, f"{pad}for {item} in {var}:", *inner] if inner else out
        if kind == "map":
            item = f"i{next(counter)}"
            inner = emit(node["values"], item, depth + 1, expanding)
            out = [f"{pad}if {var}.__class__ is not dict and not isinstance({var}, Mapping):", f"{pad}    return False"]
            return [*out, f"{pad}for {item} in {var}.values():", *inner] if inner else out
        if kind == "record":
            expanding = expanding | {node["name"]}
            out = [f"{pad}if {var}.__class__ is not dict and not isinstance({var}, Mapping):", f"{pad}    return False"]
            for field in node["fields"]:
                value = f"f{next(counter)}"
                inner = emit(field["type"], value, depth + 1, expanding)
                if inner:
                    out += [f"{pad}{value} = {var}.get({field['name']!r}, M)", f"{pad}if {value} is not M:", *inner]
            return out
        return []  # strings, enums, ...: fastavro rejects wrong values itself

    lines += emit(root, "o", 1, frozenset())
    lines.append("    return True")
    namespace: dict[str, Any] = {"datetime": _dt.datetime, "Mapping": Mapping, "M": _MISSING}
    exec(compile("\n".join(lines), f"<wire fast check {root['name']}>", "exec"), namespace)  # noqa: S102
    return namespace["check"]  # type: ignore[no-any-return]
