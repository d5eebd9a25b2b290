"""The three contracts on a real anvil chain, through web3.py.

One chain and one deployment serve the whole module; every test runs between an
``evm_snapshot`` and an ``evm_revert`` so tests stay independent and fast.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from listener.chain.contracts import TransactionFailed, deploy_contract, load_abi, send_transaction
from listener.devkit.devchain import DEV_PRIVATE_KEYS, Anvil

DAY = 86_400
ZERO = "0x" + "00" * 20
OWNER, ALICE, BOB, CAROL = (Account.from_key(k) for k in DEV_PRIVATE_KEYS)
PLAN_CENTS = 250  # $2.50 per day
USDC = 10**6

# A hand-assembled "token" whose transferFrom returns true but moves nothing: decimals() is 6,
# every other call returns uint256(1). It lets the tests reach PaymentShortfall.
#   runtime: selector == decimals() ? return 6 : return 1
_LYING_TOKEN_RUNTIME = bytes.fromhex(
    "60003560e01c"  # PUSH1 0 CALLDATALOAD PUSH1 0xe0 SHR
    "63313ce56714601957"  # PUSH4 decimals() EQ PUSH1 0x19 JUMPI
    "600160005260206000f3"  # MSTORE 1, RETURN 32 bytes
    "5b600660005260206000f3"  # JUMPDEST; MSTORE 6, RETURN 32 bytes
)
LYING_TOKEN_INITCODE = (
    bytes.fromhex(f"60{len(_LYING_TOKEN_RUNTIME):02x}80600b6000396000f3") + _LYING_TOKEN_RUNTIME
)


@dataclass
class Env:
    w3: Web3
    token: Contract
    subs: Contract
    nft: Contract
    bare_subs: Contract  # a subscriptions contract whose stablecoin was never set


def _contract(w3: Web3, name: str, address: str) -> Contract:
    return w3.eth.contract(address=address, abi=load_abi(name))


@pytest.fixture(scope="module")
def env(module_anvil: Anvil) -> Env:
    w3 = Web3(Web3.HTTPProvider(module_anvil.url, request_kwargs={"timeout": 30}))
    token_addr, _ = deploy_contract(w3, OWNER, "MockStablecoin", "Mock USD", "mUSD", 6)
    subs_addr, _ = deploy_contract(w3, OWNER, "BlockhostSubscriptions")
    bare_addr, _ = deploy_contract(w3, OWNER, "BlockhostSubscriptions")
    nft_addr, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Blockhost Access", "BHA", "ipfs://default")
    e = Env(
        w3=w3,
        token=_contract(w3, "MockStablecoin", token_addr),
        subs=_contract(w3, "BlockhostSubscriptions", subs_addr),
        nft=_contract(w3, "AccessCredentialNFT", nft_addr),
        bare_subs=_contract(w3, "BlockhostSubscriptions", bare_addr),
    )
    send(e, e.subs.functions.setPrimaryStablecoin(token_addr))
    send(e, e.subs.functions.createPlan("basic", PLAN_CENTS))
    for who in (ALICE, BOB, CAROL):
        send(e, e.token.functions.mint(who.address, 1_000_000 * USDC), who)
        send(e, e.token.functions.approve(subs_addr, 2**256 - 1), who)
    return e


@pytest.fixture(autouse=True)
def isolate(env: Env) -> Iterator[None]:
    snap = env.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield
    finally:
        assert env.w3.provider.make_request("evm_revert", [snap])["result"] is True


# ----------------------------------------------------------------- helpers


def send(e: Env, fn: Any, sender: LocalAccount = OWNER) -> TxReceipt:
    return send_transaction(e.w3, sender, fn, poll_latency=0.01)


def selector(signature: str) -> str:
    return "0x" + Web3.keccak(text=signature)[:4].hex()


def reverts(fn: Any, signature: str, *args: Any, sender: LocalAccount = OWNER,
            types: tuple[str, ...] = ()) -> None:
    """Assert that calling ``fn`` from ``sender`` reverts with custom error ``signature(args)``."""
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": sender.address})
    data = info.value.data
    assert isinstance(data, str)
    assert data[:10] == selector(signature), f"expected {signature}, got {data[:10]}"
    if args:
        inner = signature[signature.index("(") + 1 : -1]
        arg_types = types or tuple(t for t in inner.split(",") if t)
        assert data[10:] == encode(list(arg_types), list(args)).hex()


def not_owner(fn: Any, sender: LocalAccount = ALICE) -> None:
    reverts(fn, "OwnableUnauthorizedAccount(address)", sender.address, sender=sender)


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    logs = getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return [dict(ev["args"]) for ev in logs]


def latest_ts(e: Env) -> int:
    return int(e.w3.eth.get_block("latest")["timestamp"])


def next_ts(e: Env, offset: int = 10) -> int:
    """Pin the next block's timestamp so expiry arithmetic can be checked exactly."""
    ts = latest_ts(e) + offset
    e.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])
    return ts


def mine_at(e: Env, ts: int) -> None:
    e.w3.provider.make_request("evm_mine", [ts])


def balance(e: Env, who: str) -> int:
    return int(e.token.functions.balanceOf(who).call())


def buy(e: Env, who: LocalAccount = ALICE, days: int = 3, blob: bytes = b"\x01\x02",
        plan: int = 1) -> tuple[int, TxReceipt]:
    receipt = send(e, e.subs.functions.buySubscription(plan, days, 1, blob), who)
    (created,) = events(e.subs, "SubscriptionCreated", receipt)
    return int(created["subscriptionId"]), receipt


def price(days: int, cents: int = PLAN_CENTS) -> int:
    return cents * days * USDC // 100


# ============================================================ subscriptions


def test_initial_state_and_constants(env: Env) -> None:
    s = env.subs.functions
    assert s.owner().call() == OWNER.address
    assert s.STABLECOIN_PAYMENT_ID().call() == 1
    assert s.MAX_USER_ENCRYPTED_LENGTH().call() == 1024
    assert s.MAX_DAYS().call() == 36500
    assert s.getPrimaryStablecoin().call() == env.token.address
    assert s.getPaymentMethodIds().call() == [1]
    assert s.getPaymentMethod(1).call() == [env.token.address, ZERO, env.token.address, 6, 6, True]
    assert s.getTotalPlanCount().call() == 1
    assert s.getTotalSubscriptionCount().call() == 0
    assert s.nextSubscriptionId().call() == 1
    assert s.getSubscriptionsBySubscriber(ALICE.address).call() == []


def test_create_plan_event_ids_and_view(env: Env) -> None:
    receipt = send(env, env.subs.functions.createPlan('pro "x" \\ </script>', 1234))
    assert events(env.subs, "PlanCreated", receipt) == [
        {"planId": 2, "name": 'pro "x" \\ </script>', "pricePerDayUsdCents": 1234}
    ]
    receipt = send(env, env.subs.functions.createPlan("max", 1))
    assert events(env.subs, "PlanCreated", receipt)[0]["planId"] == 3
    assert env.subs.functions.getPlan(2).call() == ['pro "x" \\ </script>', 1234, True]
    assert env.subs.functions.getTotalPlanCount().call() == 3
    assert env.subs.functions.createPlan("ret", 5).call({"from": OWNER.address}) == 4


def test_create_plan_rejects_zero_price_and_non_owner(env: Env) -> None:
    reverts(env.subs.functions.createPlan("free", 0), "PlanPriceMustBePositive()")
    not_owner(env.subs.functions.createPlan("x", 1))


def test_update_plan(env: Env) -> None:
    receipt = send(env, env.subs.functions.updatePlan(1, "basic-v2", 300, False))
    assert events(env.subs, "PlanUpdated", receipt) == [
        {"planId": 1, "name": "basic-v2", "pricePerDayUsdCents": 300, "active": False}
    ]
    assert env.subs.functions.getPlan(1).call() == ["basic-v2", 300, False]
    send(env, env.subs.functions.updatePlan(1, "basic-v3", 300, True))
    assert env.subs.functions.getPlan(1).call() == ["basic-v3", 300, True]


def test_update_plan_reverts(env: Env) -> None:
    f = env.subs.functions
    reverts(f.updatePlan(0, "x", 1, True), "PlanNotFound(uint256)", 0)
    reverts(f.updatePlan(2, "x", 1, True), "PlanNotFound(uint256)", 2)
    reverts(f.updatePlan(1, "x", 0, True), "PlanPriceMustBePositive()")
    not_owner(f.updatePlan(1, "x", 1, True))
    reverts(f.getPlan(0), "PlanNotFound(uint256)", 0)
    reverts(f.getPlan(9), "PlanNotFound(uint256)", 9)


def test_stablecoin_not_set(env: Env) -> None:
    b = env.bare_subs.functions
    send(env, b.createPlan("basic", 100))
    assert b.getPrimaryStablecoin().call() == ZERO
    assert b.getPaymentMethodIds().call() == []
    reverts(b.getPaymentMethod(1), "PrimaryStablecoinNotSet()")
    reverts(b.calculatePayment(1, 1, 1), "PrimaryStablecoinNotSet()")
    reverts(b.buySubscription(1, 1, 1, b""), "PrimaryStablecoinNotSet()", sender=ALICE)
    reverts(b.updatePaymentMethod(1, False), "PrimaryStablecoinNotSet()")


def test_set_primary_stablecoin(env: Env) -> None:
    b = env.bare_subs.functions
    coin18, _ = deploy_contract(env.w3, OWNER, "MockStablecoin", "Dai-like", "D18", 18)
    receipt = send(env, b.setPrimaryStablecoin(coin18))
    assert events(env.bare_subs, "PrimaryStablecoinSet", receipt) == [
        {"stablecoinAddress": coin18, "decimals": 18}
    ]
    send(env, b.createPlan("basic", 199))
    assert b.calculatePayment(1, 7, 1).call() == 199 * 7 * 10**18 // 100
    assert b.getPaymentMethod(1).call() == [coin18, ZERO, coin18, 18, 18, True]


def test_set_primary_stablecoin_reverts(env: Env) -> None:
    b = env.bare_subs.functions
    reverts(b.setPrimaryStablecoin(ZERO), "InvalidAddress()")
    reverts(b.setPrimaryStablecoin(ALICE.address), "InvalidAddress()")  # no code
    not_owner(b.setPrimaryStablecoin(env.token.address))
    for decimals in (0, 1, 37, 255):
        coin, _ = deploy_contract(env.w3, OWNER, "MockStablecoin", "Odd", "ODD", decimals)
        reverts(b.setPrimaryStablecoin(coin), "UnsupportedDecimals(uint8)", decimals)
    for decimals in (2, 36):
        coin, _ = deploy_contract(env.w3, OWNER, "MockStablecoin", "Edge", "EDG", decimals)
        send(env, b.setPrimaryStablecoin(coin))


def test_update_payment_method_pauses_sales(env: Env) -> None:
    sub_id, _ = buy(env)
    receipt = send(env, env.subs.functions.updatePaymentMethod(1, False))
    assert events(env.subs, "PaymentMethodUpdated", receipt) == [{"paymentMethodId": 1, "active": False}]
    assert env.subs.functions.getPaymentMethod(1).call()[5] is False
    reverts(env.subs.functions.buySubscription(1, 1, 1, b""), "PaymentMethodNotActive(uint256)", 1,
            sender=ALICE)
    reverts(env.subs.functions.extendSubscription(sub_id, 1, 1), "PaymentMethodNotActive(uint256)", 1,
            sender=ALICE)
    assert env.subs.functions.calculatePayment(1, 2, 1).call() == price(2)  # quoting still works
    reverts(env.subs.functions.updatePaymentMethod(2, True), "PaymentMethodNotFound(uint256)", 2)
    not_owner(env.subs.functions.updatePaymentMethod(1, True))
    send(env, env.subs.functions.updatePaymentMethod(1, True))
    buy(env)


def test_buy_charges_exact_amount_and_emits_event(env: Env) -> None:
    blob = bytes(range(256)) + b"\x00" * 10
    before_alice, before_contract = balance(env, ALICE.address), balance(env, env.subs.address)
    assert env.subs.functions.buySubscription(1, 30, 1, blob).call({"from": ALICE.address}) == 1
    ts = next_ts(env)
    sub_id, receipt = buy(env, ALICE, 30, blob)
    assert sub_id == 1
    paid = price(30)
    assert paid == 75 * USDC
    assert balance(env, ALICE.address) == before_alice - paid
    assert balance(env, env.subs.address) == before_contract + paid
    assert events(env.subs, "SubscriptionCreated", receipt) == [{
        "subscriptionId": 1, "planId": 1, "subscriber": ALICE.address, "expiresAt": ts + 30 * DAY,
        "paidAmount": paid, "paymentToken": env.token.address, "userEncrypted": blob,
    }]
    assert env.subs.functions.getSubscription(1).call() == [1, ALICE.address, ts + 30 * DAY, True, False]
    assert env.subs.functions.isSubscriptionActive(1).call() is True
    assert env.subs.functions.daysRemaining(1).call() == 30
    assert env.subs.functions.getTotalSubscriptionCount().call() == 1


def test_buy_ids_are_sequential_and_indexed_per_subscriber(env: Env) -> None:
    ids = [buy(env, who)[0] for who in (ALICE, BOB, ALICE, CAROL, ALICE)]
    assert ids == [1, 2, 3, 4, 5]
    f = env.subs.functions
    assert f.getSubscriptionsBySubscriber(ALICE.address).call() == [1, 3, 5]
    assert f.getSubscriptionsBySubscriber(BOB.address).call() == [2]
    assert f.getSubscriptionsBySubscriber(OWNER.address).call() == []
    assert f.getTotalSubscriptionCount().call() == 5


def test_buy_user_encrypted_limits(env: Env) -> None:
    _, receipt = buy(env, blob=b"")
    assert events(env.subs, "SubscriptionCreated", receipt)[0]["userEncrypted"] == b""
    _, receipt = buy(env, blob=b"\xaa" * 1024)
    assert events(env.subs, "SubscriptionCreated", receipt)[0]["userEncrypted"] == b"\xaa" * 1024
    reverts(env.subs.functions.buySubscription(1, 1, 1, b"\xaa" * 1025),
            "UserEncryptedTooLarge(uint256,uint256)", 1025, 1024, sender=ALICE)


def test_buy_reverts(env: Env) -> None:
    f = env.subs.functions
    reverts(f.buySubscription(0, 1, 1, b""), "PlanNotFound(uint256)", 0, sender=ALICE)
    reverts(f.buySubscription(2, 1, 1, b""), "PlanNotFound(uint256)", 2, sender=ALICE)
    reverts(f.buySubscription(1, 0, 1, b""), "DaysMustBePositive()", sender=ALICE)
    reverts(f.buySubscription(1, 36501, 1, b""), "DaysTooLarge(uint256,uint256)", 36501, 36500,
            sender=ALICE)
    reverts(f.buySubscription(1, 2**255, 1, b""), "DaysTooLarge(uint256,uint256)", 2**255, 36500,
            sender=ALICE)
    for method in (0, 2, 2**256 - 1):
        reverts(f.buySubscription(1, 1, method, b""), "PaymentMethodNotFound(uint256)", method,
                sender=ALICE)
    send(env, f.updatePlan(1, "basic", PLAN_CENTS, False))
    reverts(f.buySubscription(1, 1, 1, b""), "PlanNotActive(uint256)", 1, sender=ALICE)


def test_buy_without_allowance_or_funds_fails_and_changes_nothing(env: Env) -> None:
    poor = Account.create()
    env.w3.provider.make_request("anvil_setBalance", [poor.address, hex(10**18)])
    reverts(env.subs.functions.buySubscription(1, 1, 1, b""),
            "ERC20InsufficientAllowance(address,uint256,uint256)", env.subs.address, 0, price(1),
            sender=poor)
    send(env, env.token.functions.approve(env.subs.address, 2**256 - 1), poor)
    reverts(env.subs.functions.buySubscription(1, 1, 1, b""),
            "ERC20InsufficientBalance(address,uint256,uint256)", poor.address, 0, price(1), sender=poor)
    with pytest.raises(TransactionFailed, match="ERC20InsufficientBalance"):
        send_transaction(env.w3, poor, env.subs.functions.buySubscription(1, 1, 1, b""))
    assert env.subs.functions.getTotalSubscriptionCount().call() == 0


def test_buy_rejects_a_token_that_does_not_deliver(env: Env) -> None:
    b = env.bare_subs.functions
    receipt = send(env, {"data": "0x" + LYING_TOKEN_INITCODE.hex()})
    liar = receipt["contractAddress"]
    assert env.w3.eth.get_code(liar) == _LYING_TOKEN_RUNTIME
    send(env, b.setPrimaryStablecoin(liar))
    send(env, b.createPlan("basic", 100))
    reverts(b.buySubscription(1, 2, 1, b""), "PaymentShortfall(uint256,uint256)", 2 * USDC, 0,
            sender=ALICE)


def test_extend_active_subscription_adds_to_expiry(env: Env) -> None:
    sub_id, receipt = buy(env, ALICE, 10)
    expires = events(env.subs, "SubscriptionCreated", receipt)[0]["expiresAt"]
    before = balance(env, ALICE.address)
    receipt = send(env, env.subs.functions.extendSubscription(sub_id, 5, 1), ALICE)
    assert events(env.subs, "SubscriptionExtended", receipt) == [{
        "subscriptionId": sub_id, "planId": 1, "extendedBy": ALICE.address,
        "newExpiresAt": expires + 5 * DAY, "paidAmount": price(5), "paymentToken": env.token.address,
    }]
    assert balance(env, ALICE.address) == before - price(5)
    assert env.subs.functions.getSubscription(sub_id).call()[2] == expires + 5 * DAY


def test_extend_as_gift_keeps_subscriber_and_charges_gifter(env: Env) -> None:
    sub_id, _ = buy(env, ALICE, 1)
    alice_before, bob_before = balance(env, ALICE.address), balance(env, BOB.address)
    receipt = send(env, env.subs.functions.extendSubscription(sub_id, 2, 1), BOB)
    (ev,) = events(env.subs, "SubscriptionExtended", receipt)
    assert ev["extendedBy"] == BOB.address
    assert balance(env, BOB.address) == bob_before - price(2)
    assert balance(env, ALICE.address) == alice_before
    assert env.subs.functions.getSubscription(sub_id).call()[1] == ALICE.address
    assert env.subs.functions.getSubscriptionsBySubscriber(BOB.address).call() == []


def test_extend_expired_subscription_counts_from_now(env: Env) -> None:
    sub_id, _ = buy(env, ALICE, 1)
    mine_at(env, latest_ts(env) + 5 * DAY)
    assert env.subs.functions.isSubscriptionActive(sub_id).call() is False
    assert env.subs.functions.daysRemaining(sub_id).call() == 0
    assert env.subs.functions.getSubscription(sub_id).call()[3] is False
    ts = next_ts(env, 100)
    receipt = send(env, env.subs.functions.extendSubscription(sub_id, 3, 1), ALICE)
    assert events(env.subs, "SubscriptionExtended", receipt)[0]["newExpiresAt"] == ts + 3 * DAY
    assert env.subs.functions.isSubscriptionActive(sub_id).call() is True


def test_extend_reverts(env: Env) -> None:
    f = env.subs.functions
    sub_id, _ = buy(env)
    reverts(f.extendSubscription(0, 1, 1), "SubscriptionNotFound(uint256)", 0, sender=ALICE)
    reverts(f.extendSubscription(2, 1, 1), "SubscriptionNotFound(uint256)", 2, sender=ALICE)
    reverts(f.extendSubscription(sub_id, 0, 1), "DaysMustBePositive()", sender=ALICE)
    reverts(f.extendSubscription(sub_id, 36501, 1), "DaysTooLarge(uint256,uint256)", 36501, 36500,
            sender=ALICE)
    reverts(f.extendSubscription(sub_id, 1, 2), "PaymentMethodNotFound(uint256)", 2, sender=ALICE)
    send(env, f.updatePlan(1, "basic", PLAN_CENTS, False))
    reverts(f.extendSubscription(sub_id, 1, 1), "PlanNotActive(uint256)", 1, sender=ALICE)
    send(env, f.updatePlan(1, "basic", PLAN_CENTS, True))
    send(env, f.cancelSubscription(sub_id))
    reverts(f.extendSubscription(sub_id, 1, 1), "SubscriptionAlreadyCancelled(uint256)", sub_id,
            sender=ALICE)


def test_extend_uses_the_current_plan_price(env: Env) -> None:
    sub_id, _ = buy(env, ALICE, 1)
    send(env, env.subs.functions.updatePlan(1, "basic", 1000, True))
    receipt = send(env, env.subs.functions.extendSubscription(sub_id, 2, 1), ALICE)
    assert events(env.subs, "SubscriptionExtended", receipt)[0]["paidAmount"] == 20 * USDC


def test_cancel_subscription(env: Env) -> None:
    sub_id, _ = buy(env, ALICE, 10)
    ts = next_ts(env)
    receipt = send(env, env.subs.functions.cancelSubscription(sub_id))
    assert events(env.subs, "SubscriptionCancelled", receipt) == [
        {"subscriptionId": sub_id, "planId": 1, "subscriber": ALICE.address}
    ]
    assert env.subs.functions.getSubscription(sub_id).call() == [1, ALICE.address, ts, False, True]
    assert env.subs.functions.isSubscriptionActive(sub_id).call() is False
    assert env.subs.functions.daysRemaining(sub_id).call() == 0


def test_cancel_reverts(env: Env) -> None:
    f = env.subs.functions
    sub_id, _ = buy(env)
    not_owner(f.cancelSubscription(sub_id))
    reverts(f.cancelSubscription(0), "SubscriptionNotFound(uint256)", 0)
    reverts(f.cancelSubscription(7), "SubscriptionNotFound(uint256)", 7)
    send(env, f.cancelSubscription(sub_id))
    reverts(f.cancelSubscription(sub_id), "SubscriptionAlreadyCancelled(uint256)", sub_id)


def test_withdraw_funds(env: Env) -> None:
    buy(env, ALICE, 4)
    buy(env, BOB, 6)
    held = price(10)
    assert balance(env, env.subs.address) == held
    receipt = send(env, env.subs.functions.withdrawFunds(env.token.address, CAROL.address))
    assert events(env.subs, "FundsWithdrawn", receipt) == [
        {"token": env.token.address, "to": CAROL.address, "amount": held}
    ]
    assert balance(env, env.subs.address) == 0
    assert balance(env, CAROL.address) == 1_000_000 * USDC + held


def test_withdraw_reverts(env: Env) -> None:
    f = env.subs.functions
    reverts(f.withdrawFunds(env.token.address, CAROL.address), "NoBalanceToWithdraw()")
    buy(env)
    not_owner(f.withdrawFunds(env.token.address, ALICE.address))
    reverts(f.withdrawFunds(env.token.address, ZERO), "InvalidAddress()")
    reverts(f.withdrawFunds(ZERO, CAROL.address), "InvalidAddress()")


def test_views_on_unknown_ids(env: Env) -> None:
    f = env.subs.functions
    for missing in (0, 1, 2**256 - 1):
        reverts(f.getSubscription(missing), "SubscriptionNotFound(uint256)", missing)
        reverts(f.daysRemaining(missing), "SubscriptionNotFound(uint256)", missing)
        assert f.isSubscriptionActive(missing).call() is False
    reverts(f.calculatePayment(5, 1, 1), "PlanNotFound(uint256)", 5)
    reverts(f.calculatePayment(1, 1, 3), "PaymentMethodNotFound(uint256)", 3)
    reverts(f.getPaymentMethod(0), "PaymentMethodNotFound(uint256)", 0)
    reverts(f.getPaymentMethod(2), "PaymentMethodNotFound(uint256)", 2)


def test_calculate_payment_and_days_remaining(env: Env) -> None:
    f = env.subs.functions
    assert f.calculatePayment(1, 1, 1).call() == 2_500_000
    assert f.calculatePayment(1, 365, 1).call() == price(365)
    sub_id, receipt = buy(env, ALICE, 10)
    expires = events(env.subs, "SubscriptionCreated", receipt)[0]["expiresAt"]
    mine_at(env, expires - 3 * DAY - 1)
    assert f.daysRemaining(sub_id).call() == 3
    mine_at(env, expires - 1)
    assert f.daysRemaining(sub_id).call() == 0
    assert f.isSubscriptionActive(sub_id).call() is True
    mine_at(env, expires)
    assert f.isSubscriptionActive(sub_id).call() is False


def test_ownership_transfer_moves_admin_rights(env: Env) -> None:
    send(env, env.subs.functions.transferOwnership(BOB.address))
    not_owner(env.subs.functions.createPlan("x", 1), OWNER)
    send(env, env.subs.functions.createPlan("by-bob", 1), BOB)


# ============================================================ mock stablecoin


def test_mock_stablecoin(env: Env) -> None:
    t = env.token.functions
    assert (t.name().call(), t.symbol().call(), t.decimals().call()) == ("Mock USD", "mUSD", 6)
    supply = t.totalSupply().call()
    send(env, t.mint(OWNER.address, 5), CAROL)  # anyone may mint: test/demo only
    assert t.balanceOf(OWNER.address).call() == 5
    assert t.totalSupply().call() == supply + 5


# ============================================================ access credential NFT


def mint(e: Env, to: str = ALICE.address, user_encrypted: bytes = b"\xde\xad\xbe\xef",
         public_secret: str = "libpam-web3:secret", description: str = "VM web-1",
         image_uri: str = "", animation: str = "PGh0bWw+", expires_at: int = 0) -> tuple[int, TxReceipt]:
    receipt = send(e, e.nft.functions.mint(to, user_encrypted, public_secret, description, image_uri,
                                           animation, expires_at))
    (minted,) = events(e.nft, "CredentialMinted", receipt)
    return int(minted["tokenId"]), receipt


def metadata(e: Env, token_id: int) -> tuple[bytes, dict[str, Any]]:
    uri = e.nft.functions.tokenURI(token_id).call()
    prefix = "data:application/json;base64,"
    assert uri.startswith(prefix)
    raw = base64.b64decode(uri[len(prefix):], validate=True)
    return raw, json.loads(raw.decode("utf-8", errors="strict"))


def test_nft_mint_ids_sequential_from_zero(env: Env) -> None:
    n = env.nft.functions
    assert (n.name().call(), n.symbol().call(), n.owner().call()) == ("Blockhost Access", "BHA",
                                                                      OWNER.address)
    assert n.defaultImageUri().call() == "ipfs://default"
    ts = next_ts(env)
    token_id, receipt = mint(env, ALICE.address, expires_at=ts + 30 * DAY)
    assert token_id == 0
    assert events(env.nft, "CredentialMinted", receipt) == [
        {"tokenId": 0, "recipient": ALICE.address, "issuedAt": ts, "expiresAt": ts + 30 * DAY}
    ]
    assert events(env.nft, "Transfer", receipt) == [{"from": ZERO, "to": ALICE.address, "tokenId": 0}]
    assert [mint(env, BOB.address)[0], mint(env, ALICE.address)[0]] == [1, 2]
    assert n.mint(BOB.address, b"", "", "", "", "", 0).call({"from": OWNER.address}) == 3
    assert n.ownerOf(1).call() == BOB.address
    assert n.getAccessData(0).call() == [b"\xde\xad\xbe\xef", "libpam-web3:secret", ts, ts + 30 * DAY]


def test_nft_mint_reverts(env: Env) -> None:
    f = env.nft.functions.mint(ALICE.address, b"", "", "", "", "", 0)
    not_owner(f)
    not_owner(f, BOB)
    reverts(env.nft.functions.mint(ZERO, b"", "", "", "", "", 0), "ERC721InvalidReceiver(address)", ZERO)


def test_nft_enumerable(env: Env) -> None:
    for who in (ALICE, BOB, ALICE):
        mint(env, who.address)
    n = env.nft.functions
    assert n.totalSupply().call() == 3
    assert [n.tokenByIndex(i).call() for i in range(3)] == [0, 1, 2]
    assert n.balanceOf(ALICE.address).call() == 2
    assert [n.tokenOfOwnerByIndex(ALICE.address, i).call() for i in range(2)] == [0, 2]
    reverts(n.tokenByIndex(3), "ERC721OutOfBoundsIndex(address,uint256)", ZERO, 3)
    reverts(n.tokenOfOwnerByIndex(ALICE.address, 2), "ERC721OutOfBoundsIndex(address,uint256)",
            ALICE.address, 2)


def test_nft_transfer_keeps_credential_data(env: Env) -> None:
    token_id, _ = mint(env, ALICE.address, expires_at=latest_ts(env) + DAY)
    before = env.nft.functions.getAccessData(token_id).call()
    uri_before = env.nft.functions.tokenURI(token_id).call()
    send(env, env.nft.functions.transferFrom(ALICE.address, BOB.address, token_id), ALICE)
    n = env.nft.functions
    assert n.ownerOf(token_id).call() == BOB.address
    assert n.getAccessData(token_id).call() == before
    assert n.tokenURI(token_id).call() == uri_before
    assert n.balanceOf(ALICE.address).call() == 0
    assert n.tokenOfOwnerByIndex(BOB.address, 0).call() == token_id


def test_nft_updates_emit_events(env: Env) -> None:
    token_id, _ = mint(env)
    n = env.nft.functions
    issued = n.getAccessData(token_id).call()[2]
    for fn in (n.updateUserEncrypted(token_id, b"\x00\x01new"), n.updateExpiration(token_id, 12345),
               n.updateAnimationUrl(token_id, "bmV3")):
        receipt = send(env, fn)
        assert events(env.nft, "CredentialUpdated", receipt) == [{"tokenId": token_id}]
        assert events(env.nft, "MetadataUpdate", receipt) == [{"_tokenId": token_id}]
    assert n.getAccessData(token_id).call() == [b"\x00\x01new", "libpam-web3:secret", issued, 12345]
    _, meta = metadata(env, token_id)
    assert meta["animation_url"] == "data:text/html;base64,bmV3"
    assert meta["access"]["user_encrypted"] == "0x00016e6577"


def test_nft_updates_revert_for_nonexistent_tokens_and_non_owner(env: Env) -> None:
    token_id, _ = mint(env)
    n = env.nft.functions
    for fn in (n.updateUserEncrypted, n.updateExpiration, n.updateAnimationUrl):
        arg: Any = b"" if fn is n.updateUserEncrypted else ("" if fn is n.updateAnimationUrl else 0)
        reverts(fn(token_id + 1, arg), "ERC721NonexistentToken(uint256)", token_id + 1)
        not_owner(fn(token_id, arg))  # ALICE holds the token: still not allowed
        not_owner(fn(token_id, arg), BOB)
    for view in (n.getAccessData, n.isExpired, n.tokenURI, n.ownerOf):
        reverts(view(99), "ERC721NonexistentToken(uint256)", 99)
    not_owner(n.setDefaultImageUri("x"))


def test_nft_is_expired(env: Env) -> None:
    n = env.nft.functions
    forever, _ = mint(env, expires_at=0)
    expires = latest_ts(env) + 1000
    dated, _ = mint(env, expires_at=expires)
    assert n.isExpired(forever).call() is False
    assert n.isExpired(dated).call() is False
    mine_at(env, expires - 1)
    assert n.isExpired(dated).call() is False
    mine_at(env, expires)
    assert n.isExpired(dated).call() is True
    mine_at(env, expires + 10 * 365 * DAY)
    assert n.isExpired(forever).call() is False
    send(env, n.updateExpiration(dated, 0))
    assert n.isExpired(dated).call() is False


def test_nft_default_image_uri(env: Env) -> None:
    plain, _ = mint(env, image_uri="")
    own, _ = mint(env, image_uri="https://img.example/own.png")
    assert metadata(env, plain)[1]["image"] == "ipfs://default"
    receipt = send(env, env.nft.functions.setDefaultImageUri('ipfs://new"one'))
    assert events(env.nft, "DefaultImageUriUpdated", receipt) == [{"uri": 'ipfs://new"one'}]
    assert events(env.nft, "BatchMetadataUpdate", receipt) == [{"_fromTokenId": 0, "_toTokenId": 1}]
    assert env.nft.functions.defaultImageUri().call() == 'ipfs://new"one'
    assert metadata(env, plain)[1]["image"] == 'ipfs://new"one'
    assert metadata(env, own)[1]["image"] == "https://img.example/own.png"


def test_nft_supports_interfaces(env: Env) -> None:
    s = env.nft.functions.supportsInterface
    for iid in ("0x01ffc9a7", "0x80ac58cd", "0x5b5e139f", "0x780e9d63", "0x49064906"):
        assert s(bytes.fromhex(iid[2:])).call() is True, iid
    assert s(bytes.fromhex("ffffffff")).call() is False
    assert s(bytes.fromhex("12345678")).call() is False


def test_token_uri_exact_json(env: Env) -> None:
    ts = next_ts(env)
    token_id, _ = mint(env, ALICE.address, user_encrypted=b"\x00\xab\xff", public_secret="ps",
                       description="desc", image_uri="", animation="PGgxPg==", expires_at=ts + DAY)
    raw, meta = metadata(env, token_id)
    assert meta == {
        "name": "Access Credential #0",
        "description": "desc",
        "image": "ipfs://default",
        "animation_url": "data:text/html;base64,PGgxPg==",
        "attributes": [
            {"trait_type": "Type", "value": "Server Access"},
            {"trait_type": "Issued", "display_type": "date", "value": ts},
            {"trait_type": "Expires", "display_type": "date", "value": ts + DAY},
        ],
        "access": {"user_encrypted": "0x00abff", "public_secret": "ps"},
    }
    # Compact, in the reference's key order.
    assert raw == json.dumps(meta, separators=(",", ":")).encode()
    no_expiry, _ = mint(env, user_encrypted=b"")
    _, meta = metadata(env, no_expiry)
    assert [a["trait_type"] for a in meta["attributes"]] == ["Type", "Issued"]
    assert meta["access"]["user_encrypted"] == "0x"
    assert meta["name"] == "Access Credential #1"


HOSTILE = [
    '"',
    "\\",
    '\\"',
    '", "injected": "yes',
    "".join(chr(c) for c in range(0x20)),
    "line1\nline2\r\n\ttab\b\f",
    "</script><script>alert(1)</script>",
    "<!-- & -->",
    "unicode: héllo wörld ✓ 中文 🚀 \U0010ffff \u2028\u2029 \x7f",
    "",
    "\\u0000 literal backslash-u",
    "}" * 50 + "]" * 50,
    "\x00\"\\" * 700,  # ~2 KB that escapes to ~8 KB: tokenURI must stay callable
]


@pytest.mark.parametrize("text", HOSTILE)
def test_token_uri_escapes_hostile_strings(env: Env, text: str) -> None:
    token_id, _ = mint(env, public_secret=text, description=text, image_uri=text or "x",
                       animation=text)
    raw, meta = metadata(env, token_id)
    assert meta["description"] == text
    assert meta["access"]["public_secret"] == text
    assert meta["image"] == (text or "x")
    # An empty page and no contract default: no animation_url at all.
    assert meta.get("animation_url") == ("data:text/html;base64," + text if text else None)
    assert b"</script" not in raw and b"<" not in raw and b">" not in raw
    assert all(b >= 0x20 for b in raw)  # no raw control characters anywhere
    keys = {"name", "description", "image", "animation_url", "attributes", "access"}
    assert set(meta) == (keys if text else keys - {"animation_url"})


def _mint_raw(e: Env, fields: list[bytes]) -> int:
    """Mint with arbitrary BYTES in the four string fields (web3 would insist on valid text)."""
    sig = "mint(address,bytes,string,string,string,string,uint256)"
    data = Web3.keccak(text=sig)[:4] + encode(
        ["address", "bytes", "bytes", "bytes", "bytes", "bytes", "uint256"],
        [ALICE.address, b"\x01", *fields, 0],
    )
    receipt = send(e, {"to": e.nft.address, "data": "0x" + data.hex()})
    (minted,) = events(e.nft, "CredentialMinted", receipt)
    return int(minted["tokenId"])


INVALID_UTF8 = [
    b"\x80",  # lone continuation byte
    b"\xc0\xaf",  # overlong
    b"\xe0\x80\xaf",  # overlong 3-byte
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\xff\xfe",
    b"ok\xe2\x82",  # truncated at end
    b"\xe2\x82A\xf0\x9f\x98",  # truncated in the middle and at the end
    b"\xf0\x9f\x9a\x80 ok \xc3\xa9",  # valid 4- and 2-byte sequences
]


@pytest.mark.parametrize("blob", INVALID_UTF8)
def test_token_uri_replaces_invalid_utf8(env: Env, blob: bytes) -> None:
    token_id = _mint_raw(env, [blob, blob, blob, blob])
    _, meta = metadata(env, token_id)
    expected = blob.decode("utf-8", errors="replace")
    assert meta["description"] == expected
    assert meta["access"]["public_secret"] == expected


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=_TEXT, public_secret=_TEXT, image_uri=_TEXT)
def test_token_uri_round_trips_any_text(env: Env, description: str, public_secret: str,
                                        image_uri: str) -> None:
    token_id, _ = mint(env, description=description, public_secret=public_secret, image_uri=image_uri)
    _, meta = metadata(env, token_id)
    assert meta["description"] == description
    assert meta["access"]["public_secret"] == public_secret
    assert meta["image"] == (image_uri or "ipfs://default")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=24))
def test_token_uri_any_bytes_decode_like_python(env: Env, blob: bytes) -> None:
    token_id = _mint_raw(env, [blob, blob, b"", b""])
    _, meta = metadata(env, token_id)
    assert meta["access"]["public_secret"] == blob.decode("utf-8", errors="replace")
    assert meta["description"] == blob.decode("utf-8", errors="replace")
