"""The whole lifecycle at scale: the real daemon, anvil and the PVE simulator.

Fifty subscriptions bought at random, extended before expiry, while suspended and after
destroy, some cancelled, with chain-time jumps in between. At the end every subscription's
VM, NFT and inventory match the pure decision function, with no orphan VM, no leaked id or
address and exactly one NFT per subscription. The second test runs the same story while the
listener is SIGKILLed at random moments and restarted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listener.chain.contracts import load_artifact, send_transaction
from listener.devkit.devenv import DevEnv, sim_vm, start_dev_env
from listener.reconcile.decide import Desired, Facts, desired_state
from listener.userkit.subscriber import credentials, extend, subscribe

pytestmark = pytest.mark.slow

DAY = 86400
GRACE_DAYS = 1
USERS = (1, 2, 3)
EXPECTED_STATE = {Desired.RUNNING: "active", Desired.STOPPED: "suspended",
                  Desired.DESTROYED: "destroyed"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DevEnv]:
    environment = start_dev_env(tmp_path / "env", confirmations=2, grace_days=GRACE_DAYS,
                                clone_seconds=0.05)
    try:
        yield environment
    finally:
        environment.close()


def contract(env: DevEnv, name: str, key: str) -> Any:
    return env.w3.eth.contract(address=env.deployment[key], abi=load_artifact(name)["abi"])


class Story:
    """Drives the chain side of the scenario and knows what to expect."""

    def __init__(self, env: DevEnv, rng: random.Random, chaos: bool) -> None:
        self.env, self.rng, self.chaos = env, rng, chaos
        self.subs = contract(env, "BlockhostSubscriptions", "subscriptions")
        self.owner_of: dict[int, int] = {}
        self.listener = env.start_listener()
        self.kills = 0

    def maybe_kill(self) -> None:
        """In the chaos run: SIGKILL the daemon now and then, and start it again."""
        if self.chaos and self.rng.random() < 0.5:
            self.env.kill_listener(self.listener)
            self.kills += 1
            self.listener = self.env.start_listener()

    def buy(self, count: int) -> None:
        for _ in range(count):
            user = self.rng.choice(USERS)
            result = subscribe(self.env.w3, self.env.user(user),
                               subscription_contract=self.env.deployment["subscriptions"],
                               server_public_key=self.env.server_public_key, plan_id=1,
                               days=self.rng.randint(1, 4), legacy=self.rng.random() < 0.2)
            self.owner_of[result.subscription_id] = user
            if self.rng.random() < 0.1:
                self.maybe_kill()

    def extend_some(self, ids: list[int], fraction: float) -> list[int]:
        chosen = [i for i in ids if self.rng.random() < fraction and not self.cancelled(i)]
        for sub_id in chosen:
            extend(self.env.w3, self.env.user(self.owner_of[sub_id]),
                   subscription_contract=self.env.deployment["subscriptions"],
                   subscription_id=sub_id, days=self.rng.randint(2, 6))
        return chosen

    def cancel_some(self, ids: list[int], count: int) -> None:
        for sub_id in self.rng.sample(ids, count):
            if not self.cancelled(sub_id):
                self.as_operator(self.subs.functions.cancelSubscription(sub_id))

    def as_operator(self, call: Any) -> None:
        """The contract owner is also the daemon's signer: our nonce may race its mints, as
        an operator's would; a refused nonce is simply retried."""
        for _ in range(10):
            try:
                send_transaction(self.env.w3, self.env.user(0), call)
                return
            except Exception as exc:  # only nonce races are retried (others are raised again)
                text = str(exc).lower()
                if not any(m in text for m in ("nonce", "underpriced", "already known")):
                    raise
                time.sleep(0.2)
        raise AssertionError("the operator's transaction kept losing the nonce race")

    def cancelled(self, sub_id: int) -> bool:
        return bool(self.subs.functions.getSubscription(sub_id).call()[4])

    def jump(self, days: float) -> None:
        self.env.advance_time(int(days * DAY))
        self.maybe_kill()

    def expected(self, chain_time: int) -> dict[int, Desired]:
        out = {}
        for sub_id in self.owner_of:
            _plan, _who, expires_at, _active, cancelled = (
                self.subs.functions.getSubscription(sub_id).call())
            cancelled_at = self.cancel_times.get(sub_id) if cancelled else None
            out[sub_id] = desired_state(Facts(expires_at, cancelled, cancelled_at), chain_time,
                                        GRACE_DAYS * DAY)
        return out

    @property
    def cancel_times(self) -> dict[int, int]:
        rows = self.env.db_rows("SELECT id, cancelled_at FROM subscriptions WHERE cancelled = 1")
        return {int(r[0]): int(r[1]) for r in rows}

    def settle(self, timeout: float = 240) -> dict[str, Any]:
        """Wait until the daemon's view matches the decision function for every subscription."""
        head_time = self.env.w3.eth.get_block("latest").timestamp

        def converged() -> dict[str, Any] | None:
            status = self.env.status()
            chain_time = status["chain"]["chain_time"]
            if chain_time is None or chain_time < head_time:
                return None  # the listener has not confirmed the newest facts yet
            expected = self.expected(chain_time)
            states = {s["id"]: s["state"] for s in status["subscriptions"]}
            if set(states) != set(expected):
                return None
            if any(states[i] != EXPECTED_STATE[d] for i, d in expected.items()):
                return None
            return status

        return self.env.wait_for("every subscription to match its desired state", converged,
                                 timeout=timeout, listener=self.listener)


def check_world(env: DevEnv, story: Story, status: dict[str, Any]) -> None:
    """VMs, NFTs and the inventory all agree with the decisions; nothing leaked or doubled."""
    nft = contract(env, "AccessCredentialNFT", "nft")
    subs = {s["id"]: s for s in status["subscriptions"]}
    expected = story.expected(status["chain"]["chain_time"])
    live_vmids: set[int] = set()
    for sub_id, desired in expected.items():
        row = subs[sub_id]
        token = row["nft"]["token_id"]
        owner = env.user(story.owner_of[sub_id]).address
        assert nft.functions.ownerOf(token).call() == owner
        expires_on_chain = story.subs.functions.getSubscription(sub_id).call()[2]
        user_encrypted, _secret, _issued, nft_expires = nft.functions.getAccessData(token).call()
        if desired is Desired.DESTROYED:
            assert row["vm"] is None
            continue
        vm = sim_vm(env.sim, row["vm"]["vmid"])
        assert vm is not None, f"subscription {sub_id}: VM {row['vm']['vmid']} missing"
        assert vm["pool"] == "blockhost" and f"sub={sub_id}" in vm["description"]
        live_vmids.add(vm["vmid"])
        if desired is Desired.RUNNING:
            assert vm["status"] == "running"
            assert nft_expires == expires_on_chain, f"subscription {sub_id}: NFT expiry stale"
            details = credentials(env.w3, env.user(story.owner_of[sub_id]),
                                  nft_contract=env.deployment["nft"], token_id=token)
            assert details.hostname == row["vm"]["ip"], f"subscription {sub_id}: stale details"
            assert user_encrypted
        else:
            assert vm["status"] == "stopped"
    # Exactly one NFT per subscription, and no VM that is not a live subscription's.
    assert nft.functions.totalSupply().call() == len(expected)
    assert len({subs[i]["nft"]["token_id"] for i in expected}) == len(expected)
    managed = {vm["vmid"] for vm in env.sim.state()["vms"] if vm.get("pool") == "blockhost"}
    assert managed == live_vmids
    leases = env.db_rows("SELECT kind, value FROM leases")
    vmid_leases = sorted(int(v) for k, v in leases if k == "vmid")
    assert vmid_leases == sorted(live_vmids)
    assert len([1 for k, _ in leases if k == "ipv4"]) == len(live_vmids)
    assert status["dead_letters"] == 0


def run_story(env: DevEnv, seed: int, chaos: bool) -> None:
    rng = random.Random(seed)
    for user in USERS:
        env.fund(env.user(user), 100_000 * 10**6)
    story = Story(env, rng, chaos)
    story.buy(50)
    story.settle()
    ids = sorted(story.owner_of)
    story.extend_some(ids, 0.3)                 # extended before expiry
    story.cancel_some(ids, 4)
    story.jump(2.5)                             # 1-2 day subscriptions expire
    status = story.settle()
    suspended = [s["id"] for s in status["subscriptions"] if s["state"] == "suspended"]
    story.extend_some(suspended, 0.5)           # extended while suspended
    story.jump(3)                               # past grace for many
    status = story.settle()
    destroyed = [s["id"] for s in status["subscriptions"] if s["state"] == "destroyed"]
    story.extend_some(destroyed, 0.5)           # extended after destroy: a fresh VM
    story.buy(5)
    story.maybe_kill()
    check_world(env, story, story.settle())
    if chaos:
        assert story.kills > 0


def test_fifty_subscriptions_through_every_transition(env: DevEnv) -> None:
    run_story(env, seed=7, chaos=False)


def test_the_same_story_with_the_listener_killed_at_random(env: DevEnv) -> None:
    run_story(env, seed=11, chaos=True)

