"""The access-credential NFT: mint through the transaction manager, token id from the receipt."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address
from web3 import Web3

from listener.contracts import load_artifact
from listener.txmanager import TxFailed, TxManager

CREDENTIAL_MINTED_TOPIC = "0x" + keccak(
    text="CredentialMinted(uint256,address,uint256,uint256)").hex()


@dataclass(frozen=True)
class MintRequest:
    to: str
    user_encrypted: bytes
    public_secret: str
    description: str
    image_uri: str
    animation_url_base64: str
    expires_at: int


def signing_page_base64(path: Path | None) -> str:
    """The signing page served from the NFT's animation_url, base64 (empty if none)."""
    if path is None:
        return ""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def token_id_from_receipt(receipt: dict[str, Any], nft_address: str) -> int:
    """Read the token id from the CredentialMinted log; never predict it."""
    for entry in receipt.get("logs", []):
        topics = [t.hex() if isinstance(t, bytes) else str(t) for t in entry["topics"]]
        topics = [t if t.startswith("0x") else "0x" + t for t in topics]
        if (str(entry["address"]).lower() == nft_address.lower()
                and topics and topics[0].lower() == CREDENTIAL_MINTED_TOPIC):
            return int(topics[1], 16)
    raise TxFailed("mint receipt has no CredentialMinted log from the NFT contract")


class NftMinter:
    """Owner-side NFT operations, all keyed for exactly-once execution."""

    def __init__(self, txm: TxManager, nft_address: str) -> None:
        self.txm = txm
        self.address = to_checksum_address(nft_address)
        self.contract = txm.w3.eth.contract(address=self.address,
                                            abi=load_artifact("AccessCredentialNFT")["abi"])

    def mint(self, key: str, subscription_id: int | None, request: MintRequest) -> int:
        def build(params: dict[str, Any]) -> dict[str, Any]:
            return self.contract.functions.mint(
                Web3.to_checksum_address(request.to), request.user_encrypted,
                request.public_secret, request.description, request.image_uri,
                request.animation_url_base64, request.expires_at,
            ).build_transaction(params)

        result = self.txm.execute(key, "mint", subscription_id, build,
                                  lambda receipt: {"token_id": token_id_from_receipt(
                                      receipt, self.address)})
        return int(result["token_id"])

    def access_data(self, token_id: int) -> tuple[bytes, str, int, int]:
        data = self.contract.functions.getAccessData(token_id).call()
        return bytes(data[0]), str(data[1]), int(data[2]), int(data[3])
