"""The whole subscriber path in a real browser: sign up on the page, the real `blockhost
listen` provisions on the simulator, the page shows the VM running; the credentials pages
decrypt what the daemon sealed; a renewal from the page moves the expiry on chain."""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from listener.chain.contracts import load_artifact
from listener.cli.main import main
from listener.devkit.devenv import DevEnv, sim_vm
from listener.userkit.subscriber import credentials
from tests.web.browser import (
    browser,
    click,
    fits_phone,
    requested_origins,
    require_browser,
    screenshot,
    text_of,
    wait_ok,
    wait_until,
)
from tests.web.pages import env_config, served

DAYS = 5
MORE_DAYS = 3


def _utc(seconds: int, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(fmt)


def _connect(driver: Any, ready_id: str) -> None:
    click(driver, "connect")
    wait_ok(driver, "the page to load from the wallet",
            lambda: driver.find_element(By.ID, ready_id).is_displayed())


def test_signup_provision_credentials_renew(dev_env: DevEnv) -> None:
    require_browser()
    env = dev_env
    user = env.user(1)
    env.fund(user)
    listener = env.start_listener()
    subs = env.w3.eth.contract(address=env.deployment["subscriptions"],
                               abi=load_artifact("BlockhostSubscriptions")["abi"])
    nft = env.w3.eth.contract(address=env.deployment["nft"],
                              abi=load_artifact("AccessCredentialNFT")["abi"])
    with served(env) as base, browser(rpc_url=env.anvil.url, account=user.address) as driver:
        # -- sign up
        driver.get(base + "signup.html")
        screenshot(driver, "signup-start")
        _connect(driver, "plan")
        assert "per day" in Select(driver.find_element(By.ID, "plan")).first_selected_option.text
        days = driver.find_element(By.ID, "days")
        days.clear()
        days.send_keys(str(DAYS))
        expected = subs.functions.calculatePayment(1, DAYS, 1).call()
        wait_until("the total", lambda: text_of(driver, "total").startswith(
            f"{expected / 10**6:g}"))
        click(driver, "buy")
        sub_id = int(wait_ok(driver, "the purchase",
                             lambda: text_of(driver, "subscription-id").strip("–"), timeout=60))
        wait_ok(driver, "the page to show the VM running",
                lambda: "VM is running" in text_of(driver, "progress"),
                timeout=120, tick=lambda: env.mine())
        assert fits_phone(driver)
        screenshot(driver, "signup-done")
        row = env.subscription(sub_id)
        assert row is not None and row["state"] == "active"
        vm = sim_vm(env.sim, row["vm"]["vmid"])
        assert vm is not None and vm["status"] == "running"
        assert listener.poll() is None
        # what the page polled: state and power only, nothing about the subscriber or the VM
        status = requests.get(f"{base}status?subscription={sub_id}", timeout=10).json()
        assert status == {"subscription": sub_id, "state": "active", "vm_running": True}

        # -- credentials: the wallet's NFT picked from the list, decrypted in the page, equal
        # to the VM's and to Python's reading
        driver.get(base + "credentials.html")
        _connect(driver, "token")
        token_id = row["nft"]["token_id"]
        choice = Select(driver.find_element(By.ID, "token"))
        choice.select_by_value(str(token_id))
        expires = nft.functions.getAccessData(token_id).call()[3]
        assert choice.first_selected_option.text == (
            f"NFT #{token_id}, expires {_utc(expires, '%Y-%m-%d')} UTC")
        assert len(choice.options) == 1
        assert not driver.find_element(By.ID, "token-id").is_displayed()  # the fallback
        screenshot(driver, "credentials-pick")
        click(driver, "reveal")
        wait_ok(driver, "the decrypted details",
                lambda: driver.find_element(By.ID, "details").is_displayed())
        host, port, username = (text_of(driver, "host"), text_of(driver, "port"),
                                text_of(driver, "user"))
        assert host == row["vm"]["ip"] and username == env_config(env).vm.username
        python_view = credentials(env.w3, user, nft_contract=env.deployment["nft"],
                                  token_id=row["nft"]["token_id"])
        assert (host, int(port), username) == (python_view.hostname, python_view.port,
                                               python_view.username)
        assert text_of(driver, "ssh") == f"ssh -p {port} {username}@{host}"
        assert fits_phone(driver)
        screenshot(driver, "credentials-done")

        # -- the NFT's own small page, addressed as tokenURI's animation_url would be
        fragment = (f"#token={row['nft']['token_id']}&nft={env.deployment['nft']}"
                    f"&chain={env_config(env).chain.chain_id}")
        driver.get(base + "nft-credentials.html" + fragment)
        click(driver, "go")
        wait_until("the NFT page to decrypt", lambda: text_of(driver, "out"))
        assert text_of(driver, "out") == f"ssh -p {port} {username}@{host}"
        screenshot(driver, "nft-credentials-done")
        # as tokenURI's data: URL (no WebCrypto there), framed the way marketplaces show it:
        # tests/web/test_nft_page_data_url.py

        # -- renew
        before = subs.functions.getSubscription(sub_id).call()[2]
        driver.get(base + "renew.html")
        _connect(driver, "subscription")
        Select(driver.find_element(By.ID, "subscription")).select_by_value(str(sub_id))
        days = driver.find_element(By.ID, "days")
        days.clear()
        days.send_keys(str(MORE_DAYS))
        click(driver, "renew")
        shown = wait_ok(driver, "the new expiry",
                        lambda: text_of(driver, "new-expiry").strip("–"), timeout=60)
        after = subs.functions.getSubscription(sub_id).call()[2]
        assert after == before + MORE_DAYS * 86400
        assert shown == _utc(after)
        assert driver.find_element(By.ID, "new-expiry").get_attribute("datetime") == (
            _utc(after, "%Y-%m-%dT%H:%M:%S.000Z"))
        assert fits_phone(driver)
        screenshot(driver, "renew-done")
        # every request went to the page's own server or, through the wallet, to the RPC
        assert requested_origins(driver) == {base.rstrip("/"), env.anvil.url.rstrip("/")}


def test_exported_site_follows_the_chain(dev_env: DevEnv, tmp_path: Path) -> None:
    """`web export` behind a plain static server (no /status): the signup page waits for the
    new NFT on chain instead."""
    require_browser()
    env = dev_env
    user = env.user(2)
    env.fund(user)
    site = tmp_path / "site"
    assert main(["--config", str(env.config_path), "web", "export", "--out", str(site)]) == 0
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    listener = env.start_listener()
    try:
        with browser(rpc_url=env.anvil.url, account=user.address) as driver:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/signup.html")
            _connect(driver, "plan")
            click(driver, "buy")
            wait_ok(driver, "the NFT on chain",
                    lambda: "access NFT has arrived" in text_of(driver, "progress"),
                    timeout=120, tick=lambda: env.mine())
            screenshot(driver, "signup-exported-done")
            sub_id = int(text_of(driver, "subscription-id"))
        row = env.subscription(sub_id)
        assert row is not None and row["subscriber"] == user.address and row["nft"] is not None
        assert listener.poll() is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
