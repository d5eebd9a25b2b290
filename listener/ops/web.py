"""The subscriber's pages (signup, renew, credentials, nft-credentials) and the config.json
they read, built from the deployment's config.

Only public facts go into config.json: the chain id, contract addresses, the server's
*public* key and ``vm.rpc_url`` (the public RPC); never ``chain.rpc_urls``, which may carry
API keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from web3 import Web3

from blockhost_data import packaged_dir
from listener.chain.contracts import load_artifact
from listener.config import Config
from listener.errors import UserError
from listener.ops.keys import server_public_key
from listener.redact import redact

PAGES = ("signup.html", "renew.html", "credentials.html", "nft-credentials.html")


def pages_dir() -> Path:
    """Where the built pages live (blockhost_data/web; BLOCKHOST_WEB_DIR overrides)."""
    override = os.environ.get("BLOCKHOST_WEB_DIR")
    return Path(override) if override else packaged_dir("web")


def read_pages() -> dict[str, bytes]:
    """Every page's bytes; UserError naming the fix when the build output is missing."""
    folder = pages_dir()
    missing = [name for name in PAGES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"web page {missing[0]} is missing from {folder}; run `make web` "
                        "(or reinstall the package)")
    return {name: (folder / name).read_bytes() for name in PAGES}


def _stablecoin(config: Config, subscription_contract: str) -> str:
    """The contract's primary stablecoin, asked over the operator's (private) RPC."""
    if not config.chain.rpc_urls:
        raise UserError("chain.rpc_urls is empty; the pages' config needs the stablecoin "
                        "address read from the subscription contract")
    url = config.chain.rpc_urls[0]
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    contract = w3.eth.contract(address=Web3.to_checksum_address(subscription_contract),
                               abi=load_artifact("BlockhostSubscriptions")["abi"])
    try:
        address = str(contract.functions.getPrimaryStablecoin().call())
    except Exception as exc:  # noqa: BLE001 - any RPC or decoding failure means the same fix
        raise UserError(redact(f"cannot read the stablecoin from {subscription_contract} via "
                               f"{url}: {exc}; check chain.rpc_urls and "
                               "chain.subscription_contract")) from None
    if int(address, 16) == 0:
        raise UserError(f"{subscription_contract} has no primary stablecoin yet; the owner "
                        "must call setPrimaryStablecoin first")
    return address


def page_config(config: Config, *, status_url: str | None = None) -> dict[str, Any]:
    """The config.json the pages read (public facts only)."""
    chain = config.chain
    if chain.chain_id is None or not chain.subscription_contract or not chain.nft_contract:
        raise UserError("chain.chain_id, chain.subscription_contract and chain.nft_contract "
                        "must be set in the config before the pages can be served")
    doc: dict[str, Any] = {
        "chainId": chain.chain_id,
        "subscriptionContract": Web3.to_checksum_address(chain.subscription_contract),
        "nftContract": Web3.to_checksum_address(chain.nft_contract),
        "stablecoin": Web3.to_checksum_address(_stablecoin(config, chain.subscription_contract)),
        "serverPublicKey": server_public_key(config),
        "rpcUrl": config.vm.rpc_url or None,
    }
    if status_url is not None:
        doc["statusUrl"] = status_url
    return doc


def config_bytes(doc: dict[str, Any]) -> bytes:
    """Stable, serializer-made JSON (chain strings never pasted into text)."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def export_pages(config: Config, out: Path) -> list[Path]:
    """Write the pages and config.json into ``out`` (created if missing); returns the paths."""
    pages = read_pages()
    files = {**pages, "config.json": config_bytes(page_config(config))}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in files.items():
        target = out / name
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(body)
        os.chmod(tmp, 0o644)
        tmp.replace(target)
        written.append(target)
    return written
