"""A late start, as a new operator makes one: subscriptions were bought while no listener ran,
chain time moved on, then the real daemon starts from block 0 with small getLogs ranges.

Effects come from the present: nothing is minted or cloned for what is already over (a mint is
a permanent, paid chain write), the paid subscription is served, and `status` names the
never-served ones with what they paid for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from listener.devkit.devenv import DevEnv, start_dev_env
from listener.userkit.subscriber import subscribe

DAY = 86_400
pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    dev = start_dev_env(tmp_path / "dev", confirmations=2, grace_days=1, clone_seconds=0.2)
    try:
        config = yaml.safe_load(dev.config_path.read_text())
        config["chain"]["max_block_range"] = 25  # many catch-up steps, as on a real provider
        dev.config_path.write_text(yaml.safe_dump(config))
        yield dev
    finally:
        dev.close()


def buy(env: DevEnv, user_index: int, days: int) -> int:
    user = env.user(user_index)
    env.fund(user)
    return subscribe(env.w3, user, subscription_contract=env.deployment["subscriptions"],
                     server_public_key=env.server_public_key, plan_id=1,
                     days=days).subscription_id


def nft_supply(env: DevEnv) -> int:
    from listener.chain.contracts import load_abi

    nft = env.w3.eth.contract(address=env.deployment["nft"],
                              abi=load_abi("AccessCredentialNFT"))
    return int(nft.functions.totalSupply().call())


def test_a_late_start_serves_only_what_is_still_paid(env: DevEnv) -> None:
    past_grace = buy(env, 1, days=1)
    env.mine(60)
    env.advance_time(2 * DAY + 600)           # #1: expired and past its 1-day grace
    in_grace = buy(env, 2, days=1)
    env.mine(60)
    env.advance_time(DAY + 3_600)             # #2: expired, still within grace
    paid = buy(env, 3, days=5)                # #3: paid for 5 more days
    env.mine(80)

    listener = env.start_listener()

    def served() -> dict[str, Any] | None:
        row = env.subscription(paid)
        return row if row and row["state"] == "active" else None

    row = env.wait_for("the paid subscription to be served", served, timeout=120,
                       listener=listener)
    assert row["nft"]["token_id"] is not None and row["vm"]["power"] == "running"

    # One VM was ever reserved and one NFT ever minted: the paid one's.
    assert env.db_rows("SELECT subscription_id FROM vms") == [(paid,)]
    assert [r[0] for r in env.db_rows("SELECT idempotency_key FROM tx_requests")] == \
        [f"mint:sub:{paid}"]
    assert nft_supply(env) == 1
    pool = [vm for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"]
    assert len(pool) == 1

    def dated() -> dict[int, dict[str, Any]] | None:
        subs = {sub["id"]: sub for sub in env.status()["subscriptions"]}
        return subs if all(subs[i]["never_served"] for i in (past_grace, in_grace)) else None

    status = env.wait_for("the never-served purchases to be dated", dated, timeout=30,
                          listener=listener)
    for sub_id in (past_grace, in_grace):
        assert status[sub_id]["vm"] is None and status[sub_id]["nft"] is None
        assert status[sub_id]["never_served"] is True
        assert status[sub_id]["paid_unserved_seconds"] == DAY
    assert status[paid]["never_served"] is False
    assert status[paid]["paid_unserved_seconds"] is None
    assert env.status()["dead_letters"] == 0
