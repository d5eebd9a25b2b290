"""The YAML writer of rendered cloud-config: no aliases, multi-line strings as literal blocks,
non-ASCII escaped, no line folding (so the output re-parses to exactly the same tree)."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: _Dumper, data: str) -> yaml.ScalarNode:
    # Literal blocks for file bodies; the emitter falls back to a quoted style whenever
    # a literal block could not represent the string exactly.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(tree: Any) -> str:
    """``tree`` (plain dicts, lists, strings, ints, bools) as YAML text."""
    return yaml.dump(
        tree,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=False,  # True mis-emits NEL/LS/PS (YAML 1.1 line breaks) in blocks
        width=1_000_000,
    )
