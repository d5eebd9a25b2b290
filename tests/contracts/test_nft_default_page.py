"""The NFT's one default credentials page, on a real anvil chain.

A mint with an empty ``animationUrlBase64`` shows the owner's default page, followed by the
fragment that names the token; a mint's own page wins; an empty default means no animation_url.
The default is refused unless it is base64 (so tokenURI copies it unescaped) and may be stored
in parts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxReceipt

from listener.chain.contracts import deploy_contract, load_abi, send_transaction
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])
PAGE_HTML = b"<!doctype html><title>credentials</title><p>decrypt here & now</p>"
PAGE = base64.b64encode(PAGE_HTML).decode()
DATA_PREFIX = "data:text/html;base64,"


@pytest.fixture(scope="module")
def nft(module_anvil: Anvil) -> Contract:
    w3 = Web3(Web3.HTTPProvider(module_anvil.url, request_kwargs={"timeout": 30}))
    address, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Blockhost Access", "BHA", "")
    return w3.eth.contract(address=to_checksum_address(address),
                           abi=load_abi("AccessCredentialNFT"))


@pytest.fixture(autouse=True)
def isolate(nft: Contract) -> Iterator[None]:
    snap = nft.w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]
    try:
        yield
    finally:
        assert nft.w3.provider.make_request(RPCEndpoint("evm_revert"), [snap])["result"] is True


def send(nft: Contract, fn: Any) -> TxReceipt:
    return send_transaction(nft.w3, OWNER, fn, poll_latency=0.01)


def mint(nft: Contract, page: str = "") -> int:
    receipt = send(nft, nft.functions.mint(ALICE.address, b"\x01", "ps", "d", "", page, 0))
    (minted,) = nft.events.CredentialMinted().process_receipt(receipt, errors=DISCARD)
    return int(minted["args"]["tokenId"])


def metadata(nft: Contract, token_id: int) -> tuple[bytes, dict[str, Any]]:
    uri = nft.functions.tokenURI(token_id).call()
    raw = base64.b64decode(uri.removeprefix("data:application/json;base64,"), validate=True)
    return raw, json.loads(raw.decode("utf-8", errors="strict"))


def split_url(url: str) -> tuple[bytes, dict[str, list[str]]]:
    """The page bytes and the fragment's fields of a ``data:text/html;base64,…#…`` URL."""
    assert url.startswith(DATA_PREFIX)
    body, _, fragment = url[len(DATA_PREFIX):].partition("#")
    return base64.b64decode(body, validate=True), parse_qs(fragment, strict_parsing=True)


def test_default_page_is_used_with_the_token_fragment(nft: Contract) -> None:
    receipt = send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    (event,) = nft.events.DefaultAnimationPageUpdated().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["pageHash"] == Web3.keccak(text=PAGE)
    assert event["args"]["length"] == len(PAGE)
    assert nft.functions.defaultAnimationPage().call() == PAGE
    first, second = mint(nft), mint(nft)
    for token_id in (first, second):
        raw, meta = metadata(nft, token_id)
        page, fields = split_url(meta["animation_url"])
        assert page == PAGE_HTML
        assert fields == {"token": [str(token_id)], "nft": [nft.address.lower()],
                          "chain": [str(nft.w3.eth.chain_id)]}
        assert b"&" not in raw  # written as \u0026, like every embedded "&"
        assert list(meta) == ["name", "description", "image", "animation_url", "attributes",
                              "access"]
        assert raw == json.dumps(meta, separators=(",", ":")).encode().replace(b"&", b"\\u0026")


def test_a_mints_own_page_wins_over_the_default(nft: Contract) -> None:
    send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    own = base64.b64encode(b"<p>own</p>").decode()
    token_id = mint(nft, own)
    _, meta = metadata(nft, token_id)
    assert meta["animation_url"] == DATA_PREFIX + own  # as minted: no fragment added
    send(nft, nft.functions.updateAnimationUrl(token_id, ""))
    _, meta = metadata(nft, token_id)
    assert split_url(meta["animation_url"])[0] == PAGE_HTML


def test_empty_default_means_no_animation_url(nft: Contract) -> None:
    assert nft.functions.defaultAnimationPage().call() == ""
    token_id = mint(nft)
    assert "animation_url" not in metadata(nft, token_id)[1]
    send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    assert "animation_url" in metadata(nft, token_id)[1]
    receipt = send(nft, nft.functions.setDefaultAnimationPage(""))
    (event,) = nft.events.DefaultAnimationPageUpdated().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["length"] == 0
    raw, meta = metadata(nft, token_id)
    assert "animation_url" not in meta
    assert raw == json.dumps(meta, separators=(",", ":")).encode()


def test_setting_the_page_refreshes_every_tokens_metadata(nft: Contract) -> None:
    receipt = send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    assert nft.events.BatchMetadataUpdate().process_receipt(receipt, errors=DISCARD) == ()
    mint(nft), mint(nft)
    receipt = send(nft, nft.functions.setDefaultAnimationPage(""))
    (batch,) = nft.events.BatchMetadataUpdate().process_receipt(receipt, errors=DISCARD)
    assert (batch["args"]["_fromTokenId"], batch["args"]["_toTokenId"]) == (0, 1)


def test_only_the_owner_sets_the_default_page(nft: Contract) -> None:
    with pytest.raises(ContractCustomError) as info:
        nft.functions.setDefaultAnimationPage(PAGE).call({"from": ALICE.address})
    _custom_error(info, "OwnableUnauthorizedAccount(address)")
    assert nft.functions.defaultAnimationPage().call() == ""


def _custom_error(info: pytest.ExceptionInfo[ContractCustomError], signature: str) -> str:
    """The revert data after the selector of ``signature`` (asserted)."""
    data = info.value.data
    assert isinstance(data, str)
    assert data[:10] == "0x" + Web3.keccak(text=signature)[:4].hex()
    return data[10:]


@pytest.mark.parametrize(("hostile", "offset"), [
    ('"}],"x":"', 0), ("PGh0bWw+<\\/script>", 8), ("QUJD\n", 4), ("QUJDRA" + "é", 6),
    ("A" * 40 + "&", 40), ("A" * 64 + "-", 64), ("A" * 31 + "_" + "A" * 40, 31)])
def test_a_default_page_that_is_not_base64_is_refused(
        nft: Contract, hostile: str, offset: int) -> None:
    """Checked when stored, so tokenURI can copy the page unescaped: a rejected page leaves
    the default as it was, and the error names the first bad byte's offset."""
    send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    for fn in (nft.functions.setDefaultAnimationPage, nft.functions.appendDefaultAnimationPage):
        with pytest.raises(ContractCustomError) as info:
            fn(hostile).call({"from": OWNER.address})
        assert int(_custom_error(info, "PageNotBase64(uint256)"), 16) == offset
    assert nft.functions.defaultAnimationPage().call() == PAGE


def test_the_whole_base64_alphabet_is_accepted_and_copied_verbatim(nft: Contract) -> None:
    alphabet = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") * 3 + "=="
    send(nft, nft.functions.setDefaultAnimationPage(alphabet))
    token_id = mint(nft)
    raw, meta = metadata(nft, token_id)
    body, _, _fragment = meta["animation_url"].removeprefix(DATA_PREFIX).partition("#")
    assert body == alphabet
    assert raw == json.dumps(meta, separators=(",", ":")).encode().replace(b"&", b"\\u0026")


def test_a_mints_own_page_that_is_not_base64_is_still_escaped(nft: Contract) -> None:
    """The 7-argument mint is unchanged: its page is not checked, tokenURI escapes it."""
    hostile = '"}],"x":"<\\/script>\n\x00\xff é'
    token_id = mint(nft, hostile)
    raw, meta = metadata(nft, token_id)
    assert meta["animation_url"] == DATA_PREFIX + hostile
    assert b"<" not in raw and all(b >= 0x20 for b in raw)


def _chunks(text: str, size: int) -> list[str]:
    return [text[at:at + size] for at in range(0, len(text), size)]


def test_a_page_stored_in_parts_is_served_whole(nft: Contract) -> None:
    html = bytes(range(256)) * 12  # 3 KiB, every byte value
    page = base64.b64encode(html).decode()
    parts = _chunks(page, 1024)
    assert len(parts) == 4
    receipts = [send(nft, nft.functions.setDefaultAnimationPage(parts[0]))]
    receipts += [send(nft, nft.functions.appendDefaultAnimationPage(p)) for p in parts[1:]]
    for count, receipt in enumerate(receipts, start=1):
        (event,) = nft.events.DefaultAnimationPageUpdated().process_receipt(
            receipt, errors=DISCARD)
        so_far = "".join(parts[:count])  # each event names the whole page so far
        assert event["args"]["pageHash"] == Web3.keccak(text=so_far)
        assert event["args"]["length"] == len(so_far)
    assert nft.functions.defaultAnimationPage().call() == page
    assert nft.functions.defaultAnimationPageChunks().call() == 4
    token_id = mint(nft)
    body, fields = split_url(metadata(nft, token_id)[1]["animation_url"])
    assert body == html and fields["token"] == [str(token_id)]
    # A shorter page replaces it entirely: the stale parts are not served.
    send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    assert nft.functions.defaultAnimationPageChunks().call() == 1
    assert split_url(metadata(nft, token_id)[1]["animation_url"])[0] == PAGE_HTML
    send(nft, nft.functions.appendDefaultAnimationPage(parts[1]))
    assert nft.functions.defaultAnimationPage().call() == PAGE + parts[1]
    send(nft, nft.functions.setDefaultAnimationPage(""))
    assert nft.functions.defaultAnimationPageChunks().call() == 0
    assert "animation_url" not in metadata(nft, token_id)[1]


def test_appending_is_for_the_owner_and_needs_a_non_empty_part(nft: Contract) -> None:
    send(nft, nft.functions.setDefaultAnimationPage(PAGE))
    with pytest.raises(ContractCustomError) as info:
        nft.functions.appendDefaultAnimationPage("QUJD").call({"from": ALICE.address})
    _custom_error(info, "OwnableUnauthorizedAccount(address)")
    with pytest.raises(ContractCustomError) as info:
        nft.functions.appendDefaultAnimationPage("").call({"from": OWNER.address})
    assert _custom_error(info, "EmptyPageChunk()") == ""
    receipt = send(nft, nft.functions.appendDefaultAnimationPage("QUJD"))
    assert nft.events.BatchMetadataUpdate().process_receipt(receipt, errors=DISCARD) == ()
    mint(nft)
    receipt = send(nft, nft.functions.appendDefaultAnimationPage("RUZH"))
    (batch,) = nft.events.BatchMetadataUpdate().process_receipt(receipt, errors=DISCARD)
    assert (batch["args"]["_fromTokenId"], batch["args"]["_toTokenId"]) == (0, 0)
    assert nft.functions.defaultAnimationPage().call() == PAGE + "QUJDRUZH"


def _token_uri_gas(nft: Contract, token_id: int) -> int:
    call = nft.functions.tokenURI(token_id)._encode_transaction_data()
    return int(nft.w3.eth.estimate_gas({"to": nft.address, "data": call}))


def test_a_mints_own_base64_page_is_copied_unescaped_and_updates_keep_track(
        nft: Contract) -> None:
    """The mint accepts any page as before; one that is base64 is noted at mint time (and at
    each updateAnimationUrl) and copied without escaping, an escaped copy costing ~950 gas a
    byte more per tokenURI call. The metadata is the same either way."""
    own = base64.b64encode(bytes(range(256)) * 12).decode()  # 4,096 base64 characters
    plain, marked = mint(nft, own), mint(nft, own + "!")
    assert metadata(nft, plain)[1]["animation_url"] == DATA_PREFIX + own
    assert metadata(nft, marked)[1]["animation_url"] == DATA_PREFIX + own + "!"
    assert _token_uri_gas(nft, plain) * 2 < _token_uri_gas(nft, marked)
    hostile = own + '"}<'
    send(nft, nft.functions.updateAnimationUrl(plain, hostile))  # no longer base64: escaped
    raw, meta = metadata(nft, plain)
    assert meta["animation_url"] == DATA_PREFIX + hostile and b"<" not in raw
    send(nft, nft.functions.updateAnimationUrl(marked, own))  # now base64: copied
    assert metadata(nft, marked)[1]["animation_url"] == DATA_PREFIX + own
    assert _token_uri_gas(nft, marked) * 2 < _token_uri_gas(nft, plain)
