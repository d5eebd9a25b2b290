"""Talking to a test chain the way a plain JSON-RPC client does (no web3 in between)."""

from __future__ import annotations

from typing import Any

import requests


def json_rpc(url: str, method: str, *params: object) -> Any:
    """The result of one JSON-RPC call; fails the test on an error reply."""
    reply = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                     "params": list(params)}, timeout=10).json()
    assert "error" not in reply, reply
    return reply["result"]
