"""Each thing a subscriber can get wrong shows its own sentence on the page (and nothing is
paid): no wallet, wrong chain (then switching), a rejected signature, no balance, a
transaction that would revert, an NFT that is not theirs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from listener.chain.contracts import load_artifact, send_transaction
from listener.devkit.devenv import DevEnv
from listener.ops.web import pages_dir
from listener.userkit.subscriber import subscribe
from tests.web.browser import (
    browser,
    click,
    error_text,
    fits_phone,
    require_browser,
    screenshot,
    text_of,
    wait_ok,
    wait_until,
)
from tests.web.pages import served


@pytest.fixture
def base(dev_env: DevEnv) -> Iterator[str]:
    require_browser()
    with served(dev_env) as url:
        yield url


def _error_after(driver: object, button: str) -> str:
    """Click, wait for the error sentence; it must fit a phone's width."""
    click(driver, button)
    message = str(wait_until(f"an error after {button}", lambda: error_text(driver)))
    assert fits_phone(driver), f"the page is wider than a phone with: {message}"
    return message


def _balance(env: DevEnv, address: str) -> int:
    coin = env.w3.eth.contract(address=env.deployment["stablecoin"],
                               abi=load_artifact("MockStablecoin")["abi"])
    return int(coin.functions.balanceOf(address).call())


def test_no_wallet_by_keyboard_and_every_control_labelled(base: str) -> None:
    with browser(rpc_url=None, account=None) as driver:
        for page in ("renew.html", "credentials.html", "nft-credentials.html", "signup.html"):
            driver.get(base + page)
            unlabelled = driver.execute_script(
                "return [...document.querySelectorAll('input, select, textarea, output')]"
                ".filter((e) => e.labels.length === 0).map((e) => e.id)")
            assert unlabelled == [], (page, unlabelled)
        # Tab to the first button and press Enter: no mouse needed
        for _ in range(8):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            if driver.switch_to.active_element.get_attribute("id") == "connect":
                break
        assert driver.switch_to.active_element.get_attribute("id") == "connect"
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        message = wait_until("the no-wallet sentence", lambda: error_text(driver))
        assert "No wallet found" in message and fits_phone(driver)
        screenshot(driver, "error-no-wallet")


def test_wrong_chain_then_switch(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(1)
    with browser(rpc_url=dev_env.anvil.url, account=user.address, chain_id=1) as driver:
        driver.get(base + "signup.html")
        message = _error_after(driver, "connect")
        assert "on chain 1" in message and "chain 31337" in message
        assert driver.find_element(By.ID, "switch").is_displayed()
        screenshot(driver, "error-wrong-chain")
        click(driver, "switch")
        wait_ok(driver, "the plans after switching",
                lambda: driver.find_element(By.ID, "plan").is_displayed())
        assert driver.execute_script("return window.__wallet.chainId") == 31337


def test_rejected_signature_sends_nothing(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(1)
    dev_env.fund(user)
    before = _balance(dev_env, user.address)
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "signup.html")
        click(driver, "connect")
        wait_ok(driver, "the plans", lambda: driver.find_element(By.ID, "plan").is_displayed())
        driver.execute_script("window.__wallet.rejectSign = true")
        assert "You rejected the signature request" in _error_after(driver, "buy")
        screenshot(driver, "error-rejected-signature")
        methods = driver.execute_script("return window.__wallet.methods")
        assert "eth_sendTransaction" not in methods
    assert _balance(dev_env, user.address) == before


def test_no_balance_is_refused_before_signing(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(2)  # never funded with the stablecoin
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "signup.html")
        click(driver, "connect")
        wait_ok(driver, "the plans", lambda: driver.find_element(By.ID, "plan").is_displayed())
        message = _error_after(driver, "buy")
        assert "Insufficient balance" in message and "holds 0.0 mUSD" in message
        screenshot(driver, "error-no-balance")
        methods = driver.execute_script("return window.__wallet.methods")
        assert "personal_sign" not in methods and "eth_sendTransaction" not in methods


def test_days_out_of_range_show_why_and_no_total(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(2)
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "signup.html")
        click(driver, "connect")
        wait_ok(driver, "the plans", lambda: driver.find_element(By.ID, "plan").is_displayed())
        wait_until("a total", lambda: text_of(driver, "total") not in ("", "–"))
        days = driver.find_element(By.ID, "days")
        days.clear()
        days.send_keys("0")
        message = wait_until("the days sentence", lambda: error_text(driver))
        assert message == "Days must be a whole number from 1 to 36500."
        assert text_of(driver, "total") == "–"
        screenshot(driver, "error-days")
        days.clear()
        days.send_keys("3")
        wait_until("the error to clear", lambda: not error_text(driver))
        assert text_of(driver, "total") != "–"


def test_purchase_that_would_revert(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(1)
    dev_env.fund(user)
    subs = dev_env.w3.eth.contract(address=dev_env.deployment["subscriptions"],
                                   abi=load_artifact("BlockhostSubscriptions")["abi"])
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "signup.html")
        click(driver, "connect")
        wait_ok(driver, "the plans", lambda: driver.find_element(By.ID, "plan").is_displayed())
        name, price, _active = subs.functions.getPlan(1).call()
        # the operator retires the plan while the page still offers it
        send_transaction(dev_env.w3, dev_env.user(0),
                         subs.functions.updatePlan(1, name, price, False))
        message = _error_after(driver, "buy")
        # the reason, read back by replaying the mined transaction at its block
        assert "was reverted on chain: plan 1 is no longer offered" in message
        assert "(error PlanNotActive)" in message and "Nothing was charged" in message
        assert "eth_getTransactionByHash" in driver.execute_script(
            "return window.__wallet.methods")
        assert "Payment of 30.0 mUSD not made." in driver.find_element(By.ID, "steps").text
        screenshot(driver, "error-reverted")
    assert subs.functions.getTotalSubscriptionCount().call() == 0


def test_renewal_of_a_cancelled_subscription(dev_env: DevEnv, base: str) -> None:
    user = dev_env.user(1)
    dev_env.fund(user)
    bought = subscribe(dev_env.w3, user, subscription_contract=dev_env.deployment["subscriptions"],
                       server_public_key=dev_env.server_public_key, plan_id=1, days=2)
    subs = dev_env.w3.eth.contract(address=dev_env.deployment["subscriptions"],
                                   abi=load_artifact("BlockhostSubscriptions")["abi"])
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "renew.html")
        click(driver, "connect")
        wait_ok(driver, "the subscriptions",
                lambda: driver.find_element(By.ID, "subscription").is_displayed())
        # the operator cancels it while the page still offers it
        send_transaction(dev_env.w3, dev_env.user(0),
                         subs.functions.cancelSubscription(bought.subscription_id))
        before = _balance(dev_env, user.address)
        expiry = subs.functions.getSubscription(bought.subscription_id).call()[2]
        message = _error_after(driver, "renew")
        assert (f"was reverted on chain: subscription {bought.subscription_id} was cancelled "
                "and cannot be renewed (error SubscriptionAlreadyCancelled)") in message
        assert "not made." in driver.find_element(By.ID, "steps").text
        screenshot(driver, "error-renew-reverted")
    assert _balance(dev_env, user.address) == before
    assert subs.functions.getSubscription(bought.subscription_id).call()[2] == expiry


def test_nft_that_is_not_yours(dev_env: DevEnv, base: str) -> None:
    nft = dev_env.w3.eth.contract(address=dev_env.deployment["nft"],
                                  abi=load_artifact("AccessCredentialNFT")["abi"])
    other = dev_env.user(3).address
    send_transaction(dev_env.w3, dev_env.user(0), nft.functions.mint(
        other, b"\x01" * 40, f"libpam-web3:{other}:abc", "", "", "", 0))
    user = dev_env.user(1)
    with browser(rpc_url=dev_env.anvil.url, account=user.address) as driver:
        driver.get(base + "credentials.html")
        assert "holds no access NFT" in _error_after(driver, "connect")
        # no list to pick from: the token id field is the fallback
        assert not driver.find_element(By.ID, "token").is_displayed()
        driver.find_element(By.ID, "token-id").send_keys("0")
        message = _error_after(driver, "reveal")
        assert "NFT #0 is not yours" in message and other in message
        screenshot(driver, "error-nft-not-yours")
        assert "personal_sign" not in driver.execute_script("return window.__wallet.methods")


def test_pages_know_every_contract_error() -> None:
    """A revert is explained only if the page can decode it: every custom error of the three
    contracts is in the pages that send transactions (and the credentials page)."""
    signatures = {
        f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for name in ("BlockhostSubscriptions", "AccessCredentialNFT", "MockStablecoin")
        for item in load_artifact(name)["abi"] if item["type"] == "error"
    }
    assert len(signatures) > 30
    for page in ("signup.html", "renew.html", "credentials.html"):
        text = (pages_dir() / page).read_text(encoding="utf-8")
        missing = sorted(s for s in signatures if f"error {s}" not in text)
        assert missing == [], (page, missing)
