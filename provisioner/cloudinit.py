"""Render cloud-config templates without string-formatting values into YAML or TOML.

How a template is rendered
--------------------------
1. The template is parsed with a ``yaml.SafeLoader`` subclass into a plain tree.
   Placeholders are written ``${NAME}``; ``$${NAME}`` stands for a literal ``${NAME}``.
2. Placeholders are substituted inside string *values* of that tree, in one pass (a value
   that itself contains ``${X}`` is never expanded again):

   * a plain (unquoted) scalar that is exactly one placeholder takes the variable's
     value *with its type*: ``otp_length: ${OTP_LENGTH}`` becomes an integer when the
     variable is an ``int``;
   * any other string (quoted, or with surrounding text) receives ``str(value)``.

   A value's text is never re-interpreted as YAML: ``"true"`` stays a string.
   Placeholders in mapping keys are a template error.
3. File bodies that need values are written in the template as ``content: !toml`` followed
   by a mapping. After substitution that mapping is serialized by :func:`toml_dumps`
   (basic strings with every quote, backslash and control character escaped; integers,
   booleans and arrays of those) and checked by re-parsing it with ``tomllib``.
4. The tree is serialized with ``yaml.safe_dump`` (no aliases, multi-line strings as
   literal blocks), prefixed with ``#cloud-config``, and checked by re-parsing.

So every value reaches the output through a serializer for the format it lands in.
Placeholders where no serializer can help are refused when the template is read:
inside a raw ``write_files[*].content`` string (its format is unknown) and inside a
``runcmd`` / ``bootcmd`` entry given as a shell string. Commands take values as separate
argv items (``[sh, -c, 'script using "$1"', sh, "${VALUE}"]``), which cloud-init quotes.

Variables: every placeholder in the template must be supplied (otherwise
:class:`MissingVariablesError` names all missing ones). Extra variables are allowed and
ignored, so one standard set can be passed to any template. Values must be ``str`` or
``int`` (not ``bool``). Variables with a well-known name (see :data:`KNOWN_VARIABLES`) are
validated and normalized whatever the template, so e.g. ``USERNAME`` is always a valid
Linux user name, ``OTP_LENGTH`` always an integer and a bare IPv6 ``SIGNING_HOST`` gets the
brackets a URL needs; ``RPC_URL`` and unknown names are free text.

The output is deterministic: same template and variables, same bytes.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from blockhost_data import packaged_dir
from provisioner.cloudinit_yaml import dump_yaml
from provisioner.usernames import validate_username

__all__ = [
    "KNOWN_VARIABLES",
    "REPO_TEMPLATE_DIR",
    "SYSTEM_TEMPLATE_DIR",
    "TEMPLATE_DIRS",
    "MissingVariablesError",
    "TemplateError",
    "find_template",
    "list_variables",
    "render",
    "render_text",
    "toml_dumps",
]

SYSTEM_TEMPLATE_DIR = Path("/usr/share/blockhost/cloud-init/templates")
#: The templates shipped as package data (in a source checkout, ``cloud-init/templates`` itself).
REPO_TEMPLATE_DIR = packaged_dir("templates")
#: Searched in this order, after any ``extra_dirs`` given to :func:`find_template`.
TEMPLATE_DIRS: tuple[Path, ...] = (SYSTEM_TEMPLATE_DIR, REPO_TEMPLATE_DIR)

HEADER = "#cloud-config"

_PLACEHOLDER_RE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_SECRET_RE = re.compile(r"[0-9a-fA-F]{32,256}")
_BARE_TOML_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_INT_MIN, _TOML_INT_MAX = -(2**63), 2**63 - 1

class TemplateError(ValueError):
    """A template cannot be found, read or rendered; or a variable is invalid."""

    #: A template or value the operator must fix (see provisioner.errors).
    permanent: ClassVar[bool] = True


class MissingVariablesError(TemplateError):
    """Placeholders in the template have no value; ``names`` lists them, sorted."""

    def __init__(self, names: Iterable[str], template: str) -> None:
        self.names = tuple(sorted(names))
        super().__init__(
            f"template {template} needs values for: {', '.join(self.names)}"
        )


# --------------------------------------------------------------------------- validation


def _as_int(name: str, value: str | int, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise TemplateError(f"variable {name} must be an integer, not a boolean")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise TemplateError(f"variable {name} must be a decimal integer")
        value = int(value)
    if not low <= value <= high:
        raise TemplateError(f"variable {name} must be between {low} and {high}")
    return value


def _int_var(low: int, high: int) -> Callable[[str, str | int], str | int]:
    return lambda name, value: _as_int(name, value, low, high)


def _text_var(check: Callable[[str], bool], rule: str) -> Callable[[str, str | int], str | int]:
    def validate(name: str, value: str | int) -> str | int:
        if not isinstance(value, str) or not check(value):
            raise TemplateError(f"variable {name} must be {rule}")
        return value

    return validate


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_ipv6_or_empty(text: str) -> bool:
    if text == "":
        return True
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _username_var(name: str, value: str | int) -> str | int:
    try:
        return validate_username(value)
    except ValueError as exc:
        raise TemplateError(f"variable {name}: {exc}") from None


def _is_address(text: str) -> bool:
    return bool(_ADDRESS_RE.fullmatch(text))


_ADDRESS_RULE = "a 0x-prefixed 40-hex-digit address"


def _is_hostname(text: str) -> bool:
    """A DNS name: dot-separated RFC 1123 labels, 253 characters at most."""
    return len(text) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in text.split("."))


def _url_host_var(name: str, value: str | int) -> str | int:
    """Host part of a URL: DNS name, IPv4, or IPv6 (bracketed here if given bare)."""
    if isinstance(value, str):
        try:
            if isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address):
                return f"[{value}]"
            return value
        except ValueError:
            pass
        if value.startswith("[") and value.endswith("]"):
            try:
                ipaddress.IPv6Address(value[1:-1])
                return value
            except ValueError:
                pass
        elif _is_hostname(value):
            return value
    raise TemplateError(f"variable {name} must be a DNS name, an IPv4 address or an IPv6 address")


#: Validators (and normalizers) for variables whose meaning is fixed. Free-text
#: variables (RPC_URL, and any name not listed) are only serialized, never validated here.
KNOWN_VARIABLES: Mapping[str, Callable[[str, str | int], str | int]] = {
    "VM_NAME": _text_var(_is_hostname,
                         "a host name (dot-separated labels of letters, digits, '-')"),
    "SIGNING_HOST": _url_host_var,
    "USERNAME": _username_var,
    "NFT_TOKEN_ID": _int_var(0, 2**256 - 1),
    "CHAIN_ID": _int_var(1, _TOML_INT_MAX),
    "OTP_LENGTH": _int_var(4, 32),
    "OTP_TTL": _int_var(1, 86_400),
    "WALLET_ADDRESS": _text_var(_is_address, _ADDRESS_RULE),
    "NFT_CONTRACT": _text_var(_is_address, _ADDRESS_RULE),
    "VM_IP": _text_var(lambda v: v == "" or _is_ip(v), "an IP address or empty"),
    "VM_IPV6": _text_var(_is_ipv6_or_empty, "an IPv6 address or empty"),
    "SECRET_KEY": _text_var(lambda v: bool(_SECRET_RE.fullmatch(v)), "32-256 hex digits"),
}


def _normalize_variables(variables: Mapping[str, str | int]) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for name, value in variables.items():
        if not isinstance(name, str):
            raise TemplateError("variable names must be strings")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TemplateError(f"variable {name} must be a str or an int")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise TemplateError(f"variable {name} is not valid Unicode text") from None
        validator = KNOWN_VARIABLES.get(name)
        out[name] = validator(name, value) if validator else value
    return out


# --------------------------------------------------------------------------- template model


@dataclass(frozen=True)
class _Whole:
    """A plain scalar that is exactly one placeholder: substituted with its type."""

    name: str


@dataclass(frozen=True, eq=False)
class _TomlDoc:
    """``!toml`` mapping: serialized to TOML text after substitution."""

    table: dict[Hashable, Any]  # YAML keys: the TOML writer refuses any but strings


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that marks typed placeholders and understands ``!toml``."""


def _construct_str(loader: _TemplateLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_scalar(node)
    if node.style is None:
        match = _PLACEHOLDER_RE.fullmatch(value)
        if match and not match.group(1):
            return _Whole(match.group(2))
    return value


def _construct_toml(loader: _TemplateLoader, node: yaml.Node) -> _TomlDoc:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!toml must be followed by a mapping", node.start_mark
        )
    return _TomlDoc(loader.construct_mapping(node, deep=True))


_TemplateLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_TemplateLoader.add_constructor("!toml", _construct_toml)


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, _Whole):
        return True
    return isinstance(value, str) and any(not m.group(1) for m in _PLACEHOLDER_RE.finditer(value))


def _check_contexts(tree: dict[str, Any], template: str) -> None:
    """Refuse placeholders where no serializer protects them (raw bodies, shell strings)."""
    files = tree.get("write_files")
    if isinstance(files, list):
        for index, entry in enumerate(files):
            if isinstance(entry, dict) and _has_placeholder(entry.get("content")):
                raise TemplateError(
                    f"template {template}: write_files[{index}].content is a raw file body "
                    "with a placeholder; use `content: !toml` (or another serialized form) "
                    "so the value is escaped for the file's format"
                )
    for section in ("runcmd", "bootcmd"):
        commands = tree.get(section)
        if isinstance(commands, list):
            for index, command in enumerate(commands):
                if _has_placeholder(command):
                    raise TemplateError(
                        f"template {template}: {section}[{index}] is a shell string with a "
                        "placeholder; write the command as a list so the value is one argv item"
                    )


def _walk_names(node: Any, where: str, names: set[str]) -> None:
    if isinstance(node, _TomlDoc):
        _walk_names(node.table, where, names)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, _Whole) or (isinstance(key, str) and "${" in key):
                raise TemplateError(f"{where}: placeholders are not allowed in mapping keys")
            _walk_names(value, where, names)
    elif isinstance(node, list):
        for item in node:
            _walk_names(item, where, names)
    elif isinstance(node, _Whole):
        names.add(node.name)
    elif isinstance(node, str):
        names.update(m.group(2) for m in _PLACEHOLDER_RE.finditer(node) if not m.group(1))


def _parse(template_text: str, template: str) -> dict[str, Any]:
    try:
        tree = yaml.load(template_text, Loader=_TemplateLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"template {template} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise TemplateError(f"template {template} must be a YAML mapping (a cloud-config)")
    _check_contexts(tree, template)
    _walk_names(tree, f"template {template}", set())
    return tree


def list_variables(template_text: str) -> set[str]:
    """Names of all placeholders a template needs (``$${X}`` escapes excluded)."""
    names: set[str] = set()
    _walk_names(_parse(template_text, "<text>"), "template <text>", names)
    return names


# --------------------------------------------------------------------------- substitution


def _substitute(node: Any, values: Mapping[str, str | int]) -> Any:
    if isinstance(node, _TomlDoc):
        table = _substitute(node.table, values)
        text = toml_dumps(table)
        if tomllib.loads(text) != table:  # the serializer is ours: prove it round-trips
            raise TemplateError("internal error: rendered TOML does not round-trip")
        return text
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, _Whole):
        return values[node.name]
    if isinstance(node, str):
        return _PLACEHOLDER_RE.sub(
            lambda m: "${" + m.group(2) + "}" if m.group(1) else str(values[m.group(2)]),
            node,
        )
    return node


# --------------------------------------------------------------------------- TOML writer


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TemplateError(f"TOML keys must be strings, not {type(key).__name__}")
    return key if _BARE_TOML_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _TOML_INT_MIN <= value <= _TOML_INT_MAX:
            raise TemplateError("integer does not fit in a TOML value (64-bit signed)")
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TemplateError(
        f"cannot write a {type(value).__name__} into TOML (use strings, integers, booleans, lists)"
    )


def _emit_table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_toml_key(part) for part in path) + "]")
    for key, value in scalars:
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables:
        _emit_table(value, (*path, key), lines)


def toml_dumps(table: Mapping[str, Any]) -> str:
    """Serialize a mapping of strings, ints, bools, lists and sub-tables to TOML."""
    lines: list[str] = []
    _emit_table(table, (), lines)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- public API


def find_template(name: str, extra_dirs: Iterable[str | Path] = ()) -> Path:
    """Locate ``name`` (``nft-auth`` or ``nft-auth.yaml``) in extra dirs, then TEMPLATE_DIRS."""
    if not isinstance(name, str) or not _TEMPLATE_NAME_RE.fullmatch(name) or ".." in name:
        raise TemplateError(
            "template name must be a file name (letters, digits, '.', '_', '-'), not a path"
        )
    filename = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    searched = [Path(d) for d in extra_dirs] + list(TEMPLATE_DIRS)
    for directory in searched:
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    raise TemplateError(
        f"cloud-init template {filename} not found in: {', '.join(str(d) for d in searched)}"
    )


def render_text(
    template_text: str, variables: Mapping[str, str | int], *, template: str = "<text>"
) -> str:
    """Render template source text; see the module docstring for the rules."""
    tree = _parse(template_text, template)
    needed: set[str] = set()
    _walk_names(tree, f"template {template}", needed)
    missing = needed - set(variables)
    if missing:
        raise MissingVariablesError(missing, template)
    values = _normalize_variables(variables)
    rendered = _substitute(tree, values)
    body = dump_yaml(rendered)
    if yaml.safe_load(body) != rendered:
        raise TemplateError(f"internal error: rendered template {template} does not round-trip")
    return f"{HEADER}\n{body}"


def render(
    template_name_or_path: str | Path,
    variables: Mapping[str, str | int],
    extra_dirs: Iterable[str | Path] = (),
) -> str:
    """Render a template given by name (searched) or by path (a ``Path``, or a str with '/')."""
    if isinstance(template_name_or_path, Path) or "/" in str(template_name_or_path):
        path = Path(template_name_or_path)
    else:
        path = find_template(str(template_name_or_path), extra_dirs)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read cloud-init template {path}: {exc}") from None
    return render_text(text, variables, template=str(path))
