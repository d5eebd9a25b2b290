"""A mint is only sent after the chain was checked for the subscription's credential (issue 14):
a database that forgot its mint (restored, or lost) finds the token on anvil instead of minting
a second one; a different publicSecret, or a token another subscription holds, is not taken."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from eth_account import Account
from web3 import Web3
from web3.types import RPCEndpoint

from listener.chain.contracts import deploy_all
from listener.chain.events import decode_log
from listener.chain.journal import Store
from listener.config import Config, build_config
from listener.crypto.user_secret import make_public_secret, sign_public_secret
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.reconcile.progress import Progress, ProgressStore
from listener.reconcile.vm_builder import MintOrder, VmBuilder
from listener.runtime.wiring import pools_from_config
from listener.writeback.fees import FeePolicy
from listener.writeback.nft import NftMinter
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxManager
from provisioner.inventory import Inventory, VMRecord
from tests.support.reconcile_world import SUBSCRIBER, created_log

OWNER = Account.from_key(DEV_PRIVATE_KEYS[0])
SUBSCRIBER_KEY = bytes(Account.from_key(DEV_PRIVATE_KEYS[1]).key)
EXPIRES = 2_000_000_000


@dataclass
class Host:
    """One database (as if on its own host) minting through the same signer and NFT."""

    store: Store
    builder: VmBuilder
    minter: NftMinter
    inventory: Inventory
    config: Config


def host(tmp_path: Path, name: str, w3: Web3, nft: str) -> Host:
    config = build_config({
        "chain": {"chain_id": 31337, "nft_contract": nft, "confirmations": 0,
                  "rpc_urls": ["http://127.0.0.1:1"]},
        "network": {"ip_pool": {"network": "10.9.0.0/24", "start": 10, "end": 20,
                                "gateway": "10.9.0.1"},
                    "vmid_range": {"start": 100000, "end": 100009}},
        "db": {"path": str(tmp_path / f"{name}.db")},
    }, origin="test")
    store = Store.open(config.db.path)
    txm = TxManager(w3, TxStore(store.conn), OWNER, fees=FeePolicy.from_gwei(100, 2))
    minter = NftMinter(txm, nft)
    inventory = Inventory(store.conn)
    builder = VmBuilder(config, inventory, pools_from_config(config), backend=None,
                        minter=minter, chain_id=31337, rpc_url_for_vm="")
    return Host(store, builder, minter, inventory, config)


def paid(h: Host, sub_id: int) -> VMRecord:
    """Subscription ``sub_id`` journaled (bought at block 10 + id) with its ids reserved."""
    h.store.journal_batch([decode_log(created_log(sub_id))], to_block=100 + sub_id,
                          to_hash="0x" + "ab" * 32, to_timestamp=1, block_times={})
    return h.inventory.reserve(f"blockhost-{sub_id:03d}", pools=h.builder.pools, node="pve1",
                               subscription_id=sub_id)


def order(sub_id: int, public_secret: str) -> MintOrder:
    return MintOrder(key=f"mint:sub:{sub_id}", subscription_id=sub_id, to=SUBSCRIBER,
                     signature=sign_public_secret(SUBSCRIBER_KEY, public_secret),
                     public_secret=public_secret, username="admin", expires_at=EXPIRES)


def test_a_forgotten_mint_is_found_on_chain_not_sent_again(anvil: Anvil, tmp_path: Path) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    w3.provider.make_request(RPCEndpoint("anvil_mine"), ["0x20"])  # mints land after the purchase block
    secret = make_public_secret(SUBSCRIBER)

    first = host(tmp_path, "first", w3, deployment.nft)
    record = paid(first, 1)
    token, sealed = first.builder.mint(order(1, secret), record)
    assert sealed and first.minter.total_supply() == 1

    # The same subscription in a database that never saw the mint (same address reserved).
    lost = host(tmp_path, "lost", w3, deployment.nft)
    again = paid(lost, 1)
    assert (again.ipv4, again.vmid) == (record.ipv4, record.vmid)
    assert lost.builder.mint(order(1, secret), again) == (token, True)
    assert lost.minter.total_supply() == 1
    assert lost.minter.txm.store.get("mint:sub:1") is None

    # Another purchase by the same wallet (its own publicSecret) is minted its own token.
    other = paid(lost, 2)
    second, _ = lost.builder.mint(order(2, make_public_secret(SUBSCRIBER)), other)
    assert second != token and lost.minter.total_supply() == 2

    # A token another subscription already holds is never taken, even with the same secret.
    ProgressStore(lost.store.conn).save(1, Progress(), Progress(token_id=token))
    third = paid(lost, 3)
    fresh, _ = lost.builder.mint(order(3, secret), third)
    assert fresh not in {token, second} and lost.minter.total_supply() == 3


def test_a_found_token_sealed_for_another_address_is_not_taken_as_sealed(
        anvil: Anvil, tmp_path: Path) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    w3.provider.make_request(RPCEndpoint("anvil_mine"), ["0x20"])  # mints land after the purchase block
    secret = make_public_secret(SUBSCRIBER)
    first = host(tmp_path, "first", w3, deployment.nft)
    token, _ = first.builder.mint(order(1, secret), paid(first, 1))

    lost = host(tmp_path, "lost", w3, deployment.nft)
    lost.inventory.reserve("placeholder", pools=lost.builder.pools, node="pve1")
    elsewhere = paid(lost, 1)                   # a different address than the NFT names
    assert lost.builder.mint(order(1, secret), elsewhere) == (token, False)
    no_signature = replace(order(1, secret), signature=None)
    assert lost.builder.mint(no_signature, elsewhere) == (token, False)
    assert lost.minter.total_supply() == 1


def test_a_token_our_own_mint_for_another_key_made_is_never_taken(
        anvil: Anvil, tmp_path: Path) -> None:
    """Two legacy purchases of one wallet share the server's default publicSecret and are
    provisioned side by side: while the first mint is sent but its outcome not yet stored,
    the second's chain check must not take the first's token (found by test_lifecycle)."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    w3.provider.make_request(RPCEndpoint("anvil_mine"), ["0x20"])
    shared = "blockhost-access"                       # the legacy default, the same for both
    h = host(tmp_path, "one", w3, deployment.nft)
    first_token, _ = h.builder.mint(order(1, shared), paid(h, 1))
    # The window between broadcast and the stored outcome: the request is ours, still open.
    h.store.conn.execute("UPDATE tx_requests SET state = 'pending', result = NULL"
                         " WHERE idempotency_key = 'mint:sub:1'")
    second_token, _ = h.builder.mint(order(2, shared), paid(h, 2))
    assert second_token != first_token and h.minter.total_supply() == 2


def test_a_sibling_mint_landing_during_the_chain_check_is_never_taken(
        anvil: Anvil, tmp_path: Path) -> None:
    """The same pair of legacy purchases, with the worst interleaving of two worker threads:
    the first subscription's mint is sent and mined while the second's chain check is under
    way (between its database and its log reads, had it read the database first). Seen as two
    subscriptions holding one token in test_lifecycle's SIGKILL story."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    deployment = deploy_all(w3, DEV_PRIVATE_KEYS[0], initial_plan=None)
    w3.provider.make_request(RPCEndpoint("anvil_mine"), ["0x20"])
    shared = "blockhost-access"
    h = host(tmp_path, "one", w3, deployment.nft)
    first_record, second_record = paid(h, 1), paid(h, 2)
    original = h.minter.mints_to
    minted: list[int] = []
    landed = False

    def sibling_mints_first(to: str, from_block: int) -> Iterator[tuple[int, str]]:
        nonlocal landed
        if not landed:  # the second subscription's check: the sibling's mint lands now
            landed = True
            minted.append(h.builder.mint(order(1, shared), first_record)[0])
        yield from original(to, from_block)

    h.minter.mints_to = sibling_mints_first  # type: ignore[method-assign]  # the interleaving under test
    second_token, _ = h.builder.mint(order(2, shared), second_record)
    assert minted and second_token != minted[0]
    assert h.minter.total_supply() == 2
