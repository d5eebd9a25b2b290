"""The NFT's default page decrypts where wallets render it: the very ``data:`` URL that
tokenURI's ``animation_url`` holds, in an iframe of a page on localhost (as marketplaces embed
it), in Debian's Chromium with the EIP-1193 shim injected into the frame. The frame is no secure
context, so it has no WebCrypto: the page's own AES-GCM does the work.

Why a frame and not a top-level navigation: a top-level ``data:`` document counts as a public,
non-secure client, and Chromium's Private Network Access blocks the *shim's* fetch to anvil on
loopback (a real wallet makes its RPC calls outside the page, where this does not apply).
"""

from __future__ import annotations

import base64
import html
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address
from selenium.webdriver.common.by import By
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from listener.chain.contracts import load_abi, send_transaction
from listener.crypto.credentials import ConnectionDetails, encrypt_connection_details
from listener.crypto.user_secret import make_public_secret, sign_public_secret
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.ops.contracts import deploy_contracts, packaged_page, page_chunks
from tests.web.browser import (
    browser,
    click,
    fits_phone,
    requested_origins,
    require_browser,
    screenshot,
    text_of,
    wait_until,
)

OWNER, HOLDER, STRANGER = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:3])
DETAILS = ConnectionDetails(hostname="10.20.30.40", port=2222, username="alice")


def _deploy_with_the_packaged_page(anvil: Anvil, tmp_path: Path) -> Contract:
    page = packaged_page()
    assert page is not None, "blockhost_data/web/nft-credentials.html is missing: run make web"
    key = tmp_path / "deployer.key"
    key.write_text(bytes(OWNER.key).hex())
    key.chmod(0o600)
    doc = deploy_contracts(anvil.url, key, stablecoin=None, page=page)
    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    nft = w3.eth.contract(address=to_checksum_address(doc["nft"]),
                          abi=load_abi("AccessCredentialNFT"))
    # The real page is larger than one part: it went on chain in several transactions.
    stored = nft.functions.defaultAnimationPage().call()
    assert stored == base64.b64encode(page.read_bytes()).decode()
    assert nft.functions.defaultAnimationPageChunks().call() == len(page_chunks(stored)) > 1
    return nft


def _mint_for(nft: Contract, holder: Any) -> int:
    """A credential sealed the daemon's way, for ``holder``'s signature, with no page of its own."""
    secret = make_public_secret(holder.address)
    blob = encrypt_connection_details(sign_public_secret(bytes(holder.key), secret), DETAILS)
    receipt = send_transaction(nft.w3, OWNER, nft.functions.mint(
        holder.address, blob, secret, "VM", "", "", 0), poll_latency=0.01)
    (minted,) = nft.events.CredentialMinted().process_receipt(receipt, errors=DISCARD)
    return int(minted["args"]["tokenId"])


def _animation_url(nft: Contract, token_id: int) -> str:
    uri = nft.functions.tokenURI(token_id).call()
    meta = json.loads(base64.b64decode(uri.removeprefix("data:application/json;base64,")))
    url = meta["animation_url"]
    assert isinstance(url, str) and url.startswith("data:text/html;base64,")
    return url


@contextmanager
def _framing_page(animation_url: str) -> Iterator[str]:
    """URL of a localhost page whose only content is an iframe of ``animation_url``."""
    body = (f'<!doctype html><meta charset="utf-8"><title>marketplace</title>'
            f'<iframe id="nft" title="NFT" style="width:100%;height:480px;border:0" '
            f'src="{html.escape(animation_url, quote=True)}"></iframe>').encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.end_headers()
            if self.path == "/":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            """Quiet: the test reads the page, not the access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def _nft_frame(animation_url: str, account: str, anvil: Anvil) -> Iterator[Any]:
    """A browser focused on the iframe holding ``animation_url``, its wallet ``account``."""
    with _framing_page(animation_url) as parent, \
            browser(rpc_url=anvil.url, account=account) as driver:
        driver.get(parent)
        frame = driver.find_element(By.ID, "nft")
        assert frame.get_attribute("src") == animation_url
        driver.switch_to.frame(frame)
        wait_until("the NFT page in the frame", lambda: driver.find_elements(By.ID, "go"))
        yield driver


def test_the_page_decrypts_as_the_data_url_from_token_uri(anvil: Anvil, tmp_path: Path) -> None:
    require_browser()
    nft = _deploy_with_the_packaged_page(anvil, tmp_path)
    token_id = _mint_for(nft, HOLDER)
    url = _animation_url(nft, token_id)
    with _nft_frame(url, HOLDER.address, anvil) as driver:
        # what wallets give the page: an opaque origin, not a secure context, no crypto.subtle;
        # the wallet's provider is there
        assert driver.execute_script(
            "return [location.protocol, window.isSecureContext, !!(window.crypto && "
            "crypto.subtle), !!window.ethereum]") == ["data:", False, False, True]
        click(driver, "go")
        wait_until("the page to decrypt", lambda: text_of(driver, "out") or text_of(driver, "msg"))
        assert text_of(driver, "msg") == (f"Host {DETAILS.hostname}, port {DETAILS.port}, "
                                          f"user {DETAILS.username}")
        assert text_of(driver, "out") == (f"ssh -p {DETAILS.port} "
                                          f"{DETAILS.username}@{DETAILS.hostname}")
        assert "personal_sign" in driver.execute_script("return window.__wallet.methods")
        assert fits_phone(driver)
        driver.switch_to.default_content()
        screenshot(driver, "nft-credentials-data-url")
        # nothing left the browser but the framing page's load and the wallet's RPC calls
        assert requested_origins(driver) - {_origin(driver.current_url)} == {
            anvil.url.rstrip("/")}


def _origin(url: str) -> str:
    return url.rstrip("/")


def test_the_data_url_page_refuses_a_wallet_that_does_not_hold_the_token(
        anvil: Anvil, tmp_path: Path) -> None:
    require_browser()
    nft = _deploy_with_the_packaged_page(anvil, tmp_path)
    token_id = _mint_for(nft, HOLDER)
    with _nft_frame(_animation_url(nft, token_id), STRANGER.address, anvil) as driver:
        click(driver, "go")
        wait_until("the page's message", lambda: text_of(driver, "msg"))
        assert text_of(driver, "msg") == (f"NFT #{token_id} is not held by "
                                          f"{STRANGER.address}; connect the wallet that "
                                          "holds it.")
        assert text_of(driver, "out") == ""
        assert "personal_sign" not in driver.execute_script("return window.__wallet.methods")
        driver.switch_to.default_content()
        screenshot(driver, "nft-credentials-data-url-not-yours")
