"""The subscriber's side: sign, ECIES-encrypt to the server, pay; later read the NFT back.

Usable against any deployment: it needs only an RPC URL, the contract addresses, the
server's public key and the subscriber's own key file (never a key on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError

from listener.chain.contracts import load_artifact, send_transaction
from listener.chain.events import EVENT_TOPICS, decode_log
from listener.crypto.credentials import ConnectionDetails, decrypt_connection_details
from listener.crypto.ecies import ecies_encrypt
from listener.crypto.user_secret import build_user_plaintext, make_public_secret, sign_public_secret
from listener.errors import UserError

STABLECOIN_PAYMENT_ID = 1


@dataclass(frozen=True)
class SubscribeResult:
    subscription_id: int
    tx_hash: str
    block_number: int
    expires_at: int
    paid_amount: int
    public_secret: str

    def to_json(self) -> dict[str, Any]:
        return {"subscription_id": self.subscription_id, "tx_hash": self.tx_hash,
                "block_number": self.block_number, "expires_at": self.expires_at,
                "paid_amount": str(self.paid_amount), "public_secret": self.public_secret}


def _contract(w3: Web3, name: str, address: str) -> Any:
    if not Web3.is_address(address):
        raise UserError(f"{address!r} is not a contract address (0x + 40 hex digits)")
    return w3.eth.contract(address=Web3.to_checksum_address(address),
                           abi=load_artifact(name)["abi"])


def parse_server_public_key(text: str) -> bytes:
    raw = text[2:] if text.startswith("0x") else text
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise UserError("server public key is not hex; copy it from `blockhost keys show`") from None
    if len(key) != 65 or key[0] != 4:
        raise UserError("server public key must be the 65-byte uncompressed key (0x04…) "
                        "printed by `blockhost keys show`")
    return key


def subscribe(
    w3: Web3,
    account: LocalAccount,
    *,
    subscription_contract: str,
    server_public_key: bytes,
    plan_id: int,
    days: int,
    legacy: bool = False,
    public_secret_default: str = "blockhost-access",
) -> SubscribeResult:
    """Sign the public secret, encrypt it to the server, approve the stablecoin and buy."""
    if days < 1:
        raise UserError("--days must be at least 1")
    subs = _contract(w3, "BlockhostSubscriptions", subscription_contract)
    public_secret = public_secret_default if legacy else make_public_secret(account.address)
    signature = sign_public_secret(account.key, public_secret)
    if legacy:
        plaintext = ("0x" + signature.hex()).encode()
    else:
        plaintext = build_user_plaintext(signature, public_secret)
    blob = ecies_encrypt(server_public_key, plaintext)
    price = subs.functions.calculatePayment(plan_id, days, STABLECOIN_PAYMENT_ID).call()
    _approve_for(w3, account, subs, price)
    receipt = send_transaction(
        w3, account, subs.functions.buySubscription(plan_id, days, STABLECOIN_PAYMENT_ID, blob))
    decoded = _find_event(receipt, "SubscriptionCreated")
    if decoded is not None:
        entry, args = decoded
        return SubscribeResult(
            subscription_id=int(args["subscriptionId"]),
            tx_hash=entry["transactionHash"], block_number=entry["blockNumber"],
            expires_at=int(args["expiresAt"]),
            paid_amount=int(args["paidAmount"]), public_secret=public_secret)
    raise UserError("buySubscription succeeded but emitted no SubscriptionCreated; is "
                    f"{subscription_contract} a BlockhostSubscriptions contract?")


@dataclass(frozen=True)
class ExtendResult:
    subscription_id: int
    tx_hash: str
    block_number: int
    new_expires_at: int
    paid_amount: int

    def to_json(self) -> dict[str, Any]:
        return {"subscription_id": self.subscription_id, "tx_hash": self.tx_hash,
                "block_number": self.block_number, "new_expires_at": self.new_expires_at,
                "paid_amount": str(self.paid_amount)}


def _approve_for(w3: Web3, account: LocalAccount, subs: Any, price: int) -> None:
    """Approve the subscription contract for ``price`` of its stablecoin, if not already."""
    token = _contract(w3, "MockStablecoin", subs.functions.getPrimaryStablecoin().call())
    if token.functions.allowance(account.address, subs.address).call() < price:
        send_transaction(w3, account, token.functions.approve(subs.address, price))


def extend(
    w3: Web3,
    account: LocalAccount,
    *,
    subscription_contract: str,
    subscription_id: int,
    days: int,
) -> ExtendResult:
    """Pay for ``days`` more of an existing subscription (anyone may pay for anyone's).

    The daemon sees SubscriptionExtended and moves the VM and the NFT's expiry along.
    """
    if days < 1:
        raise UserError("--days must be at least 1")
    subs = _contract(w3, "BlockhostSubscriptions", subscription_contract)
    try:
        plan_id, _subscriber, _expires, _active, cancelled = (
            subs.functions.getSubscription(subscription_id).call())
    except ContractLogicError:
        raise UserError(f"subscription {subscription_id} does not exist on "
                        f"{subscription_contract}; check --subscription-id and --contract"
                        ) from None
    if cancelled:
        raise UserError(f"subscription {subscription_id} was cancelled by the operator and "
                        "cannot be extended; buy a new one with `blockhost user subscribe`")
    price = subs.functions.calculatePayment(plan_id, days, STABLECOIN_PAYMENT_ID).call()
    _approve_for(w3, account, subs, price)
    receipt = send_transaction(
        w3, account, subs.functions.extendSubscription(subscription_id, days,
                                                       STABLECOIN_PAYMENT_ID))
    decoded = _find_event(receipt, "SubscriptionExtended")
    if decoded is None:
        raise UserError("extendSubscription succeeded but emitted no SubscriptionExtended; is "
                        f"{subscription_contract} a BlockhostSubscriptions contract?")
    entry, args = decoded
    return ExtendResult(subscription_id=int(args["subscriptionId"]),
                        tx_hash=entry["transactionHash"], block_number=entry["blockNumber"],
                        new_expires_at=int(args["newExpiresAt"]),
                        paid_amount=int(args["paidAmount"]))


def _find_event(receipt: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    topic = EVENT_TOPICS[name]
    for raw in receipt["logs"]:
        entry = {
            "blockNumber": int(raw["blockNumber"]), "blockHash": _hex(raw["blockHash"]),
            "transactionHash": _hex(raw["transactionHash"]), "logIndex": int(raw["logIndex"]),
            "address": raw["address"], "topics": [_hex(t) for t in raw["topics"]],
            "data": _hex(raw["data"]),
        }
        if entry["topics"] and entry["topics"][0] == topic:
            return entry, dict(decode_log(entry).args)
    return None


def tokens_of(w3: Web3, nft_contract: str, owner: str) -> list[int]:
    nft = _contract(w3, "AccessCredentialNFT", nft_contract)
    count = nft.functions.balanceOf(Web3.to_checksum_address(owner)).call()
    return [nft.functions.tokenOfOwnerByIndex(owner, i).call() for i in range(count)]


def credentials(w3: Web3, account: LocalAccount, *, nft_contract: str,
                token_id: int) -> ConnectionDetails:
    """Re-sign the NFT's public secret and decrypt the connection details it carries."""
    nft = _contract(w3, "AccessCredentialNFT", nft_contract)
    owner = nft.functions.ownerOf(token_id).call()
    if owner.lower() != account.address.lower():
        raise UserError(f"token {token_id} belongs to {owner}, not to {account.address}; "
                        "use the wallet that paid")
    user_encrypted, public_secret, _issued, _expires = nft.functions.getAccessData(token_id).call()
    if not user_encrypted:
        raise UserError(f"token {token_id} carries no encrypted credentials (the server could "
                        "not decrypt your signature); see `blockhost status` on the server")
    signature = sign_public_secret(account.key, public_secret)
    return decrypt_connection_details(signature, bytes(user_encrypted))


def load_account(key: bytes) -> LocalAccount:
    account: LocalAccount = Account.from_key(key)
    return account


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text
