"""The transaction manager against a real anvil chain: idempotency, depth, reorgs, bumps,
refusal classes and nonce trouble. Every test gets its own chain (fresh nonces, no state)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from listener.chain.contracts import deploy_contract
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil
from listener.devkit.fault_proxy import RpcProxy
from listener.writeback.fees import GWEI, FeePolicy, Fees
from listener.writeback.nft import MintRequest, NftMinter, mint_key
from listener.writeback.receipt_wait import MAX_RECEIPT_POLL, receipt_poll_delays
from listener.writeback.send_errors import SendOutcome, classify_send_error
from listener.writeback.tx_errors import SignerUnhealthy, TxFailed, TxPending
from listener.writeback.tx_store import TxStore
from listener.writeback.txmanager import TxCall, TxManager

OWNER, ALICE = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:2])


@dataclass
class Env:
    w3: Web3
    store: TxStore
    txm: TxManager
    minter: NftMinter
    db: Path


def make_env(anvil: Anvil, db: Path, *, confirmations: int = 0, account: LocalAccount = OWNER,
             cap_gwei: float = 500.0, tip_gwei: float = 1.0, bump_after: int = 2,
             nft: str | None = None) -> Env:
    w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))
    if nft is None:
        nft, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Access", "BHA", "")
    store = TxStore.open(db)
    txm = TxManager(w3, store, account, fees=FeePolicy.from_gwei(cap_gwei, tip_gwei),
                    confirmations=confirmations, bump_after_blocks=bump_after,
                    receipt_timeout=5.0, poll_interval=0.05)
    return Env(w3, store, txm, NftMinter(txm, nft), db)


@pytest.fixture
def env(anvil: Anvil, tmp_path: Path) -> Iterator[Env]:
    e = make_env(anvil, tmp_path / "tx.db")
    yield e
    e.store.conn.close()


def request(expires_at: int = 2_000_000_000, user_encrypted: bytes = b"\x01\x02") -> MintRequest:
    return MintRequest(to=ALICE.address, user_encrypted=user_encrypted,
                       public_secret=f"libpam-web3:{ALICE.address}:n1", description="d",
                       image_uri="", animation_url_base64="", expires_at=expires_at)


def rpc(w3: Web3, method: str, *params: object) -> object:
    response = w3.provider.make_request(method, list(params))
    assert "error" not in response, response
    return response["result"]


def mine(w3: Web3, blocks: int = 1) -> None:
    for _ in range(blocks):
        rpc(w3, "evm_mine")


# -- pure parts --------------------------------------------------------------------------


def test_fee_policy_initial_and_cap() -> None:
    policy = FeePolicy.from_gwei(100, 2)
    assert policy.initial(10 * GWEI) == Fees(max_fee=22 * GWEI, priority_fee=2 * GWEI)
    assert policy.initial(60 * GWEI) == Fees(max_fee=100 * GWEI, priority_fee=2 * GWEI)
    assert policy.initial(100 * GWEI) is None


def test_fee_bump_is_at_least_ten_percent_and_respects_the_cap() -> None:
    policy = FeePolicy.from_gwei(100, 2, bump_percent=20)
    old = Fees(max_fee=22 * GWEI, priority_fee=2 * GWEI)
    new = policy.bump(old, 10 * GWEI)
    assert new is not None
    assert new.max_fee >= old.max_fee * 11 // 10 and new.priority_fee >= old.priority_fee * 11 // 10
    assert new.max_fee <= policy.cap
    # near the cap there is no valid 10 % bump left
    assert policy.bump(Fees(max_fee=95 * GWEI, priority_fee=2 * GWEI), 10 * GWEI) is None
    # the bump follows a rising base fee
    risen = policy.bump(old, 40 * GWEI)
    assert risen is not None and risen.max_fee >= 80 * GWEI


@pytest.mark.parametrize(("message", "outcome"), [
    ("already known", SendOutcome.KNOWN),
    ("Transaction already imported", SendOutcome.KNOWN),
    ("nonce too low: next nonce 5, tx nonce 4", SendOutcome.NONCE_TOO_LOW),
    ("replacement transaction underpriced", SendOutcome.UNDERPRICED),
    ("max fee per gas less than block base fee", SendOutcome.UNDERPRICED),
    ("insufficient funds for gas * price + value", SendOutcome.INSUFFICIENT_FUNDS),
    ("Insufficient funds for gas * price + value", SendOutcome.INSUFFICIENT_FUNDS),
    ("intrinsic gas too low", SendOutcome.OTHER),
])
def test_classify_send_errors(message: str, outcome: SendOutcome) -> None:
    assert classify_send_error(message) is outcome


# -- against anvil -----------------------------------------------------------------------


def test_same_key_mints_once_and_token_id_comes_from_the_receipt(env: Env) -> None:
    first = env.minter.mint(mint_key(1), 1, request())
    again = env.minter.mint(mint_key(1), 1, request())
    second = env.minter.mint(mint_key(2), 2, request(user_encrypted=b"\x03"))
    assert (first, again, second) == (0, 0, 1)
    assert env.minter.total_supply() == 2
    assert env.minter.contract.functions.ownerOf(first).call() == ALICE.address
    rows = env.store.requests()
    assert [(r.idempotency_key, r.state, r.nonce) for r in rows] == [
        ("mint:sub:1", "confirmed", rows[0].nonce), ("mint:sub:2", "confirmed", rows[0].nonce + 1)]


def test_waits_for_the_confirmation_depth(anvil: Anvil, tmp_path: Path) -> None:
    env = make_env(anvil, tmp_path / "tx.db", confirmations=2)
    env.txm.receipt_timeout = 0.3
    with pytest.raises(TxPending):
        env.minter.mint(mint_key(1), 1, request())
    assert env.store.get(mint_key(1)).state == "mined"
    mine(env.w3, 2)
    assert env.minter.mint(mint_key(1), 1, request()) == 0
    assert env.minter.total_supply() == 1


def test_receipt_polls_back_off() -> None:
    delays = receipt_poll_delays(0.2)
    first = [next(delays) for _ in range(8)]
    assert first[:4] == pytest.approx([0.2, 0.3, 0.45, 0.675])
    assert first[-1] == MAX_RECEIPT_POLL and all(b >= a for a, b in itertools.pairwise(first))
    slow = receipt_poll_delays(5.0)  # a configured interval above the cap is kept as it is
    assert [next(slow) for _ in range(3)] == [5.0, 5.0, 5.0]


def test_waiting_for_a_receipt_looks_less_and_less_often(anvil: Anvil, tmp_path: Path) -> None:
    """Issue 13 item 9: a mint waiting for its block used to look every 0.2 s (~5 calls a
    look) for its whole timeout; now the looks thin out."""
    with RpcProxy(anvil.url) as proxy:
        env = make_env(anvil, tmp_path / "tx.db")
        env.txm.w3 = Web3(Web3.HTTPProvider(proxy.url, request_kwargs={"timeout": 30}))
        env.txm.receipt_timeout = 4.0
        rpc(env.w3, "evm_setAutomine", False)  # the mint never gets its block
        with pytest.raises(TxPending):
            env.minter.mint(mint_key(1), 1, request())
        looks = proxy.methods["eth_getTransactionReceipt"]
    assert 1 <= looks <= 12  # a fixed 0.2 s interval made 21 looks in 4 s here


def test_reorg_dropping_a_mined_mint_resends_the_same_bytes(anvil: Anvil, tmp_path: Path) -> None:
    env = make_env(anvil, tmp_path / "tx.db", confirmations=2)
    parse = lambda receipt: {"block": int(receipt["blockNumber"])}  # noqa: E731 - a one-line receipt parser
    snapshot = rpc(env.w3, "evm_snapshot")
    stored = env.txm.submit("mint:sub:1", "mint", 1, env.minter.mint_call(request()))
    assert not env.txm.poll(stored.idempotency_key, parse).done
    mined = env.store.get("mint:sub:1")
    assert mined is not None and mined.state == "mined"
    rpc(env.w3, "evm_revert", snapshot)  # the block holding the mint is gone
    assert env.minter.total_supply() == 0
    rpc(env.w3, "evm_setAutomine", False)
    assert not env.txm.poll("mint:sub:1", parse).done  # noticed: re-sent, not re-signed
    assert env.store.get("mint:sub:1").state == "pending"
    assert env.store.counters()["reorged_out"] == 1
    mine(env.w3, 3)
    outcome = env.txm.poll("mint:sub:1", parse)
    assert outcome.done
    attempts = env.store.attempts(stored.id)
    assert len(attempts) == 1 and outcome.request.tx_hash == attempts[0].tx_hash
    assert env.minter.total_supply() == 1


def test_stuck_transaction_is_replaced_by_a_bumped_one(anvil: Anvil, tmp_path: Path) -> None:
    env = make_env(anvil, tmp_path / "tx.db", bump_after=2)
    rpc(env.w3, "evm_setAutomine", False)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    first = env.store.attempts(stored.id)[0]
    rpc(env.w3, "anvil_setNextBlockBaseFeePerGas", hex(first.max_fee * 3))
    mine(env.w3)
    parse = lambda receipt: {"ok": True}  # noqa: E731 - a one-line receipt parser
    assert not env.txm.poll(mint_key(1), parse).done  # too cheap now, not bumped yet
    assert len(env.store.attempts(stored.id)) == 1
    mine(env.w3, 2)  # still too cheap: empty blocks
    assert env.minter.total_supply() == 0
    assert not env.txm.poll(mint_key(1), parse).done  # now bumped
    attempts = env.store.attempts(stored.id)
    assert len(attempts) == 2 and attempts[1].nonce == first.nonce
    assert attempts[1].max_fee > first.max_fee and attempts[1].priority_fee > first.priority_fee
    mine(env.w3)
    outcome = env.txm.poll(mint_key(1), parse)
    assert outcome.done and outcome.request.tx_hash == attempts[1].tx_hash
    assert env.minter.total_supply() == 1
    assert env.store.counters()["gas_bumps"] == 1


def test_fee_cap_below_base_fee_alerts_without_signing(anvil: Anvil, tmp_path: Path) -> None:
    env = make_env(anvil, tmp_path / "tx.db", cap_gwei=0.5)
    rpc(env.w3, "anvil_setNextBlockBaseFeePerGas", hex(GWEI))
    mine(env.w3)
    with pytest.raises(SignerUnhealthy, match="cap"):
        env.minter.mint(mint_key(1), 1, request())
    assert env.store.get(mint_key(1)) is None
    assert [a.kind for a in env.txm.alerts()] == ["fee_cap"]


def test_insufficient_funds_alerts_then_resends_the_stored_bytes(anvil: Anvil,
                                                                 tmp_path: Path) -> None:
    poor = Account.create()
    env = make_env(anvil, tmp_path / "tx.db", account=poor)
    call = TxCall(to=ALICE.address, data=b"", value=1, gas=21_000)
    with pytest.raises(SignerUnhealthy, match="insufficient funds"):
        env.txm.execute("pay:1", "pay", None, call, lambda r: {"ok": True})
    assert not env.txm.healthy()
    assert [a.kind for a in env.txm.alerts()] == ["insufficient_funds"]
    stored = env.store.get("pay:1")
    assert stored is not None and stored.state == "pending"
    rpc(env.w3, "anvil_setBalance", poor.address, hex(10**18))
    assert env.txm.execute("pay:1", "pay", None, call, lambda r: {"ok": True}) == {"ok": True}
    assert env.txm.healthy()
    assert len(env.store.attempts(stored.id)) == 1  # the same signed bytes, never re-signed


def _foreign_send(w3: Web3, nonce: int, *, to: str, data: bytes = b"", gas: int = 60_000,
                  fee: int = 50 * GWEI) -> str:
    tx = {"type": 2, "chainId": w3.eth.chain_id, "nonce": nonce, "to": to, "data": data,
          "value": 0, "gas": gas, "maxFeePerGas": fee, "maxPriorityFeePerGas": fee}
    signed = OWNER.sign_transaction(tx)
    return "0x" + bytes(w3.eth.send_raw_transaction(signed.raw_transaction)).hex()


def test_nonce_taken_by_another_tool_mints_after_proving_absence(env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    # another tool with the same key replaces our pending mint with a plain transfer
    _foreign_send(env.w3, stored.nonce, to=ALICE.address, gas=21_000)
    mine(env.w3)
    rpc(env.w3, "evm_setAutomine", True)
    assert env.minter.mint(mint_key(1), 1, request()) == 0
    again = env.store.get(mint_key(1))
    assert again is not None and again.nonce == stored.nonce + 1
    assert env.minter.total_supply() == 1


def test_uncertain_mint_already_on_chain_is_resolved_not_repeated(env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    # the same mint, signed elsewhere with the same nonce (e.g. a restored database), wins
    _foreign_send(env.w3, stored.nonce, to=env.minter.address, gas=stored.gas,
                  data=env.minter.mint_call(request()).data)
    mine(env.w3)
    rpc(env.w3, "evm_setAutomine", True)
    assert env.minter.mint(mint_key(1), 1, request()) == 0
    assert env.minter.total_supply() == 1
    resolved = env.store.get(mint_key(1))
    assert resolved is not None and resolved.error == "resolved from chain state"


def test_nonce_gap_below_our_transaction_is_filled(env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    base = env.w3.eth.get_transaction_count(OWNER.address)
    foreign = _foreign_send(env.w3, base, to=ALICE.address, gas=21_000)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    assert stored.nonce == base + 1
    rpc(env.w3, "anvil_dropTransaction", foreign)  # the other tool's tx vanished: a gap
    mine(env.w3, 3)
    assert env.minter.total_supply() == 0
    parse = lambda receipt: {"ok": True}  # noqa: E731 - a one-line receipt parser
    assert not env.txm.poll(mint_key(1), parse).done  # gap filled (and our tx bumped)
    filler = env.store.get(f"gapfill:{OWNER.address}:{base}")
    assert filler is not None and filler.nonce == base
    mine(env.w3)
    assert env.txm.poll(mint_key(1), parse).done
    assert env.minter.total_supply() == 1
    assert env.store.counters()["nonce_gaps_filled"] == 1
    assert env.txm.resume() == 0  # the filler is followed to its receipt too
    filler = env.store.get(f"gapfill:{OWNER.address}:{base}")
    assert filler is not None and filler.state == "confirmed"
    assert env.store.pending_count() == 0


def test_updates_are_keyed_and_skip_when_already_applied(env: Env) -> None:
    token = env.minter.mint(mint_key(1), 1, request(expires_at=1_900_000_000))
    env.minter.update_expiration(1, token, 1_950_000_000)
    env.minter.update_expiration(1, token, 1_950_000_000)
    assert env.minter.access_data(token)[3] == 1_950_000_000
    env.minter.update_user_encrypted(1, token, b"\xaa" * 40, generation=2)
    env.minter.update_user_encrypted(1, token, b"\xaa" * 40, generation=2)
    assert env.minter.access_data(token)[0] == b"\xaa" * 40
    # already the value on chain: nothing is signed for a fresh key
    env.minter.update_expiration(1, token, 1_950_000_000 + 0)
    keys = [r.idempotency_key for r in env.store.requests()]
    assert keys == ["mint:sub:1", "expiry:sub:1:1950000000", "userenc:sub:1:2"]


def test_resume_rebroadcasts_stored_bytes_after_the_node_forgot_them(env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    attempt = env.store.attempts(stored.id)[0]
    rpc(env.w3, "anvil_dropTransaction", attempt.tx_hash)
    assert env.w3.eth.get_transaction_count(OWNER.address, "pending") == stored.nonce
    assert env.txm.resume() == 1
    mine(env.w3)
    receipt = env.w3.eth.get_transaction_receipt(attempt.tx_hash)
    assert receipt["status"] == 1
    assert len(env.store.attempts(stored.id)) == 1


def test_a_call_that_would_revert_fails_before_anything_is_stored(anvil: Anvil,
                                                                  tmp_path: Path) -> None:
    owner_env = make_env(anvil, tmp_path / "owner.db")
    stranger = make_env(anvil, tmp_path / "tx.db", account=ALICE, nft=owner_env.minter.address)
    with pytest.raises(TxFailed, match="would fail: reverted with OwnableUnauthorizedAccount"):
        stranger.minter.mint(mint_key(1), 1, request())
    assert stranger.store.get(mint_key(1)) is None
    assert stranger.minter.total_supply() == 0


def test_uncertain_mint_is_resolved_from_the_signed_calldata_not_a_retry_payload(
        env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    original = request(user_encrypted=b"\x01" * 40)
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(original))
    _foreign_send(env.w3, stored.nonce, to=env.minter.address, gas=stored.gas,
                  data=env.minter.mint_call(original).data)
    mine(env.w3)
    rpc(env.w3, "evm_setAutomine", True)
    # the retry carries a fresh ciphertext (re-encrypted with a new random nonce)
    assert env.minter.mint(mint_key(1), 1, request(user_encrypted=b"\x02" * 40)) == 0
    assert env.minter.total_supply() == 1


def test_uncertain_outcome_without_a_chain_check_is_not_sent_again(env: Env) -> None:
    rpc(env.w3, "evm_setAutomine", False)
    call = TxCall(to=ALICE.address, data=b"", value=5, gas=21_000)
    stored = env.txm.submit("pay:1", "pay", None, call)
    _foreign_send(env.w3, stored.nonce, to=ALICE.address, gas=21_000)
    mine(env.w3)
    before = env.w3.eth.get_transaction_count(OWNER.address)
    with pytest.raises(TxFailed, match="outcome uncertain"):
        env.txm.execute("pay:1", "pay", None, call, lambda r: {"ok": True})
    assert [a.kind for a in env.txm.alerts()] == ["nonce_conflict"]
    assert len(env.store.attempts(stored.id)) == 1
    mine(env.w3)
    assert env.w3.eth.get_transaction_count(OWNER.address) == before


def test_two_managers_on_one_database_never_share_a_nonce(anvil: Anvil, tmp_path: Path) -> None:
    """The daemon and a manual `blockhost mint` are separate processes with separate locks:
    the SQLite write lock alone must keep their nonces apart."""
    import threading

    first = make_env(anvil, tmp_path / "tx.db")
    second = make_env(anvil, tmp_path / "tx.db", nft=first.minter.address)
    errors: list[BaseException] = []

    def work(e: Env, offset: int) -> None:
        try:
            for i in range(4):
                e.minter.mint(mint_key(offset + i), offset + i,
                              request(user_encrypted=bytes([offset + i])))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(first, 0)),
               threading.Thread(target=work, args=(second, 100))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    nonces = [r.nonce for r in first.store.requests()]
    assert len(nonces) == 8 and len(set(nonces)) == 8
    assert first.minter.total_supply() == 8


def test_anvil_reorg_replacing_the_mint_block_resends_and_still_mints_once(
        anvil: Anvil, tmp_path: Path) -> None:
    env = make_env(anvil, tmp_path / "tx.db", confirmations=3)
    parse = lambda receipt: {"block_hash": receipt["blockHash"].hex()}  # noqa: E731 - a one-line receipt parser
    stored = env.txm.submit(mint_key(1), "mint", 1, env.minter.mint_call(request()))
    assert not env.txm.poll(mint_key(1), parse).done
    mined = env.store.get(mint_key(1))
    assert mined is not None and mined.state == "mined"
    height = env.w3.eth.block_number
    rpc(env.w3, "anvil_reorg", 1, [])  # a competing block at the same height, without the mint
    assert env.w3.eth.block_number == height
    assert "0x" + bytes(env.w3.eth.get_block(height)["hash"]).hex() != mined.block_hash
    assert env.minter.total_supply() == 0
    env.txm.receipt_timeout = 0.5
    with pytest.raises(TxPending):  # re-sent (automine includes it), now waiting for depth
        env.minter.mint(mint_key(1), 1, request())
    mine(env.w3, 3)
    assert env.minter.mint(mint_key(1), 1, request()) == 0
    final = env.store.get(mint_key(1))
    assert final is not None and final.state == "confirmed"
    assert final.tx_hash == env.store.attempts(stored.id)[0].tx_hash
    assert final.block_hash != mined.block_hash
    assert env.minter.total_supply() == 1
    assert env.store.counters()["reorged_out"] == 1
