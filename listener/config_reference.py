"""The reference Blockhost system's configuration, read into our model's shape.

An operator moving over keeps ``/etc/blockhost``: its ``db.yaml`` and ``web3-defaults.yaml``
are read beside our file (:func:`legacy_overlay`), and the reference's own top-level
``blockhost.yaml`` keys are mapped onto ours with one deprecation warning each
(:func:`map_reference_keys`). A key written in both forms is an error, not a silent pick: the
two may disagree and only the operator knows which is right. Unknown keys stay errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from listener.errors import ConfigError

log = structlog.get_logger(__name__)

#: The reference's top-level blockhost.yaml key -> our dotted key path.
RENAMED: dict[str, str] = {
    "contract_address": "chain.subscription_contract",
    "nft_contract": "chain.nft_contract",
    "public_secret": "public_secret_default",
}
#: Reference keys we derive instead of reading: accepted with a warning saying from where.
DERIVED: dict[str, str] = {
    "server_public_key": "it is derived from server_key_file (`blockhost keys show` prints "
                         "it: compare it with the key your signup page encrypts to)",
    "deployer_address": "it is derived from signer.private_key_file",
}
#: Reference keys whose feature we do not have: ignoring them would drop it silently.
REFUSED: dict[str, str] = {
    "admin": "the reference's on-chain admin commands (admin-commands.json) are not supported "
             "here; remove the section",
}


def map_reference_keys(raw: Mapping[str, Any], *, origin: str) -> dict[str, Any]:
    """``raw`` (one blockhost.yaml) with the reference's top-level keys moved to ours."""
    for old, why in REFUSED.items():
        if old in raw:
            raise ConfigError(f"config error in {origin}: {old}: {why}")
    out = {name: value for name, value in raw.items()
           if name not in RENAMED and name not in DERIVED}
    for old, new in RENAMED.items():
        if old in raw:
            _move(out, old, new, raw[old], origin=origin)
    for old, why in DERIVED.items():
        if old in raw:
            log.warning("config.reference_key_ignored", reference_key=old, file=origin,
                        reason=f"{old} is not read: {why}; remove it")
    return out


def _move(out: dict[str, Any], old: str, new: str, value: Any, *, origin: str) -> None:
    section, _, leaf = new.rpartition(".")
    node = out.get(section) if section else out
    if section and node is None:
        node = out[section] = {}
    if not isinstance(node, dict):
        return  # e.g. `chain: 5`: the model check names the broken section
    if leaf in node:
        raise ConfigError(f"config error in {origin}: {old} and {new} are both set ({old} is "
                          f"the reference system's name for {new}); keep only {new}")
    if section:
        node = out[section] = {**node}
    node[leaf] = value
    log.warning("config.reference_key", reference_key=old, use_instead=new, file=origin,
                reason=f"{old} is the reference system's name; rename it to {new}")


def legacy_overlay(db_yaml: dict[str, Any] | None, web3_yaml: dict[str, Any] | None) -> dict[str, Any]:
    """Map the reference system's db.yaml / web3-defaults.yaml keys onto our model."""
    out: dict[str, Any] = {}
    if db_yaml:
        out.update(_db_overlay(db_yaml))
    if web3_yaml:
        out.update(_web3_overlay(web3_yaml))
    return out


def _db_overlay(db_yaml: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    network: dict[str, Any] = {}
    if isinstance(db_yaml.get("ip_pool"), dict):
        network["ip_pool"] = {k: v for k, v in db_yaml["ip_pool"].items()
                              if k in {"network", "start", "end", "gateway"}}
    if isinstance(db_yaml.get("ipv6_pool"), dict):
        network["ipv6_pool"] = {k: v for k, v in db_yaml["ipv6_pool"].items()
                                if k in {"start", "end", "prefix", "gateway"}}
    vmids = db_yaml.get("vmid_range") or db_yaml.get("vmid_pool")
    if isinstance(vmids, dict):
        network["vmid_range"] = {k: v for k, v in vmids.items() if k in {"start", "end"}}
    if "bridge" in db_yaml:
        network["bridge"] = db_yaml["bridge"]
    if network:
        out["network"] = network
    if "gc_grace_days" in db_yaml:
        out["gc"] = {"grace_days": db_yaml["gc_grace_days"]}
    if "terraform_dir" in db_yaml:
        out["proxmox"] = {"terraform_dir": db_yaml["terraform_dir"]}
    return out


def _web3_overlay(web3_yaml: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    chain = web3_yaml.get("blockchain") or {}
    if isinstance(chain, dict):
        mapped: dict[str, Any] = {}
        if chain.get("rpc_url"):
            mapped["rpc_urls"] = [chain["rpc_url"]]
        if chain.get("chain_id") is not None:
            mapped["chain_id"] = chain["chain_id"]
        if chain.get("nft_contract"):
            mapped["nft_contract"] = chain["nft_contract"]
        if mapped:
            out["chain"] = mapped
    deployer = web3_yaml.get("deployer") or {}
    if isinstance(deployer, dict) and deployer.get("private_key_file"):
        out["signer"] = {"private_key_file": deployer["private_key_file"]}
    page = web3_yaml.get("signing_page") or {}
    if isinstance(page, dict) and page.get("html_path"):
        out["nft"] = {"signing_page_path": page["html_path"]}
    return out
