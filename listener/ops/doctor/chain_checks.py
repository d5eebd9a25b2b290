"""The chain side: each RPC URL's chain id, both contracts' code and ABI, the signer's right
to mint and its balance against one mint at the current gas price."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import Web3

from listener.chain.contracts import load_abi
from listener.config import Config
from listener.crypto.key_files import load_private_key
from listener.ops.doctor.check import Check, failed, guarded, one_line, passed, skipped

#: seconds one RPC request may take before the URL counts as unreachable
RPC_TIMEOUT = 10.0
#: bytes of userEncrypted a mint's gas is estimated with (a sealed hostname/port/user)
SAMPLE_USER_ENCRYPTED = 200
WEI_PER_ETH = 10**18


def connect(url: str, timeout: float = RPC_TIMEOUT) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))


@dataclass(frozen=True)
class RpcVerdict:
    """One URL's check and, when it serves the expected chain, a connection to use."""

    check: Check
    w3: Web3 | None
    chain_id: int | None


def rpc_check(url: str, expected: int | None, timeout: float = RPC_TIMEOUT, *,
              said_by: str = "the config") -> RpcVerdict:
    """Whether ``url`` answers with the configured chain id (any id when none is set)."""
    name = f"RPC {one_line(url)}"
    w3 = connect(url, timeout)
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # noqa: BLE001 - unreachable is this check's verdict
        return RpcVerdict(failed(name, f"no answer: {type(exc).__name__}: {exc}",
                                 "check the URL, the network and the provider's status"),
                          None, None)
    if expected is not None and chain_id != expected:
        return RpcVerdict(failed(name, f"serves chain {chain_id}, {said_by} says {expected}",
                                 "fix chain.chain_id or point chain.rpc_urls at the right "
                                 "network"), None, chain_id)
    return RpcVerdict(passed(name, f"chain {chain_id}"), w3, chain_id)


def rpc_checks(config: Config) -> tuple[list[Check], Web3 | None]:
    """Every URL of ``chain.rpc_urls``; the first one serving the right chain is returned.
    Without ``chain.chain_id`` the first URL that answers sets the chain the others must
    serve."""
    if not config.chain.rpc_urls:
        return [failed("RPC", "chain.rpc_urls is empty", "set at least one RPC endpoint")], None
    expected, verdicts = config.chain.chain_id, []
    for url in config.chain.rpc_urls:
        said_by = "the config" if config.chain.chain_id is not None else "the first RPC URL"
        verdict = rpc_check(url, expected, said_by=said_by)
        expected = expected if expected is not None else verdict.chain_id  # unset: all agree
        verdicts.append(verdict)
    good = next((v.w3 for v in verdicts if v.w3 is not None), None)
    return [v.check for v in verdicts], good


def code_check(w3: Web3, name: str, address: str | None, key: str) -> Check:
    """Contract code at ``address``."""
    if not address:
        return failed(name, f"chain.{key} is not set", f"set chain.{key} (blockhost contracts "
                      "deploy prints it)")
    code = w3.eth.get_code(Web3.to_checksum_address(address))
    if len(code) == 0:
        return failed(name, f"no contract code at {address} on chain {w3.eth.chain_id}",
                      f"fix chain.{key}, or deploy the contracts on this chain")
    return passed(name, f"{len(code)} bytes of code at {address}")


def contract_check(w3: Web3, name: str, address: str | None, key: str, artifact: str,
                   view: str) -> Check:
    """Code at the address, and one view of our ABI answering (the ABI matches)."""

    def run() -> Check:
        found = code_check(w3, name, address, key)
        if not found.ok:
            return found
        contract = w3.eth.contract(address=Web3.to_checksum_address(str(address)),
                                   abi=load_abi(artifact))
        try:
            value = getattr(contract.functions, view)().call()
        except Exception as exc:  # noqa: BLE001 - a mismatch shows as a failing call
            return failed(name, f"{view}() failed at {address}: {exc}", f"chain.{key} is not "
                          f"a {artifact}: fix the address")
        return passed(name, f"{found.detail}; {artifact}.{view}() = {value}")

    return guarded(name, f"check chain.{key} and the RPC", run)


def _signer_address(config: Config) -> str:
    key = load_private_key(config.signer.private_key_file, what="signer key")
    return str(Account.from_key(key).address)


def _nft(w3: Web3, config: Config) -> Any:
    return w3.eth.contract(address=Web3.to_checksum_address(str(config.chain.nft_contract)),
                           abi=load_abi("AccessCredentialNFT"))


def signer_owner_check(w3: Web3, config: Config) -> Check:
    """The signer owns the NFT contract (only the owner may mint)."""
    name = "signer may mint"

    def run() -> Check:
        signer = _signer_address(config)
        owner = str(_nft(w3, config).functions.owner().call())
        if owner.lower() != signer.lower():
            return failed(name, f"the NFT's owner is {owner}, the signer is {signer}",
                          "put the owner's key in signer.private_key_file, or have the owner "
                          "call transferOwnership(signer)")
        return passed(name, f"{signer} owns the NFT contract")

    return guarded(name, "check signer.private_key_file and chain.nft_contract", run)


def _mint_gas(w3: Web3, config: Config, signer: str) -> int:
    call = _nft(w3, config).functions.mint(
        signer, b"\x01" * SAMPLE_USER_ENCRYPTED, config.public_secret_default,
        config.nft.description, config.nft.image_uri, "", 0)
    return int(call.estimate_gas({"from": signer, "gasPrice": 0}))


def signer_balance_check(w3: Web3, config: Config) -> Check:
    """The signer's balance pays for at least one mint at the current gas price."""
    name = "signer balance"

    def run() -> Check:
        signer = _signer_address(config)
        balance = int(w3.eth.get_balance(Web3.to_checksum_address(signer)))
        cost = _mint_gas(w3, config, signer) * int(w3.eth.gas_price)
        shown = f"{balance / WEI_PER_ETH:.6f} for one mint costing ~{cost / WEI_PER_ETH:.6f}"
        if balance < cost:
            return failed(name, f"{signer} holds {shown}", f"send native coin to {signer}")
        return passed(name, f"{signer} holds {shown}")

    return guarded(name, "check the RPC and signer.private_key_file", run)


def chain_checks(config: Config) -> list[Check]:
    """Every chain check; those needing a working RPC are skipped without one."""
    checks, w3 = rpc_checks(config)
    later = ["subscription contract", "NFT contract", "signer may mint", "signer balance"]
    if w3 is None:
        return checks + [skipped(n, "no RPC URL serves the configured chain") for n in later]
    checks.append(contract_check(w3, "subscription contract", config.chain.subscription_contract,
                                 "subscription_contract", "BlockhostSubscriptions",
                                 "getTotalSubscriptionCount"))
    nft = contract_check(w3, "NFT contract", config.chain.nft_contract, "nft_contract",
                         "AccessCredentialNFT", "totalSupply")
    checks.append(nft)
    if not nft.ok:
        return checks + [skipped(n, "the NFT contract check failed") for n in later[2:]]
    return [*checks, signer_owner_check(w3, config), signer_balance_check(w3, config)]
