"""``blockhost demo``: the whole path on a local anvil chain and the PVE simulator.

Starts both on loopback, deploys the contracts, runs the real listener as a separate
process, buys a subscription as a user, and follows it through NFT mint, VM creation,
credential decryption, suspension after expiry and destruction after grace. Every process
it starts is stopped again, whatever happens.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from listener.config import load_config
from listener.devkit.devenv import DevEnv, sim_vm, start_dev_env
from listener.errors import UserError
from listener.ops.web_server import start_pages
from listener.userkit.subscriber import credentials, subscribe

DEMO_DAYS = 3
DEMO_GRACE_DAYS = 1
CONFIRMATIONS = 2


class Timeline:
    """Prints timed steps as the demo goes."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", flush=True)

    def detail(self, text: str) -> None:
        print(f"          {text}", flush=True)


def run_demo(workdir: Path | None = None) -> int:
    timeline = Timeline()
    base = workdir or Path(tempfile.mkdtemp(prefix="blockhost-demo-"))
    env = start_dev_env(base, confirmations=CONFIRMATIONS, grace_days=DEMO_GRACE_DAYS,
                        on_step=timeline.step)
    try:
        _story(env, timeline)
    finally:
        env.close()
    timeline.step("every process the demo started is stopped; demo finished")
    if workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _story(env: DevEnv, timeline: Timeline) -> None:
    user = env.user(1)
    env.fund(user)
    timeline.step(f"user {user.address} funded with 1000 mock USDC")

    listener = env.start_listener()
    timeline.step(f"listener started (pid {listener.pid}, {CONFIRMATIONS} confirmations)")
    pages = start_pages(load_config(env.config_path, environ={}, broker_allocation=None),
                        "127.0.0.1:0")
    env.stack.callback(pages.close)
    timeline.step(f"signup page: {pages.url}signup.html (a wallet on chain 31337 with RPC "
                  f"{env.anvil.url}; served until the demo ends)")

    result = subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                       server_public_key=env.server_public_key, plan_id=1, days=DEMO_DAYS)
    sub_id = result.subscription_id
    timeline.step(f"user bought subscription #{sub_id} for {DEMO_DAYS} days (paid "
                  f"{result.paid_amount / 10**6:.2f} USDC); userEncrypted = ECIES(server key, "
                  "signature + publicSecret)")

    def in_state(state: str) -> Any:
        def check() -> dict[str, Any] | None:
            row = env.subscription(sub_id)
            return row if row and row["state"] == state else None
        return check

    row = env.wait_for("the VM to run", in_state("active"), timeout=90, listener=listener)
    vm = row["vm"]
    timeline.step(f"NFT #{row['nft']['token_id']} minted to the subscriber (token id read from "
                  "the mint receipt)")
    timeline.step(f"VM {vm['name']} running: vmid {vm['vmid']} on {vm['node']}, ip {vm['ip']}")
    found = sim_vm(env.sim, vm["vmid"])
    if found is not None:
        config = found.get("config", {})
        description = str(config.get("description", "")).splitlines()
        timeline.detail(f"pool {found.get('pool')}; tags {config.get('tags')}; "
                        f"marker {description[0] if description else ''}")
        timeline.detail(f"smbios1 {config.get('smbios1')}; cicustom {config.get('cicustom')}")
    snippet = env.workdir / "snippets" / "snippets" / f"{vm['name']}-user.yaml"
    if snippet.exists():
        gecos = [line.strip() for line in snippet.read_text().splitlines() if "gecos" in line]
        timeline.detail(f"cloud-init {snippet.name}: {gecos[0] if gecos else '(no gecos)'}")

    details = credentials(env.w3, user, nft_contract=env.deployment["nft"],
                          token_id=row["nft"]["token_id"])
    timeline.step("user re-signed the NFT's public secret and decrypted the credentials: "
                  + json.dumps({"hostname": details.hostname, "port": details.port,
                                "username": details.username}))

    env.advance_time(DEMO_DAYS * 86400 + 60)
    timeline.step(f"chain time moved {DEMO_DAYS} days ahead: the subscription has expired")
    env.wait_for("suspension", in_state("suspended"), timeout=60, listener=listener)
    found = sim_vm(env.sim, vm["vmid"])
    timeline.step(f"VM {vm['name']} suspended (simulator: "
                  f"{found.get('status') if found else 'missing'}; disk kept)")

    env.advance_time(DEMO_GRACE_DAYS * 86400 + 60)
    timeline.step(f"chain time moved past the {DEMO_GRACE_DAYS}-day grace period")
    env.wait_for("destruction", in_state("destroyed"), timeout=60, listener=listener)
    if sim_vm(env.sim, vm["vmid"]) is not None:
        raise UserError("demo: the VM is still on the simulator after destroy")
    timeline.step(f"VM {vm['name']} destroyed: vmid {vm['vmid']} gone from the simulator, "
                  "IP and VMID released")
