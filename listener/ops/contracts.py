"""``blockhost contracts deploy`` and ``contracts set-page``: the three contracts, owned by the
deployer key's address, and the NFT's one default credentials page.

The page is stored on chain once (``setDefaultAnimationPage`` for its first part,
``appendDefaultAnimationPage`` for each further part, so it may be larger than one transaction
can write) and shown by every credential minted without a page of its own; its size budget
comes from ``bench/mint_gas.py`` (see docs/nft-page.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3

from blockhost_data import packaged_dir
from listener.chain.contracts import deploy_all, load_abi, send_transaction
from listener.chain.journal import Store
from listener.config import Config
from listener.crypto.key_files import load_private_key
from listener.errors import UserError
from listener.runtime.wiring import build_minter
from listener.writeback.nft import NftMinter
from listener.writeback.tx_store import TxRequest
from listener.writeback.txmanager import TxCall

#: Largest page (HTML bytes, before base64) stored on chain. tokenURI copies the stored base64
#: without escaping it, so at 32 KiB an eth_call of tokenURI needs ~6.5M gas, far under the
#: ~50M cap RPC providers put on calls; storing it takes six transactions (bench/mint_gas.py).
PAGE_BUDGET_BYTES = 32 * 1024

#: Base64 characters per page transaction (a multiple of 4, so each part is whole base64):
#: 8,192 cost ~6.2M gas to store, plus ~3M for the last part of a 32 KiB page, which hashes
#: the whole page for its event: with the senders' 25% estimate margin still under EIP-7825's
#: 16,777,216 gas per transaction.
CHUNK_CHARS = 8192

#: The credentials page the wheel ships (blockhost_data/web), the deploy default.
PACKAGED_PAGE_NAME = "nft-credentials.html"

#: Keys of the page transactions: one per (NFT, page, generation), see :func:`set_page`.
PAGE_KEY_PREFIX = "nftpage"


@dataclass(frozen=True)
class PageChange:
    """What ``contracts set-page`` did: the page now on chain and whether a tx was needed."""

    nft: str
    page_bytes: int
    page_sha256: str | None  # of the HTML file (compare with sha256sum); None: no page
    changed: bool
    transactions: int  # page transactions sent or followed by this run

    def to_dict(self) -> dict[str, Any]:
        return {"nft": self.nft, "page_bytes": self.page_bytes,
                "page_sha256": self.page_sha256, "changed": self.changed,
                "transactions": self.transactions}


def packaged_page() -> Path | None:
    """The packaged credentials page, or None when this installation has none."""
    try:
        page = packaged_dir("web") / PACKAGED_PAGE_NAME
    except RuntimeError:
        return None
    return page if page.is_file() else None


def read_page(path: Path) -> bytes:
    """The page's bytes, refused in one line when missing, empty or over the budget."""
    try:
        html = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"page file {path} does not exist; pass an HTML file") from None
    except OSError as exc:
        raise UserError(f"cannot read page file {path}: {exc.strerror}") from None
    if not html:
        raise UserError(f"page file {path} is empty; to remove the page use --off")
    if len(html) > PAGE_BUDGET_BYTES:
        raise UserError(
            f"page file {path} is {len(html)} bytes, over the {PAGE_BUDGET_BYTES}-byte budget "
            "for a page stored on chain (docs/nft-page.md); shrink it or use --off")
    return html


def page_base64(html: bytes) -> str:
    return base64.b64encode(html).decode("ascii")


def page_chunks(page: str) -> list[str]:
    """The parts ``page`` is stored in, in order; ``[""]`` for no page (one transaction)."""
    return [page[at:at + CHUNK_CHARS] for at in range(0, len(page), CHUNK_CHARS)] or [""]


def _chunk_method(index: int) -> str:
    """The first part replaces the page, each further one is appended to it."""
    return "setDefaultAnimationPage" if index == 0 else "appendDefaultAnimationPage"


# -------------------------------------------------------------------------------- deploy


def deploy_contracts(rpc_url: str, key_file: Path, *, stablecoin: str | None,
                     page: Path | None, on_step: Callable[[str], None] | None = None
                     ) -> dict[str, Any]:
    """Deploy through ``rpc_url`` (a mock stablecoin unless ``stablecoin`` names one) and set
    ``page`` as the NFT's default credentials page (None: none); returns the deployment's
    addresses and block, and ``default_page_bytes`` (0: no page)."""
    html = read_page(page) if page is not None else b""  # refuse before deploying anything
    key = load_private_key(key_file, what="deployer key")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    if not w3.is_connected():
        raise UserError(f"cannot reach RPC endpoint {rpc_url}; check --rpc-url")
    private_key = "0x" + key.hex()
    doc = deploy_all(w3, private_key, stablecoin=stablecoin, on_step=on_step).to_dict()
    if html:
        if on_step is not None:
            on_step(f"setting the NFT's default credentials page ({len(html)} bytes)")
        nft = w3.eth.contract(address=doc["nft"], abi=load_abi("AccessCredentialNFT"))
        for index, chunk in enumerate(page_chunks(page_base64(html))):
            send_transaction(w3, Account.from_key(private_key),
                             getattr(nft.functions, _chunk_method(index))(chunk))
    doc["default_page_bytes"] = len(html)
    return doc


# ------------------------------------------------------------------------------ set-page


def page_key(nft: str, page: str, generation: int, index: int = 0) -> str:
    """``nftpage:<nft>:<sha256 of the base64 page, 16 hex>:<generation>:<part index>/<parts>``."""
    digest = hashlib.sha256(page.encode("ascii")).hexdigest()[:16] if page else "off"
    parts = len(page_chunks(page))
    return f"{PAGE_KEY_PREFIX}:{nft.lower()}:{digest}:{generation}:{index}/{parts}"


def current_page(minter: NftMinter) -> str:
    return str(minter.contract.functions.defaultAnimationPage().call())


def set_page(config: Config, *, page: Path | None) -> PageChange:
    """Make ``page`` (None: no page) the NFT's default, through the transaction manager with
    the daemon's signer (the NFT's owner); does nothing when the chain already has it."""
    html = read_page(page) if page is not None else b""
    with closing(Store.open(config.db.path)) as store:
        minter = build_minter(config, store)
        if minter is None:
            raise UserError("chain.nft_contract is not set; deploy with `blockhost contracts "
                            "deploy` and put the NFT address in the config")
        sent = send_page(minter, page_base64(html) if html else "")
    return PageChange(nft=minter.address, page_bytes=len(html),
                      page_sha256=hashlib.sha256(html).hexdigest() if html else None,
                      changed=sent > 0, transactions=sent)


def send_page(minter: NftMinter, page: str) -> int:
    """Exactly once per part and change: generation ``g`` of a page's keys is reused while
    any of its parts is stored and the page is not finished (a rerun after a crash follows an
    open transaction and sends only the parts never stored); once every part is confirmed, a
    rerun with that page on chain does nothing and one after another page was set takes
    ``g + 1``. Returns how many transactions were sent or followed; raises UserError when the
    page on chain does not hash to ``page`` at the end."""
    generation, sent = 0, 0
    while True:
        keys = [page_key(minter.address, page, generation, i)
                for i in range(len(page_chunks(page)))]
        stored = [minter.txm.store.get(key) for key in keys]
        if all(request is not None and request.state == "confirmed" for request in stored) \
                or any(request is not None and request.state == "reverted" for request in stored):
            if current_page(minter) == page:
                return sent
            generation += 1
            continue
        if all(request is None for request in stored) and current_page(minter) == page:
            return sent
        done, complete = _upload(minter, page, keys)
        sent += done
        if complete:
            _verify(minter, page)
            return sent
        generation += 1  # the chain no longer holds this generation's first parts


def _upload(minter: NftMinter, page: str, keys: list[str]) -> tuple[int, bool]:
    """Send or follow each part not yet confirmed, in order: (transactions, complete), not
    complete when a part would extend a page that is no longer this one's first parts
    (another page was set meanwhile)."""
    chunks = page_chunks(page)
    sent = 0
    for index, key in enumerate(keys):
        request = minter.txm.store.get(key)
        if request is not None and request.state == "confirmed":
            continue
        if request is None and index > 0 and not _holds_prefix(minter, chunks, index):
            return sent, False
        _execute(minter, key, chunks, index)
        sent += 1
    return sent, True


def _holds_prefix(minter: NftMinter, chunks: list[str], parts: int) -> bool:
    """Whether the chain's page is exactly ``chunks[:parts]``, stored as that many parts."""
    count = int(minter.contract.functions.defaultAnimationPageChunks().call())
    return count == parts and current_page(minter) == "".join(chunks[:parts])


def _verify(minter: NftMinter, page: str) -> None:
    on_chain = current_page(minter)
    if Web3.keccak(text=on_chain) != Web3.keccak(text=page):
        raise UserError(
            f"the NFT's page on chain ({len(on_chain)} base64 characters) is not the file's "
            f"({len(page)}) after the upload: another page was set at the same time; run "
            "`blockhost contracts set-page` again")


def _execute(minter: NftMinter, key: str, chunks: list[str], index: int) -> None:
    data = minter.contract.encode_abi(_chunk_method(index), args=[chunks[index]])
    done = {"part": index, "parts": len(chunks)}

    def resolve(_stored: TxRequest) -> dict[str, Any] | None:
        # Another transaction took the nonce: this part counts as done if the chain holds it.
        count = int(minter.contract.functions.defaultAnimationPageChunks().call())
        page = current_page(minter)
        if not chunks[index]:
            return done if count == 0 else None
        return done if count > index and page.startswith("".join(chunks[:index + 1])) else None

    minter.txm.execute(key, PAGE_KEY_PREFIX, None,
                       TxCall(to=minter.address, data=bytes(HexBytes(data))),
                       lambda _receipt: done, resolve)
