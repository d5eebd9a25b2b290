"""Check a rendered document against ``bpg_proxmox.schema.json``.

The bpg provider cannot be downloaded on every machine (so ``terraform validate`` is not
always available), hence a JSON Schema of every attribute we emit, written from the provider's
source at the pinned tag (modes, required fields, validators, ForceNew; see its ``$comment``).
The ``jsonschema`` package is not a dependency, so this module implements exactly the keywords
that schema uses - and refuses any other keyword, so the check can never silently pass
because a keyword was ignored. ``x-`` keywords are annotations (:func:`annotated_paths`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("bpg_proxmox.schema.json")
#: A JSON Schema object (parsed JSON: any value may sit under a keyword).
Schema = dict[str, Any]

_ANNOTATIONS = {"$schema", "$id", "title", "$comment", "description", "$defs"}
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@cache
def load_schema() -> Schema:
    """The schema shipped with the package (parsed once)."""
    schema: Schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def provider_version_of_schema() -> str:
    """The bpg/proxmox version the schema was written for."""
    return str(load_schema()["x-provider-version"])


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def _resolve(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#/"):
        raise ValueError(f"unsupported $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    resolved: Schema = node
    return resolved


@dataclass(frozen=True)
class _At:
    """Where a keyword is checked: the whole schema, the schema object holding the keyword,
    the value's JSON path, and the list the violations go to."""

    root: Schema
    schema: Schema
    path: str
    out: list[str]


# Each keyword check takes (value, rule, keyword, where) and returns whether the remaining
# keywords of the same schema object still apply (False only after a type mismatch).
_Keyword = Callable[[Any, Any, str, _At], bool]


def _ref(value: Any, rule: Any, key: str, at: _At) -> bool:
    _check(value, _resolve(at.root, rule), at.root, at.path, at.out)
    return True


def _type(value: Any, rule: Any, key: str, at: _At) -> bool:
    names = rule if isinstance(rule, list) else [rule]
    if any(_is_type(value, name) for name in names):
        return True
    at.out.append(f"{at.path}: expected {' or '.join(names)}, got {type(value).__name__}")
    return False


def _const(value: Any, rule: Any, key: str, at: _At) -> bool:
    if value != rule or type(value) is not type(rule):
        at.out.append(f"{at.path}: must be {rule!r}")
    return True


def _enum(value: Any, rule: Any, key: str, at: _At) -> bool:
    if not any(value == r and type(value) is type(r) for r in rule):
        at.out.append(f"{at.path}: {value!r} not one of {rule!r}")
    return True


def _pattern(value: Any, rule: Any, key: str, at: _At) -> bool:
    # ECMA-262 "$" never matches before a trailing newline; Python's does
    if isinstance(value, str) and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", rule), value):
        at.out.append(f"{at.path}: {value!r} does not match {rule}")
    return True


def _min_length(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, str) and len(value) < rule:
        at.out.append(f"{at.path}: shorter than {rule}")
    return True


def _bound(value: Any, rule: Any, key: str, at: _At) -> bool:
    if _is_type(value, "number") and (value < rule if key == "minimum" else value > rule):
        at.out.append(f"{at.path}: {value} violates {key} {rule}")
    return True


def _item_count(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, list) and (len(value) < rule if key == "minItems"
                                    else len(value) > rule):
        at.out.append(f"{at.path}: {len(value)} items violates {key} {rule}")
    return True


def _unique_items(value: Any, rule: Any, key: str, at: _At) -> bool:
    if rule and isinstance(value, list):
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) != len(seen):
            at.out.append(f"{at.path}: items are not unique")
    return True


def _items(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, rule, at.root, f"{at.path}[{i}]", at.out)
    return True


def _required(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, dict):
        at.out.extend(f"{at.path}: missing {name!r}" for name in rule if name not in value)
    return True


def _min_properties(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, dict) and len(value) < rule:
        at.out.append(f"{at.path}: fewer than {rule} properties")
    return True


def _properties(value: Any, rule: Any, key: str, at: _At) -> bool:
    if isinstance(value, dict):
        for name, sub in rule.items():
            if name in value:
                _check(value[name], sub, at.root, f"{at.path}.{name}", at.out)
    return True


def _additional_properties(value: Any, rule: Any, key: str, at: _At) -> bool:
    if not isinstance(value, dict):
        return True
    extra = sorted(set(value) - set(at.schema.get("properties", {})))
    if rule is False:
        at.out.extend(f"{at.path}: unexpected attribute {name!r}" for name in extra)
    elif isinstance(rule, dict):
        for name in extra:
            _check(value[name], rule, at.root, f"{at.path}.{name}", at.out)
    return True


def _one_of(value: Any, rule: Any, key: str, at: _At) -> bool:
    matches = 0
    for option in rule:
        found: list[str] = []
        _check(value, option, at.root, at.path, found)
        matches += not found
    if matches != 1:
        at.out.append(f"{at.path}: matches {matches} of the oneOf alternatives, expected 1")
    return True


def _all_of(value: Any, rule: Any, key: str, at: _At) -> bool:
    for option in rule:
        _check(value, option, at.root, at.path, at.out)
    return True


_KEYWORDS: dict[str, _Keyword] = {
    "$ref": _ref, "type": _type, "const": _const, "enum": _enum, "pattern": _pattern,
    "minLength": _min_length, "minimum": _bound, "maximum": _bound,
    "minItems": _item_count, "maxItems": _item_count, "uniqueItems": _unique_items,
    "items": _items, "required": _required, "minProperties": _min_properties,
    "properties": _properties, "additionalProperties": _additional_properties,
    "oneOf": _one_of, "allOf": _all_of,
}


def _check(value: Any, schema: Schema, root: Schema, path: str, out: list[str]) -> None:
    """Check ``value`` against one schema object, keyword by keyword in schema order."""
    at = _At(root, schema, path, out)
    for key, rule in schema.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        keyword = _KEYWORDS.get(key)
        if keyword is None:
            raise ValueError(f"schema keyword {key!r} at {path} is not supported by this checker")
        if not keyword(value, rule, key, at):
            return


def validate(doc: Any, schema: Schema | None = None) -> list[str]:
    """All violations of ``schema`` (default: the bpg/proxmox schema) in ``doc``; empty = ok."""
    root = schema if schema is not None else load_schema()
    out: list[str] = []
    _check(doc, root, root, "$", out)
    return out


def annotated_paths(annotation: str, schema: Schema | None = None) -> dict[str, Any]:
    """Every property path (``a.b[].c``, from the document root) whose schema carries the
    ``x-`` ``annotation``, with its value - e.g. ``x-force-new`` or ``x-mode``."""
    root = schema if schema is not None else load_schema()
    found: dict[str, Any] = {}
    _collect(root, root, "", annotation, found)
    return found


def _collect(node: Schema, root: Schema, path: str, annotation: str,
             found: dict[str, Any]) -> None:
    if "$ref" in node:
        _collect(_resolve(root, node["$ref"]), root, path, annotation, found)
    if annotation in node and path:
        found[path] = node[annotation]
    for name, sub in (node.get("properties") or {}).items():
        _collect(sub, root, f"{path}.{name}" if path else name, annotation, found)
    if isinstance(node.get("items"), dict):
        _collect(node["items"], root, f"{path}[]", annotation, found)
