"""``blockhost contracts deploy``: the three contracts, owned by the deployer key's address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from web3 import Web3

from listener.chain.contracts import deploy_all
from listener.crypto.key_files import load_private_key
from listener.errors import UserError


def deploy_contracts(rpc_url: str, key_file: Path, *, stablecoin: str | None) -> dict[str, Any]:
    """Deploy through ``rpc_url`` (a mock stablecoin unless ``stablecoin`` names one);
    returns the deployment's addresses and block."""
    key = load_private_key(key_file, what="deployer key")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    if not w3.is_connected():
        raise UserError(f"cannot reach RPC endpoint {rpc_url}; check --rpc-url")
    return deploy_all(w3, "0x" + key.hex(), stablecoin=stablecoin).to_dict()
