"""The commented ``blockhost.yaml`` that ``blockhost init`` writes.

The comments are fixed text; every value goes through ``yaml.safe_dump`` on its own (a URL or
an address from a flag can never break out of its line), and the whole text is parsed back
and compared with the values before anyone writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

HEADER = (
    "# Blockhost configuration, written by `blockhost init`.",
    "# Every key, its type and default: PROJECT.yaml `config_keys`; a key left out keeps its",
    "# default. No secret is ever a value here, only paths to files (mode 0600) that hold one,",
    "# so this file is 0640: the daemon's group may read it, other users may not.",
)


@dataclass(frozen=True)
class Key:
    name: str
    comment: str


@dataclass(frozen=True)
class Section:
    name: str  # "" = top-level keys
    comment: str
    keys: tuple[Key, ...]


SECTIONS: tuple[Section, ...] = (
    Section("chain", "Where the subscription contract lives and how to follow it.", (
        Key("rpc_urls", "several = failover; the chain id is checked on each (never given to VMs)"),
        Key("chain_id", "checked on every connect; transactions are signed for it"),
        Key("subscription_contract", "BlockhostSubscriptions: the events the daemon follows"),
        Key("nft_contract", "AccessCredentialNFT, owned by the signer below"),
        Key("start_block", "where the first start reads from (the contracts' deployment block)"),
        Key("confirmations", "a depth, or finalized / safe"),
    )),
    Section("signer", "The key that owns the NFT contract and pays for mints.", (
        Key("private_key_file", "hex private key, mode 0600"),
    )),
    Section("", "", (
        Key("server_key_file", "decrypts userEncrypted; `blockhost keys show` prints its public key"),
    )),
    Section("proxmox", "The Proxmox VE API and where VMs are made.", (
        Key("api_url", "https only"),
        Key("token_id", "API token USER@REALM!TOKENID"),
        Key("token_secret_file", "the token's secret, mode 0600"),
        Key("verify_ssl", "true, false, or a CA bundle path"),
        Key("nodes", "empty = any online node"),
        Key("template_vmid", "the cloud-init template VMs are cloned from"),
        Key("pool", "resource pool of our VMs"),
        Key("storage", "disk storage of our VMs"),
    )),
    Section("network", "Addresses handed to VMs.", (
        Key("bridge", "the VMs' net0 bridge"),
        Key("ip_pool", "start/end: offsets in the network or full addresses"),
    )),
    Section("vm", "What goes into each VM.", (
        Key("rpc_url", "the public RPC endpoint tenants' VMs get (\"\" = none)"),
    )),
    Section("db", "The daemon's state.", (
        Key("path", "SQLite database; back it up with `blockhost backup`"),
    )),
)


def scalar(value: Any) -> str:
    """One value as YAML flow text (quoted where YAML needs it), never a raw string."""
    options: dict[str, Any] = {"default_flow_style": True, "width": 1_000_000,
                               "allow_unicode": False, "sort_keys": False}
    text = str(yaml.safe_dump(value, **options)).removesuffix("\n").removesuffix("\n...")
    if "\n" in text.strip():  # a line break inside a value: double-quoted escapes keep one line
        text = str(yaml.safe_dump(value, default_style='"', **options))
        text = text.removesuffix("\n").removesuffix("\n...")
    return text.strip()


def known_paths() -> set[str]:
    """Every dotted key path the template can hold."""
    return {f"{s.name}.{k.name}" if s.name else k.name for s in SECTIONS for k in s.keys}


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"chain.chain_id": 1}`` -> ``{"chain": {"chain_id": 1}}``."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _section_lines(section: Section, flat: Mapping[str, Any]) -> list[str]:
    prefix = f"{section.name}." if section.name else ""
    present = [key for key in section.keys if prefix + key.name in flat]
    if not present:
        return []
    indent = "  " if section.name else ""
    lines = [""]
    if section.name:
        lines += [f"# {section.comment}", f"{section.name}:"]
    for key in present:
        lines.append(f"{indent}# {key.comment}")
        lines.append(f"{indent}{key.name}: {scalar(flat[prefix + key.name])}")
    return lines


def render(flat: Mapping[str, Any]) -> str:
    """The commented config holding exactly ``flat`` (dotted key path -> value)."""
    unknown = sorted(set(flat) - known_paths())
    if unknown:
        raise ValueError(f"no place in the template for {unknown}")
    lines = list(HEADER)
    for section in SECTIONS:
        lines += _section_lines(section, flat)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != nest(flat):
        raise ValueError("the rendered config does not read back as its values")
    return text
