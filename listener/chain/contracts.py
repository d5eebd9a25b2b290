"""Compiled contracts (ABI + bytecode), deployment, and a local-signing transaction helper.

The artifacts are built by ``contracts/build.mjs`` and committed, so nothing here needs a
Solidity compiler at runtime. Transactions are always signed in this process with an
``eth_account`` key and sent raw: the daemon must work against any RPC provider, and an
unlocked node account (``eth_sendTransaction``) is neither portable nor safe. Private keys are
passed as Python values only — never on a command line, in a log line or in an exception.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import TxParams, TxReceipt

if TYPE_CHECKING:
    from eth_typing import ABIError

from blockhost_data import packaged_dir
from listener.errors import BlockhostError, UserError

#: Where the committed artifacts are read: the package data ``blockhost_data/artifacts`` (in a
#: source checkout, ``contracts/artifacts`` itself), so it works from a wheel and from any working
#: directory. ``BLOCKHOST_ARTIFACT_DIR`` overrides it (for artifacts shipped elsewhere).
ARTIFACT_DIR = Path(os.environ.get("BLOCKHOST_ARTIFACT_DIR") or packaged_dir("artifacts"))

#: Decimals of the mock stablecoin deployed on dev chains (USDC has 6).
MOCK_STABLECOIN_DECIMALS = 6

#: Safety margin on estimated gas: estimates are exact for the state they ran against, and a
#: block mined in between (another subscription, a price update) can make the real run dearer.
GAS_MARGIN_NUMERATOR = 5
GAS_MARGIN_DENOMINATOR = 4


class TransactionFailed(BlockhostError):
    """A transaction was mined with status 0, or could not be built because it would revert."""

    def __init__(self, message: str, *, tx_hash: str | None = None, receipt: TxReceipt | None = None):
        super().__init__(message)
        self.tx_hash = tx_hash
        self.receipt = receipt


def load_artifact(name: str, directory: Path | None = None) -> dict[str, Any]:
    """Return the artifact ``{"contractName", "abi", "bytecode", ...}`` of contract ``name``.

    Raises UserError with what to do when the file is missing or malformed, because a broken
    checkout is an operator problem, not a bug to show as a traceback.
    """
    base = Path(directory) if directory is not None else ARTIFACT_DIR
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UserError(f"invalid contract name {name!r}: expected e.g. 'BlockhostSubscriptions'")
    path = base / f"{name}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"contract artifact {path} is missing: the checkout is incomplete; "
            "run `make contracts` (node contracts/build.mjs) to rebuild it"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read contract artifact {path}: {exc.strerror}") from None
    try:
        artifact = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"contract artifact {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "run `make contracts` to rebuild it"
        ) from None
    if (
        not isinstance(artifact, dict)
        or not isinstance(artifact.get("abi"), list)
        or not isinstance(artifact.get("bytecode"), str)
        or not artifact["bytecode"].startswith("0x")
    ):
        raise UserError(
            f"contract artifact {path} lacks an 'abi' list or a '0x' 'bytecode'; "
            "run `make contracts` to rebuild it"
        )
    return artifact


def load_abi(name: str) -> list[dict[str, Any]]:
    """Just the ABI of contract ``name`` (what event decoders and callers need)."""
    abi: list[dict[str, Any]] = load_artifact(name)["abi"]
    return abi


def error_selectors(abi: list[dict[str, Any]]) -> dict[str, str]:
    """Map ``0x``-prefixed 4-byte selectors to custom-error signatures, e.g. ``PlanNotFound(uint256)``.

    Reverts from these contracts carry only a selector and arguments; this turns them into the
    name an operator can look up.
    """
    out: dict[str, str] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        signature = f"{item['name']}({','.join(i['type'] for i in item.get('inputs', []))})"
        selector = function_abi_to_4byte_selector(cast("ABIError", item))
        out["0x" + selector.hex()] = signature
    return out


def describe_revert(data: str | bytes | None, abi: list[dict[str, Any]] | None = None) -> str:
    """A short human description of revert ``data`` (custom error name when known)."""
    if data is None:
        return "reverted without data"
    raw = data if isinstance(data, str) else "0x" + bytes(data).hex()
    if not raw.startswith("0x"):
        raw = "0x" + raw
    selector = raw[:10].lower()
    known = ((error_selectors(abi) if abi is not None else {}).get(selector)
             or _all_known_errors().get(selector))
    if known:
        return f"reverted with {known}"
    if selector == "0x08c379a0":
        return "reverted with Error(string)"
    return f"reverted with data {raw[:74]}{'…' if len(raw) > 74 else ''}"


@functools.cache
def _all_known_errors() -> dict[str, str]:
    """Errors of every committed artifact: a call can revert inside another contract (the
    stablecoin's ERC20InsufficientBalance bubbles up through buySubscription)."""
    out: dict[str, str] = {}
    for path in sorted(ARTIFACT_DIR.glob("*.json")):
        try:
            out.update(error_selectors(load_artifact(path.stem)["abi"]))
        except UserError:
            continue
    return out


@dataclass(frozen=True)
class Deployment:
    """Addresses of one deployment; what `blockhost contracts deploy --json` prints."""

    chain_id: int
    stablecoin: str
    subscriptions: str
    nft: str
    deployer: str
    block_number: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Stable JSON (sorted keys) so scripts and config generators can parse it."""
        return json.dumps(self.to_dict(), sort_keys=True)


TxBuilder = ContractFunction | ContractConstructor | Mapping[str, Any]


def _fee_fields(w3: Web3, max_fee: int | None, tip: int | None) -> dict[str, int]:
    """EIP-1559 fees: tip from the node unless given; cap = 2 x base fee + tip unless given.

    Twice the base fee keeps the transaction includable through several full blocks (the
    base fee rises at most 12.5% per block) without overpaying: only base fee + tip is charged.
    """
    if tip is None:
        try:
            tip = int(w3.eth.max_priority_fee)
        except Exception:  # noqa: BLE001 - some nodes lack eth_maxPriorityFeePerGas
            tip = 1_000_000_000
    if max_fee is None:
        base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        max_fee = 2 * base_fee + tip
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": max(max_fee, tip)}


def build_transaction(
    w3: Web3,
    account: LocalAccount,
    fn_or_txdict: TxBuilder,
    *,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
) -> dict[str, Any]:
    """Complete an EIP-1559 transaction for ``account`` without signing it.

    The nonce comes from the ``pending`` block so several of our own transactions can be in
    flight; gas is estimated (with a margin) unless given. A would-be revert surfaces here as
    TransactionFailed instead of burning gas on chain.
    """
    tx: dict[str, Any] = {
        "from": account.address,
        "chainId": w3.eth.chain_id,
        "nonce": nonce if nonce is not None else w3.eth.get_transaction_count(account.address, "pending"),
        "value": value,
        **_fee_fields(w3, max_fee_per_gas, max_priority_fee_per_gas),
        "type": 2,
    }
    abi: list[dict[str, Any]] | None = None
    if isinstance(fn_or_txdict, Mapping):
        tx.update({k: v for k, v in fn_or_txdict.items() if k not in ("gasPrice", "from")})
        tx.setdefault("data", "0x")
    else:
        contract_abi = getattr(fn_or_txdict, "contract_abi", None) or getattr(fn_or_txdict, "abi", None)
        abi = contract_abi if isinstance(contract_abi, list) else None
        # A gas value stops web3 from estimating on its own; ours follows with a margin.
        params: TxParams = {**tx, "gas": gas or 1}  # type: ignore[typeddict-item]  # tx holds TxParams keys
        tx = dict(fn_or_txdict.build_transaction(params))
    if gas is not None:
        tx["gas"] = gas
    elif isinstance(fn_or_txdict, Mapping) and "gas" in fn_or_txdict:
        pass
    else:
        tx["gas"] = _estimate(w3, tx, abi=abi)
    return tx


def _estimate(w3: Web3, tx: Mapping[str, Any], *, abi: list[dict[str, Any]] | None) -> int:
    probe = {k: v for k, v in tx.items() if k not in ("gas", "type", "chainId", "nonce")}
    try:
        estimate = int(w3.eth.estimate_gas(probe))  # type: ignore[arg-type]  # probe holds TxParams keys
    except (ContractLogicError, Web3RPCError) as exc:
        # A revert (custom error, panic, require) or a node-side refusal such as insufficient
        # funds. Connection problems are not caught: they are not the transaction's fault.
        data = getattr(exc, "data", None)
        reason = describe_revert(data if isinstance(data, (str, bytes)) else None, abi)
        raise TransactionFailed(f"transaction would fail: {reason} ({type(exc).__name__})") from exc
    return estimate * GAS_MARGIN_NUMERATOR // GAS_MARGIN_DENOMINATOR


def send_transaction(
    w3: Web3,
    account: LocalAccount,
    fn_or_txdict: TxBuilder,
    *,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    timeout: float = 120.0,
    poll_latency: float = 0.1,
) -> TxReceipt:
    """Build (EIP-1559), sign locally, send raw, and wait for the receipt.

    ``fn_or_txdict`` is a bound contract call (``contract.functions.f(...)``), a constructor
    (``Contract.constructor(...)``) or a plain dict with ``to`` / ``data``. Raises
    TransactionFailed if the transaction would revert (found by gas estimation, nothing is sent)
    or if the receipt has status 0, so callers never mistake a revert for success; web3's
    TimeExhausted if no receipt arrives within ``timeout`` seconds (the transaction may still
    be mined later: callers that must not double-send keep the hash and nonce).
    """
    tx = build_transaction(
        w3,
        account,
        fn_or_txdict,
        value=value,
        gas=gas,
        nonce=nonce,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
    )
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=poll_latency)
    if receipt["status"] != 1:
        raise TransactionFailed(
            f"transaction 0x{bytes(tx_hash).hex()} reverted in block {receipt['blockNumber']}",
            tx_hash="0x" + bytes(tx_hash).hex(),
            receipt=receipt,
        )
    return receipt


def deploy_contract(
    w3: Web3, account: LocalAccount, name: str, *args: Any, **kwargs: Any
) -> tuple[str, TxReceipt]:
    """Deploy artifact ``name`` with constructor ``args``; return (checksum address, receipt)."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = send_transaction(w3, account, factory.constructor(*args), **kwargs)
    address = receipt.get("contractAddress")
    if not address or len(w3.eth.get_code(address)) == 0:
        raise TransactionFailed(f"deploying {name} left no code at {address!r}", receipt=receipt)
    return to_checksum_address(address), receipt


def deploy_all(
    w3: Web3,
    private_key: str,
    *,
    stablecoin: str | None = None,
    nft_name: str = "Blockhost Access",
    nft_symbol: str = "BHA",
    default_image_uri: str = "",
    initial_plan: tuple[str, int] | None = ("basic", 100),
    on_step: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploy a complete set: stablecoin (mock unless given), subscriptions, and the NFT.

    The key signs every transaction locally and becomes the owner of both contracts, which is
    what the daemon needs: the same key later mints credentials. ``initial_plan`` is
    ``(name, price per day in USD cents)``; ``None`` creates no plan. ``on_step`` receives short
    progress messages (never secrets) for the CLI.
    """
    try:
        account: LocalAccount = Account.from_key(private_key)
    except Exception:  # noqa: BLE001 - the key itself must not end up in the message
        raise UserError("the deployer private key is not a valid 32-byte hex key") from None
    say = on_step or (lambda _message: None)
    chain_id = int(w3.eth.chain_id)

    if stablecoin is None:
        say("deploying MockStablecoin (test/demo token, 6 decimals)")
        stablecoin_address, _ = deploy_contract(
            w3, account, "MockStablecoin", "Mock USD", "mUSD", MOCK_STABLECOIN_DECIMALS
        )
    else:
        if not Web3.is_address(stablecoin):
            raise UserError(f"stablecoin {stablecoin!r} is not an address (expected 0x + 40 hex digits)")
        stablecoin_address = to_checksum_address(stablecoin)
        if len(w3.eth.get_code(stablecoin_address)) == 0:
            raise UserError(
                f"stablecoin {stablecoin_address} has no code on chain {chain_id}; "
                "check the address and the RPC URL"
            )

    say("deploying BlockhostSubscriptions")
    subscriptions_address, _ = deploy_contract(w3, account, "BlockhostSubscriptions")
    subscriptions = w3.eth.contract(address=to_checksum_address(subscriptions_address),
                                    abi=load_abi("BlockhostSubscriptions"))
    say(f"setting the primary stablecoin to {stablecoin_address}")
    send_transaction(w3, account, subscriptions.functions.setPrimaryStablecoin(stablecoin_address))
    if initial_plan is not None:
        plan_name, price_cents = initial_plan
        say(f"creating plan {plan_name!r} at {price_cents} cents/day")
        send_transaction(w3, account, subscriptions.functions.createPlan(plan_name, int(price_cents)))

    say("deploying AccessCredentialNFT")
    nft_address, receipt = deploy_contract(
        w3, account, "AccessCredentialNFT", nft_name, nft_symbol, default_image_uri
    )
    return Deployment(
        chain_id=chain_id,
        stablecoin=stablecoin_address,
        subscriptions=subscriptions_address,
        nft=nft_address,
        deployer=account.address,
        block_number=int(receipt["blockNumber"]),
    )
