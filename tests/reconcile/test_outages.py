"""Outages, as they happen: Proxmox answers 503 for every call (a node reboot, a cluster that
lost quorum) for longer than any retry budget. Each reconcile pass here stands for one
backoff interval (at most 5 minutes apart in the daemon), so 20 passes are over an hour.

Temporary failures never dead-letter; the subscription shows as failing meanwhile; once
Proxmox is back everything converges, stops at expiry included. A dead letter (a permanent
failure) never keeps an expired tenant running either.
"""

from __future__ import annotations

from eth_account import Account
from web3 import Web3

from listener.chain.contracts import deploy_contract, load_abi, send_transaction
from listener.chain.events import decode_log
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.devkit.fault_proxy import ProxySettings, RpcProxy
from listener.reconcile.dead_letters import DeadLetters
from listener.reconcile.decide import Scope, SubscriptionState
from listener.reconcile.reconciler import Reconciler, retry_delay
from listener.writeback.fees import FeePolicy
from listener.writeback.nft import NftMinter
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager
from tests.support.reconcile_world import EXPIRES, GRACE_DAYS, World, created_log

PASSES = 20  # over an hour of backoff; the old budget dead-lettered after 10 (~14 minutes)


def outage(world: World) -> None:
    world.sim.inject(op="*", mode="http_error", status=503, message="Service Unavailable",
                     count=0)


def test_an_hour_of_proxmox_outage_dead_letters_nothing_and_then_converges(world: World) -> None:
    world.paid(1)
    outage(world)
    for _ in range(PASSES):
        assert world.reconcile(1) is not None  # a step was tried and failed
    progress = world.progress.of(1)
    assert progress.attempts == PASSES and "503" in (progress.last_error or "")
    assert DeadLetters(world.store.conn).open_count() == 0
    assert sum(retry_delay(n) for n in range(1, PASSES + 1)) > 3_600  # it really is an hour

    world.sim.clear_faults()
    world.reconcile(1)
    record = world.vm(1)
    assert record.state == "running" and world.sim.vm(record.vmid)["status"] == "running"
    progress = world.progress.of(1)
    assert progress.attempts == 0 and progress.last_error is None
    assert progress.state is SubscriptionState.ACTIVE


def test_a_stop_due_during_an_outage_happens_once_proxmox_is_back(world: World) -> None:
    world.paid(1)
    world.reconcile(1)
    vmid = world.vm(1).vmid
    expired = EXPIRES + 60
    outage(world)
    for _ in range(PASSES):
        assert world.reconcile(1, expired) == "observe"  # even Proxmox's view is out of reach
    assert world.progress.of(1).attempts == PASSES
    assert DeadLetters(world.store.conn).open_count() == 0
    world.sim.clear_faults()
    assert world.reconcile(1, expired) == "stop"
    assert world.sim.vm(vmid)["status"] == "stopped"


def test_a_dead_letter_still_lets_the_vm_stop_and_be_destroyed_on_time(world: World) -> None:
    world.paid(1)
    world.reconcile(1)
    vmid = world.vm(1).vmid
    letters = DeadLetters(world.store.conn)
    letters.add(1, action="update_expiry", reason="update_expiry: TxFailed: reverted",
                attempts=1, facts_block=101)
    # Paid: a dead-lettered subscription takes no step of service ...
    world.sim.control("POST", f"vms/{vmid}", {"status": "stopped"})
    assert world.reconciler.reconcile(1, EXPIRES - 100, Scope.TEARDOWN_ONLY) is None
    assert world.sim.vm(vmid)["status"] == "stopped"
    world.sim.control("POST", f"vms/{vmid}", {"status": "running"})
    # ... but is stopped at expiry and destroyed after grace, through the ownership checks.
    assert world.reconciler.reconcile(1, EXPIRES + 60, Scope.TEARDOWN_ONLY) == "stop"
    assert world.sim.vm(vmid)["status"] == "stopped"
    past_grace = EXPIRES + GRACE_DAYS * 86_400 + 60
    assert world.reconciler.reconcile(1, past_grace, Scope.TEARDOWN_ONLY) == "destroy"
    assert world.sim.vm(vmid) is None and world.vm(1) is None
    assert letters.open_count() == 1  # still the operator's to look at


def test_an_rpc_outage_while_minting_dead_letters_nothing_and_mints_once(
        world: World, anvil: Anvil) -> None:
    """The RPC answers 503 or rate-limits every call for over an hour: the mint step fails
    temporarily each pass; once the node is back the NFT is minted exactly once."""
    owner = Account.from_key(DEV_PRIVATE_KEYS[0])
    direct = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    nft, _ = deploy_contract(direct, owner, "AccessCredentialNFT", "Access", "BHA", "")
    settings = ProxySettings(fault_rate=1.0, fault_kinds=("http_503", "rate_limit"))
    with RpcProxy(anvil.url, settings=settings) as proxy:
        w3 = Web3(Web3.HTTPProvider(proxy.url, request_kwargs={"timeout": 5}))
        txm = TxManager(w3, TxStore(world.store.conn), owner, fees=FeePolicy.from_gwei(500, 1),
                        confirmations=0, receipt_timeout=2.0, poll_interval=0.05)
        world.services.minter = NftMinter(txm, nft)
        reconciler = Reconciler(world.services, choose_node=lambda _size: "pve1")
        world.store.journal_batch([decode_log(created_log(1))], to_block=101,
                                  to_hash="0x" + "ab" * 32, to_timestamp=1, block_times={})
        for _ in range(PASSES):
            assert reconciler.reconcile(1, EXPIRES - 100) == "mint"
        assert world.progress.of(1).token_id is None
        assert DeadLetters(world.store.conn).open_count() == 0

        settings.fault_rate = 0.0
        reconciler.reconcile(1, EXPIRES - 100)
    token = world.progress.of(1).token_id
    assert token is not None and world.vm(1).state == "running"
    contract = direct.eth.contract(address=nft, abi=load_abi("AccessCredentialNFT"))
    assert contract.functions.totalSupply().call() == 1


def test_waiting_on_an_unfunded_signer_writes_no_new_rows(world: World, anvil: Anvil) -> None:
    """Issue 13 item 9: a subscription waiting on a signer with no ETH used to add steps rows
    on every loop (millions a day); now the first wait writes them, repeats write nothing."""
    owner = Account.from_key(DEV_PRIVATE_KEYS[0])
    broke = Account.create()
    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    nft, _ = deploy_contract(w3, owner, "AccessCredentialNFT", "Access", "BHA", "")
    contract = w3.eth.contract(address=nft, abi=load_abi("AccessCredentialNFT"))
    send_transaction(w3, owner, contract.functions.transferOwnership(broke.address))
    txm = TxManager(w3, TxStore(world.store.conn), broke, fees=FeePolicy.from_gwei(500, 1),
                    confirmations=0, receipt_timeout=1.0, poll_interval=0.05)
    world.services.minter = NftMinter(txm, nft)
    reconciler = Reconciler(world.services, choose_node=lambda _size: "pve1")
    world.store.journal_batch([decode_log(created_log(1))], to_block=101,
                              to_hash="0x" + "ab" * 32, to_timestamp=1, block_times={})

    def rows() -> int:
        return int(world.store.conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0])

    assert reconciler.reconcile(1, EXPIRES - 100) == "mint" and reconciler.waiting
    after_first = rows()
    for _ in range(10):
        assert reconciler.reconcile(1, EXPIRES - 100) == "mint"
    assert rows() == after_first
    assert world.progress.of(1).attempts == 0  # waiting is not failing
    assert DeadLetters(world.store.conn).open_count() == 0
