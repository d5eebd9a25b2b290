"""Debian's headless Chromium under Selenium, with an EIP-1193 wallet shim that forwards to anvil.

The shim is added with CDP ``Page.addScriptToEvaluateOnNewDocument``, so it exists before any
page script runs, like an extension's provider. anvil's dev accounts are unlocked, so
``eth_sendTransaction`` and ``personal_sign`` go to anvil unchanged. A test steers the shim
through ``window.__wallet`` (chainId, rejectSign) after a page loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).with_name(".screenshots")
PHONE_WIDTH = 375

_SHIM = """
(() => {
  const RPC = %(rpc)s, ACCOUNT = %(account)s;
  const wallet = window.__wallet = { chainId: %(chain)d, rejectSign: false, methods: [] };
  async function forward(method, params) {
    const response = await fetch(RPC, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
    const body = await response.json();
    if (body.error) {
      const error = new Error(body.error.message);
      error.code = body.error.code;
      error.data = body.error.data;
      throw error;
    }
    return body.result;
  }
  window.ethereum = {
    isBlockhostTestWallet: true,
    async request({ method, params = [] }) {
      wallet.methods.push(method);
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [ACCOUNT];
      if (method === "eth_chainId") return "0x" + wallet.chainId.toString(16);
      if (method === "wallet_switchEthereumChain") {
        wallet.chainId = parseInt(params[0].chainId, 16);
        return null;
      }
      if (method === "personal_sign" && wallet.rejectSign) {
        throw Object.assign(new Error("User rejected the request."), { code: 4001 });
      }
      return forward(method, params);
    },
  };
})();
"""


def require_browser() -> None:
    """Skip without Chromium + chromedriver (or selenium); under CI=true that is a failure."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401 - only probing that it is installed
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = (f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
                   "and pip install -e '.[test]'")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def browser(*, rpc_url: str | None, account: str | None, chain_id: int = 31337,
            width: int = PHONE_WIDTH) -> Iterator[Any]:
    """A fresh headless Chromium; with ``rpc_url`` and ``account`` a wallet shim is injected."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="blockhost-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={width},1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        _phone(driver, width, 1400)
        if rpc_url is not None and account is not None:
            # The pages' CSP allows connections to their own origin only; a real wallet talks
            # to its RPC outside the page, the shim from inside it.
            driver.execute_cdp_cmd("Page.setBypassCSP", {"enabled": True})
            source = _SHIM % {"rpc": json.dumps(rpc_url), "account": json.dumps(account),
                              "chain": chain_id}
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page (at its full height) as tests/web/.screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = driver.execute_script(
        "return Math.ceil(document.body.getBoundingClientRect().bottom) + 16")
    width = driver.execute_script("return window.innerWidth")
    _phone(driver, width, max(int(height), 600))
    driver.save_screenshot(str(path))
    _phone(driver, width, 1400)
    return path


def _phone(driver: Any, width: int, height: int) -> None:
    """Emulate a viewport of ``width`` CSS pixels (headless windows have a larger minimum)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})


def wait_until(what: str, check: Callable[[], Any], *, timeout: float = 30.0,
               tick: Callable[[], None] | None = None) -> Any:
    """Poll ``check`` (calling ``tick`` between polls) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if tick is not None:
            tick()
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def error_text(driver: Any) -> str:
    """The page's error sentence ('' while hidden)."""
    return str(driver.execute_script(
        "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent;"))


def fits_phone(driver: Any) -> bool:
    """Nothing wider than the viewport (no sideways scrolling at phone width)."""
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"))


def wait_ok(driver: Any, what: str, check: Callable[[], Any], *, timeout: float = 30.0,
            tick: Callable[[], None] | None = None) -> Any:
    """:func:`wait_until`, failing at once with the page's sentence if it shows an error."""
    def probe() -> Any:
        shown = error_text(driver)
        if shown:
            raise AssertionError(f"the page showed an error while waiting for {what}: {shown}")
        return check()
    return wait_until(what, probe, timeout=timeout, tick=tick)


def requested_origins(driver: Any) -> set[str]:
    """``scheme://host:port`` of every network request the browser sent since the last call."""
    from urllib.parse import urlsplit

    origins = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlsplit(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                origins.add(f"{url.scheme}://{url.netloc}")
    return origins
