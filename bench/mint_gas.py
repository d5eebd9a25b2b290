"""What the NFT's credentials page costs on chain: per mint inline vs once as the default.

``python -m bench.mint_gas [--sizes 2,8,16] [--json]`` starts anvil, deploys
AccessCredentialNFT and, for HTML pages of each size (KiB; synthetic, the gas depends on the
length only), measures from receipts:

- ``set_default_gas``: storing that page as the default the first time, in
  ``set_default_txs`` parts of at most 8,192 base64 characters (``setDefaultAnimationPage``,
  then ``appendDefaultAnimationPage``), as ``blockhost contracts set-page`` sends it;
  ``largest_tx_gas`` is its dearest part (EIP-7825 caps one transaction at 16,777,216 gas);
- ``mint_inline_gas``: a mint carrying the page itself (``animationUrlBase64`` non-empty);
  None above 12 KiB, where such a mint no longer fits one transaction;
- ``mint_default_gas``: a mint with an empty page while that default is set (it is used);
- ``replace_default_gas`` / ``turn_off_gas``: replacing that default by another page of the
  same size, then setting it to "" (slots already in use cost less than fresh ones);
- ``token_uri_call_gas``: what an ``eth_call`` of ``tokenURI`` needs with that default (wallets
  and marketplaces make it; RPC providers cap a call's gas);
- ``break_even_mints``: after how many mints storing the page once is cheaper than inline.

Gas is deterministic for a given contract build: no repetitions are needed.
Exit codes: 0 done, 1 the chain could not be set up or a transaction failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import RPCEndpoint

from bench.cli_args import add_output_options, print_json, report_console
from listener.chain.contracts import TransactionFailed, deploy_contract, load_abi, send_transaction
from listener.devkit.devchain import DEV_PRIVATE_KEYS, start_anvil
from listener.errors import BlockhostError
from listener.ops.contracts import page_chunks

OWNER = Account.from_key(DEV_PRIVATE_KEYS[0])
RECIPIENT = Account.from_key(DEV_PRIVATE_KEYS[1]).address
KIB = 1024
#: Largest page a mint can carry inline within EIP-7825's per-transaction gas cap.
INLINE_MAX_KIB = 12


def kib_list(text: str) -> list[int]:
    """``2,8,16``: page sizes in KiB, each >= 1, at most 64 (a block holds ~30M gas)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of KiB") from None
    if not sizes or any(not 1 <= size <= 64 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes between 1 and 64 KiB")
    return sizes


def synthetic_page(size: int) -> bytes:
    """``size`` bytes of HTML; the content does not matter to gas, only its length does."""
    head, tail = b"<!doctype html><meta charset=utf-8><p>", b"</p>"
    filler = b""
    counter = 0
    while len(filler) < size:
        filler += hashlib.sha256(counter.to_bytes(8, "big")).hexdigest().encode()
        counter += 1
    return head + filler[: max(0, size - len(head) - len(tail))] + tail


def _snapshot(w3: Web3) -> str:
    return str(w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"])


def _revert(w3: Web3, snapshot: str) -> None:
    w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot])


def _gas_used(nft: Contract, fn: Any) -> int:
    return int(send_transaction(nft.w3, OWNER, fn, poll_latency=0.01)["gasUsed"])


def _store_default(nft: Contract, page: str) -> list[int]:
    """Gas of each part of ``page`` stored as the default, in order."""
    gas = []
    for index, chunk in enumerate(page_chunks(page)):
        fn = (nft.functions.setDefaultAnimationPage if index == 0
              else nft.functions.appendDefaultAnimationPage)
        gas.append(_gas_used(nft, fn(chunk)))
    return gas


def _mint(nft: Contract, page: str) -> tuple[int, int]:
    """(gas used, token id) of one mint carrying ``page`` (empty: the default applies)."""
    receipt = send_transaction(nft.w3, OWNER, nft.functions.mint(
        RECIPIENT, b"\x04" + b"\x11" * 200, "libpam-web3:0x0:nonce", "VM", "", page, 0),
        poll_latency=0.01)
    (minted,) = nft.events.CredentialMinted().process_receipt(receipt, errors=DISCARD)
    return int(receipt["gasUsed"]), int(minted["args"]["tokenId"])


def measure_size(nft: Contract, size_kib: int) -> dict[str, Any]:
    """All figures for one page size; each mint is measured from the same state (same next
    token id, same recipient balance), so they differ only by the page."""
    page = base64.b64encode(synthetic_page(size_kib * KIB)).decode("ascii")
    snapshot = _snapshot(nft.w3)
    mint_inline = None
    try:
        if size_kib <= INLINE_MAX_KIB:
            mint_inline, _ = _mint(nft, page)
            _revert(nft.w3, snapshot)
            snapshot = _snapshot(nft.w3)
        parts = _store_default(nft, page)
        mint_default, token_id = _mint(nft, "")
        call = nft.functions.tokenURI(token_id)._encode_transaction_data()
        token_uri = int(nft.w3.eth.estimate_gas({"to": nft.address, "data": call}))
        other = base64.b64encode(synthetic_page(size_kib * KIB)[::-1]).decode("ascii")
        replace = sum(_store_default(nft, other))
        turn_off = _gas_used(nft, nft.functions.setDefaultAnimationPage(""))
    finally:
        _revert(nft.w3, snapshot)
    set_default = sum(parts)
    saved = mint_inline - mint_default if mint_inline is not None else 0
    return {
        "html_bytes": size_kib * KIB, "base64_bytes": len(page),
        "set_default_gas": set_default, "set_default_txs": len(parts),
        "largest_tx_gas": max(parts), "mint_inline_gas": mint_inline,
        "mint_default_gas": mint_default, "token_uri_call_gas": token_uri,
        "replace_default_gas": replace, "turn_off_gas": turn_off,
        "break_even_mints": math.ceil(set_default / saved) if saved > 0 else None,
    }


def measure(workdir: Path, sizes: list[int]) -> dict[str, Any]:
    anvil = start_anvil(workdir / "anvil")
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        address, _ = deploy_contract(w3, OWNER, "AccessCredentialNFT", "Bench", "BNC", "")
        nft = w3.eth.contract(address=to_checksum_address(address),
                              abi=load_abi("AccessCredentialNFT"))
        _mint(nft, "")  # token 0 writes zeros to fresh slots: measure from token 1 on
        snapshot = _snapshot(w3)
        empty_no_default, _ = _mint(nft, "")
        _revert(w3, snapshot)
        rows = [measure_size(nft, size) for size in sizes]
        block_gas_limit = int(w3.eth.get_block("latest")["gasLimit"])
    finally:
        anvil.stop()
    return {"chain": "anvil", "block_gas_limit": block_gas_limit,
            "mint_empty_no_default_gas": empty_no_default, "pages": rows}


def render(doc: dict[str, Any]) -> str:
    lines = [f"mint with an empty page and no default: {doc['mint_empty_no_default_gas']:,} gas "
             f"(block gas limit {doc['block_gas_limit']:,})",
             "html KiB | base64 B | set default (once) | txs | largest tx |    replace |    off | "
             "mint inline | mint, default used | tokenURI call | break-even mints"]
    for row in doc["pages"]:
        inline = "-" if row["mint_inline_gas"] is None else f"{row['mint_inline_gas']:,}"
        lines.append(f"{row['html_bytes'] // KIB:>8} | {row['base64_bytes']:>8} | "
                     f"{row['set_default_gas']:>18,} | {row['set_default_txs']:>3} | "
                     f"{row['largest_tx_gas']:>10,} | {row['replace_default_gas']:>10,} | "
                     f"{row['turn_off_gas']:>6,} | {inline:>11} | "
                     f"{row['mint_default_gas']:>18,} | {row['token_uri_call_gas']:>13,} | "
                     f"{row['break_even_mints']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mint_gas",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=kib_list, default=[2, 8, 16],
                        help="page sizes in KiB, comma-separated (default 2,8,16)")
    add_output_options(parser, workdir_help="keep anvil's log here")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mint-gas-") as scratch:
            doc = measure(args.workdir or Path(scratch), args.sizes)
    except (BlockhostError, TransactionFailed, OSError) as exc:
        print(f"python -m bench.mint_gas: {exc}", file=sys.stderr)
        return 1
    doc["command"] = " ".join(["python -m bench.mint_gas", *(sys.argv[1:] if argv is None else argv)])
    if args.json:
        print_json(doc)
        report_console(True, width=140).print(render(doc), highlight=False)
    else:
        print(render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
