"""The access-credential NFT: mint and update through the transaction manager.

Token ids come from the mint receipt's ``CredentialMinted`` log, never from a
``totalSupply()`` prediction. When the manager cannot tell whether a transaction took effect
(our nonce was used, none of our hashes has a receipt), the resolvers here read the chain —
``CredentialMinted`` logs, ``ownerOf`` and ``getAccessData`` — instead of minting again.
"""

from __future__ import annotations

import base64
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError

from listener.chain.contracts import load_artifact
from listener.errors import UserError
from listener.writeback.tx_errors import TxFailed
from listener.writeback.tx_store import TxRequest
from listener.writeback.txmanager import TxCall, TxManager

if TYPE_CHECKING:
    from listener.config import Config

CREDENTIAL_MINTED_TOPIC = "0x" + keccak(
    text="CredentialMinted(uint256,address,uint256,uint256)").hex()

#: Blocks per eth_getLogs call when resolving an uncertain mint (providers cap ranges).
RESOLVE_LOG_RANGE = 2000


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


def mint_key(subscription_id: int) -> str:
    return f"mint:sub:{subscription_id}"


def expiry_key(subscription_id: int, expires_at: int) -> str:
    return f"expiry:sub:{subscription_id}:{expires_at}"


def user_encrypted_key(subscription_id: int, generation: int | str) -> str:
    return f"userenc:sub:{subscription_id}:{generation}"


def _topic_hex(value: Any) -> str:
    text = value.hex() if isinstance(value, (bytes, bytearray)) else str(value)
    return (text if text.startswith("0x") else "0x" + text).lower()


def token_id_from_receipt(receipt: dict[str, Any], nft_address: str) -> int:
    """Read the token id from the CredentialMinted log; never predict it."""
    for entry in receipt.get("logs", []):
        topics = [_topic_hex(t) for t in entry["topics"]]
        if (str(entry["address"]).lower() == nft_address.lower()
                and len(topics) >= 2 and topics[0] == CREDENTIAL_MINTED_TOPIC):
            return int(topics[1], 16)
    raise TxFailed("mint receipt has no CredentialMinted log from the NFT contract")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (name,)).fetchone()
    return row is not None


def claimed_tokens(conn: sqlite3.Connection, *, except_subscription: int | None = None
                   ) -> set[int]:
    """Token ids our database already attributes to a subscription or a manual VM."""
    claimed: set[int] = set()
    if _has_table(conn, "subscriptions"):
        claimed |= {int(r[0]) for r in conn.execute(
            "SELECT token_id FROM subscriptions WHERE token_id IS NOT NULL AND id IS NOT ?",
            (except_subscription,))}
    if _has_table(conn, "manual_vms"):
        claimed |= {int(r[0]) for r in conn.execute(
            "SELECT token_id FROM manual_vms WHERE token_id IS NOT NULL")}
    return claimed


def purchase_block(conn: sqlite3.Connection, subscription_id: int) -> int:
    """The block of the subscription's purchase (no mint for it can be older); 0 if unknown."""
    if not _has_table(conn, "subscriptions"):
        return 0
    row = conn.execute("SELECT created_block FROM subscriptions WHERE id = ?",
                       (subscription_id,)).fetchone()
    return int(row[0]) if row is not None else 0


class NftMinter:
    """Owner-side NFT operations, each keyed for exactly-once execution."""

    def __init__(self, txm: TxManager, nft_address: str) -> None:
        self.txm = txm
        self.address = to_checksum_address(nft_address)
        self.contract = txm.w3.eth.contract(address=self.address,
                                            abi=load_artifact("AccessCredentialNFT")["abi"])

    # -- mint ------------------------------------------------------------------------------

    def mint_call(self, request: MintRequest) -> TxCall:
        data = self.contract.encode_abi("mint", args=[
            Web3.to_checksum_address(request.to), request.user_encrypted, request.public_secret,
            request.description, request.image_uri, request.animation_url_base64,
            int(request.expires_at)])
        return TxCall(to=self.address, data=bytes(HexBytes(data)))

    def mint(self, key: str, subscription_id: int | None, request: MintRequest) -> int:
        """Mint once for ``key`` (``mint:sub:<id>``); return the token id from the receipt."""
        result = self.txm.execute(
            key, "mint", subscription_id, self.mint_call(request),
            lambda receipt: {"token_id": token_id_from_receipt(receipt, self.address)},
            self._resolve_mint)
        return int(result["token_id"])

    def mint_for_subscription(self, subscription_id: int, request: MintRequest) -> int:
        return self.mint(mint_key(subscription_id), subscription_id, request)

    def _stored_args(self, stored: TxRequest) -> dict[str, Any]:
        """The arguments of the call as signed (a retry may carry fresh ciphertext)."""
        _fn, args = self.contract.decode_function_input(stored.data)
        return dict(args)

    def _resolve_mint(self, stored: TxRequest) -> dict[str, Any] | None:
        """Find a token minted by the stored request's calldata, or prove there is none.

        Candidates are CredentialMinted logs to the recipient since the request was created;
        one matches when ``ownerOf`` is the recipient and ``getAccessData`` carries exactly
        the requested userEncrypted, publicSecret and expiresAt, and no other request of ours
        already claimed that token.
        """
        args = self._stored_args(stored)
        request = MintRequest(
            to=args["to"], user_encrypted=bytes(args["userEncrypted"]),
            public_secret=args["publicSecret"], description=args["description"],
            image_uri=args["imageUri"], animation_url_base64=args["animationUrlBase64"],
            expires_at=int(args["expiresAt"]))
        # the chain before the database, as in existing_credential
        minted = list(self.minted_to(request.to, stored.created_block))
        claimed = {int(r["token_id"]) for r in self.txm.store.results_of_kind("mint")
                   if "token_id" in r}
        for token_id in minted:
            if token_id not in claimed and self._matches(token_id, request):
                return {"token_id": token_id}
        return None

    def minted_to(self, to: str, from_block: int) -> Iterator[int]:
        """Token ids of CredentialMinted logs to ``to`` from ``from_block`` on, oldest first."""
        for token_id, _tx_hash in self.mints_to(to, from_block):
            yield token_id

    def mints_to(self, to: str, from_block: int) -> Iterator[tuple[int, str]]:
        """(token id, minting transaction hash) of CredentialMinted logs to ``to`` from
        ``from_block`` on, oldest first (ranges of RESOLVE_LOG_RANGE blocks: providers cap
        eth_getLogs)."""
        recipient_topic = "0x" + "00" * 12 + bytes(HexBytes(to)).hex()
        head = self.txm.chain.head()
        start = max(0, from_block)
        while start <= head:
            end = min(head, start + RESOLVE_LOG_RANGE - 1)
            logs = self.txm.w3.eth.get_logs({
                "address": self.address, "fromBlock": start, "toBlock": end,
                "topics": [CREDENTIAL_MINTED_TOPIC, None, recipient_topic]})
            for entry in logs:
                yield int(_topic_hex(entry["topics"][1]), 16), _topic_hex(entry["transactionHash"])
            start = end + 1

    def existing_credential(self, subscription_id: int, to: str,
                            public_secret: str) -> int | None:
        """The token already minted on chain for this subscription, or None.

        A restored or lost database forgets its mints; the chain does not. A candidate is a
        CredentialMinted log to the subscriber since the subscription's purchase block whose
        ``getAccessData`` publicSecret is the subscription's, and which no other record of
        ours (a mint request, another subscription, a manual VM) already claims. A token that
        one of our own transactions for another key minted is never a candidate, even before
        that mint's outcome is stored: two legacy purchases of one wallet share a publicSecret,
        and run side by side.

        The chain is read before the database: every transaction of ours is stored before it
        is broadcast, so a token that the logs show and that one of our transactions minted
        is already in the database read after them. Read the other way round, a sibling's
        mint landing between the two reads was taken for a forgotten one (test_lifecycle's
        SIGKILL story saw two subscriptions holding one token)."""
        candidates = list(self.mints_to(to, purchase_block(self.txm.store.conn,
                                                           subscription_id)))
        claimed = claimed_tokens(self.txm.store.conn, except_subscription=subscription_id)
        claimed |= {int(r["token_id"]) for r in self.txm.store.results_of_kind("mint")
                    if "token_id" in r}
        sent_for_others = self._our_tx_hashes(except_key=mint_key(subscription_id))
        for token_id, tx_hash in candidates:
            if token_id in claimed or tx_hash in sent_for_others:
                continue
            try:
                secret = self.access_data(token_id)[1]
            except ContractLogicError:
                continue
            if secret == public_secret:
                return token_id
        return None

    def _our_tx_hashes(self, *, except_key: str) -> set[str]:
        """Hashes of every transaction we signed, for any request but ``except_key``."""
        rows = self.txm.store.conn.execute(
            "SELECT a.tx_hash FROM tx_attempts a JOIN tx_requests r ON r.id = a.request_id"
            " WHERE r.idempotency_key != ?", (except_key,)).fetchall()
        return {_topic_hex(row[0]) for row in rows}

    def _matches(self, token_id: int, request: MintRequest) -> bool:
        try:
            owner = self.contract.functions.ownerOf(token_id).call()
            user_encrypted, public_secret, _issued, expires_at = self.access_data(token_id)
        except ContractLogicError:
            return False
        return (owner.lower() == request.to.lower() and user_encrypted == request.user_encrypted
                and public_secret == request.public_secret
                and expires_at == int(request.expires_at))

    # -- updates ---------------------------------------------------------------------------

    def update_expiration(self, subscription_id: int, token_id: int, expires_at: int) -> None:
        """Move the NFT's expiry once per (subscription, expiresAt); a no-op if already so."""
        key = expiry_key(subscription_id, expires_at)
        if self.txm.store.get(key) is None and self.access_data(token_id)[3] == expires_at:
            return
        data = self.contract.encode_abi("updateExpiration", args=[token_id, int(expires_at)])

        def resolve(_stored: TxRequest) -> dict[str, Any] | None:
            return {"token_id": token_id} if self.access_data(token_id)[3] == expires_at else None

        self.txm.execute(key, "expiry", subscription_id,
                         TxCall(to=self.address, data=bytes(HexBytes(data))),
                         lambda _receipt: {"token_id": token_id}, resolve)

    def update_user_encrypted(self, subscription_id: int, token_id: int, user_encrypted: bytes,
                              generation: int | str) -> None:
        """Replace the connection details once per (subscription, VM generation)."""
        key = user_encrypted_key(subscription_id, generation)
        if self.txm.store.get(key) is None and self.access_data(token_id)[0] == user_encrypted:
            return
        data = self.contract.encode_abi("updateUserEncrypted", args=[token_id, user_encrypted])

        def resolve(stored: TxRequest) -> dict[str, Any] | None:
            signed = bytes(self._stored_args(stored)["userEncrypted"])
            return {"token_id": token_id} if self.access_data(token_id)[0] == signed else None

        self.txm.execute(key, "userenc", subscription_id,
                         TxCall(to=self.address, data=bytes(HexBytes(data))),
                         lambda _receipt: {"token_id": token_id}, resolve)

    # -- reads -----------------------------------------------------------------------------

    def access_data(self, token_id: int) -> tuple[bytes, str, int, int]:
        data = self.contract.functions.getAccessData(token_id).call()
        return bytes(data[0]), str(data[1]), int(data[2]), int(data[3])

    def total_supply(self) -> int:
        return int(self.contract.functions.totalSupply().call())


_MACHINE_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
_MAX_USER_ENCRYPTED_BYTES = 4096


def manual_key(machine_id: str) -> str:
    return f"mint:manual:{machine_id}"


def manual_mint(minter: NftMinter, config: Config, *, owner_wallet: str, machine_id: str,
                user_encrypted_hex: str = "", public_secret: str | None = None,
                expires_at: int = 0) -> int:
    """`blockhost mint`: the seed's manual mint, exactly once per machine id."""
    if not Web3.is_address(owner_wallet):
        raise UserError(f"--owner-wallet {owner_wallet!r} is not an address "
                        "(0x + 40 hex digits)")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise UserError(f"--machine-id {machine_id!r} is not a VM name (letters, digits, "
                        "'.', '_', '-'; at most 63 characters)")
    if expires_at < 0:
        raise UserError("--expires-at must be a unix time >= 0 (0: never expires)")
    text = user_encrypted_hex.removeprefix("0x")
    try:
        user_encrypted = bytes.fromhex(text)
    except ValueError:
        raise UserError("--user-encrypted is not hex; pass the 0x… ciphertext") from None
    if len(user_encrypted) > _MAX_USER_ENCRYPTED_BYTES:
        raise UserError(f"--user-encrypted is longer than {_MAX_USER_ENCRYPTED_BYTES} bytes")
    request = MintRequest(
        to=Web3.to_checksum_address(owner_wallet), user_encrypted=user_encrypted,
        public_secret=config.public_secret_default if public_secret is None else public_secret,
        description=config.nft.description, image_uri=config.nft.image_uri,
        animation_url_base64=signing_page_base64(config.nft.signing_page_path),
        expires_at=expires_at)
    key = manual_key(machine_id)
    stored = minter.txm.store.get(key)
    if stored is not None and stored.data != minter.mint_call(request).data:
        raise UserError(f"machine {machine_id} was already minted with other details "
                        "(see `blockhost status`); use a new --machine-id")
    return minter.mint(key, None, request)
