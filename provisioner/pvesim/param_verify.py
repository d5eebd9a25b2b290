"""PVE's parameter verification: convert raw request values and collect per-parameter errors.

Answers with the texts of PVE's JSONSchema verifier, all errors of a request at once.
"""

from __future__ import annotations

import re
from typing import Any

from provisioner.pvesim.param_formats import FORMATS
from provisioner.pvesim.params import ENDPOINTS, INDEXED, MISSING_PROPERTY, UNKNOWN_PROPERTY, P
from provisioner.pvesim.property_strings import FormatError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(Exception):
    """Parameter verification failed: ``errors`` maps parameter name -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("Parameter verification failed.")
        self.errors = errors


def _lookup_spec(table: dict[str, P], name: str) -> tuple[str, P] | None:
    """The spec of ``name``, also for indexed families (``net3`` -> ``net[n]``)."""
    if name in table:
        return name, table[name]
    m = re.fullmatch(r"([a-z]+)(\d+)", name)
    if m and f"{m.group(1)}[n]" in table:
        family, idx = m.group(1), int(m.group(2))
        if idx < INDEXED.get(family, 0) and str(idx) == m.group(2):
            return f"{m.group(1)}[n]", table[f"{m.group(1)}[n]"]
    return None


def is_known_key(table: dict[str, P], name: str) -> bool:
    return _lookup_spec(table, name) is not None


def _boolean(raw: object) -> int:
    s = str(raw).strip().lower()
    if s in _TRUE:
        return 1
    if s in _FALSE:
        return 0
    raise FormatError(f"type check ('boolean') failed - got '{raw}'")


def _number(spec: P, raw: object) -> int | float:
    s = str(raw).strip()
    if spec.type == "integer":
        if not re.fullmatch(r"[+-]?\d+", s):
            raise FormatError(f"type check ('integer') failed - got '{raw}'")
        return int(s)
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s):
        raise FormatError(f"type check ('number') failed - got '{raw}'")
    return float(s)


def _check_enum(spec: P, value: int | float | str) -> None:
    if spec.enum is not None and value not in spec.enum:
        raise FormatError(
            f"value '{value}' does not have a value in the enumeration '{', '.join(spec.enum)}'"
        )


def _check_range(spec: P, value: int | float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise FormatError(f"value must have a minimum value of {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise FormatError(f"value must have a maximum value of {spec.maximum}")


def _check_text(spec: P, value: str) -> None:
    if spec.max_length is not None and len(value) > spec.max_length:
        raise FormatError(f"value may only be {spec.max_length} characters long")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise FormatError("value does not match the regex pattern")
    if spec.fmt is not None:
        FORMATS[spec.fmt](value)


def _convert(spec: P, raw: object) -> int | float | str:
    """One raw value -> its typed value; raises FormatError with PVE's text."""
    if spec.type == "boolean":
        return _boolean(raw)
    if spec.type in ("integer", "number"):
        number = _number(spec, raw)
        _check_enum(spec, number)
        _check_range(spec, number)
        return number
    text = str(raw)
    _check_enum(spec, text)
    _check_text(spec, text)
    return text


def _missing(table: dict[str, P], params: dict[str, Any], errors: dict[str, str]) -> None:
    """Add the errors for absent required parameters and unmet ``requires``."""
    for name, spec in table.items():
        if not spec.optional and "[n]" not in name and name not in params and name not in errors:
            errors[name] = MISSING_PROPERTY
        if spec.requires and name in params and spec.requires not in params:
            errors[spec.requires] = f"missing property - '{name}' requires this property"


def verify(method: str, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """Verify and convert ``params`` for an endpoint; raises ParamError (HTTP 400)."""
    table = ENDPOINTS[(method, template)]
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, raw in params.items():
        found = _lookup_spec(table, name)
        if found is None:
            errors[name] = UNKNOWN_PROPERTY
            continue
        try:
            out[name] = _convert(found[1], raw)
        except FormatError as exc:
            errors[name] = str(exc)
    _missing(table, params, errors)
    if errors:
        raise ParamError(errors)
    return out
