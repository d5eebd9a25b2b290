"""A log emitter on an anvil chain, for tests and drills: many cheap, distinct logs from one
tiny contract installed with ``anvil_setCode`` (what range splitting, size refusals and the
prefetcher are tested against), without deploying or buying anything."""

from __future__ import annotations

from typing import Any

import requests

#: topic0 of every log the emitter writes (an arbitrary constant, not a real event's hash).
EMITTER_TOPIC = "0x" + "b1" * 32
EMITTER_ADDRESS = "0x00000000000000000000000000000000000b10c5"
_EMITTER_CODE = (
    "0x600035806000527f" + "b1" * 32 + "60206000a200"
)  # LOG2(data=word0, topics=[EMITTER_TOPIC, word0]) where word0 = calldata[0:32]


def install_log_emitter(url: str, address: str = EMITTER_ADDRESS) -> str:
    """Put the emitter's runtime code at ``address`` on an anvil chain (anvil_setCode)."""
    _rpc(url, "anvil_setCode", address, _EMITTER_CODE)
    return address


def emit_logs(url: str, per_block: list[int], *, start_value: int = 0,
              address: str = EMITTER_ADDRESS) -> int:
    """Mine one block per entry of ``per_block`` holding that many emitter logs (0 = empty).

    Each log carries a distinct value (topic1 and data) counting up from ``start_value``;
    returns the next unused value. Uses anvil's unlocked first dev account.
    """
    sender = _rpc(url, "eth_accounts")[0]
    _rpc(url, "evm_setAutomine", False)
    value = start_value
    try:
        for count in per_block:
            for _ in range(count):
                _rpc(url, "eth_sendTransaction", {"from": sender, "to": address,
                                                  "data": "0x" + value.to_bytes(32, "big").hex(),
                                                  "gas": hex(60_000)})
                value += 1
            _rpc(url, "evm_mine")
    finally:
        _rpc(url, "evm_setAutomine", True)
    return value


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                    "params": list(params)}, timeout=30).json()
    if body.get("error"):
        raise RuntimeError(f"{method}: {body['error']}")
    return body.get("result")
