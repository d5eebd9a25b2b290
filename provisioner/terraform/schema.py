"""Check a rendered document against ``bpg_proxmox.schema.json``.

The bpg provider cannot be downloaded on every machine (so ``terraform validate`` is not
always available), hence a hand-written JSON Schema of every attribute we emit. The
``jsonschema`` package is not a dependency, so this module implements exactly the keywords
that schema uses - and refuses any other keyword, so the check can never silently pass
because a keyword was ignored.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("bpg_proxmox.schema.json")

_ANNOTATIONS = {"$schema", "$id", "title", "$comment", "description", "$defs"}
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@cache
def load_schema() -> dict[str, Any]:
    """The schema shipped with the package (parsed once)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def provider_version_of_schema() -> str:
    """The bpg/proxmox version the schema was written for."""
    return str(load_schema()["x-provider-version"])


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"unsupported $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str,
           out: list[str]) -> None:
    for key in schema:
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        rule = schema[key]
        if key == "$ref":
            _check(value, _resolve(root, rule), root, path, out)
        elif key == "type":
            if not _is_type(value, rule):
                out.append(f"{path}: expected {rule}, got {type(value).__name__}")
                return
        elif key == "const":
            if value != rule or type(value) is not type(rule):
                out.append(f"{path}: must be {rule!r}")
        elif key == "enum":
            if not any(value == r and type(value) is type(r) for r in rule):
                out.append(f"{path}: {value!r} not one of {rule!r}")
        elif key == "pattern":
            # ECMA-262 "$" never matches before a trailing newline; Python's does
            if isinstance(value, str) and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", rule),
                                                        value):
                out.append(f"{path}: {value!r} does not match {rule}")
        elif key == "minLength":
            if isinstance(value, str) and len(value) < rule:
                out.append(f"{path}: shorter than {rule}")
        elif key in ("minimum", "maximum"):
            if _is_type(value, "number") and (value < rule if key == "minimum"
                                              else value > rule):
                out.append(f"{path}: {value} violates {key} {rule}")
        elif key in ("minItems", "maxItems"):
            if isinstance(value, list) and (len(value) < rule if key == "minItems"
                                            else len(value) > rule):
                out.append(f"{path}: {len(value)} items violates {key} {rule}")
        elif key == "uniqueItems":
            if rule and isinstance(value, list):
                seen = [json.dumps(v, sort_keys=True) for v in value]
                if len(set(seen)) != len(seen):
                    out.append(f"{path}: items are not unique")
        elif key == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check(item, rule, root, f"{path}[{i}]", out)
        elif key == "required":
            if isinstance(value, dict):
                out.extend(f"{path}: missing {name!r}" for name in rule if name not in value)
        elif key == "minProperties":
            if isinstance(value, dict) and len(value) < rule:
                out.append(f"{path}: fewer than {rule} properties")
        elif key == "properties":
            if isinstance(value, dict):
                for name, sub in rule.items():
                    if name in value:
                        _check(value[name], sub, root, f"{path}.{name}", out)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                extra = sorted(set(value) - set(schema.get("properties", {})))
                if rule is False:
                    out.extend(f"{path}: unexpected attribute {name!r}" for name in extra)
                elif isinstance(rule, dict):
                    for name in extra:
                        _check(value[name], rule, root, f"{path}.{name}", out)
        elif key == "oneOf":
            matches = 0
            for option in rule:
                sub: list[str] = []
                _check(value, option, root, path, sub)
                matches += not sub
            if matches != 1:
                out.append(f"{path}: matches {matches} of the oneOf alternatives, expected 1")
        else:
            raise ValueError(f"schema keyword {key!r} at {path} is not supported by this checker")


def validate(doc: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """All violations of ``schema`` (default: the bpg/proxmox schema) in ``doc``; empty = ok."""
    root = schema if schema is not None else load_schema()
    out: list[str] = []
    _check(doc, root, root, "$", out)
    return out
