"""The signer's web3, on the listener's RPC client: the same failover, chain-id check and
URL redaction for writes as for reads.

A plain ``HTTPProvider`` talks to one URL, puts that URL (and any API key in it) into its
exceptions, and believes whatever chain id the node reports. Here every call goes through
:class:`~listener.chain.rpc.RpcClient`: each endpoint must serve ``chain_id`` before it is
used, a dead or wrong one is failed over, and errors name endpoints without keys.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, cast

from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from listener.chain.rpc import RpcClient, RpcError
from listener.errors import BlockhostError


class FailoverProvider(JSONBaseProvider):
    """A web3 provider whose transport is an :class:`RpcClient`.

    A node's refusal (an error reply) goes back to web3 as an error reply, so web3 raises
    what it always raises (``ContractLogicError``, ``Web3RPCError``); transport failures
    that outlast the client's retries and failovers raise its ``TransientRpcError``."""

    def __init__(self, rpc: RpcClient) -> None:
        super().__init__()
        self.rpc = rpc
        self._ids = itertools.count(1)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._ids)
        # web3's own JSON encoder turns HexBytes and friends into JSON-ready values
        plain = json.loads(self.encode_rpc_request(method, params))["params"]
        try:
            result = self.rpc.call(str(method), *plain)
        except RpcError as exc:
            error: dict[str, Any] = {"code": exc.code if exc.code is not None else -32000,
                                     "message": exc.rpc_message}
            if exc.data is not None:
                error["data"] = exc.data
            return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "error": error})
        return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.rpc.call("eth_chainId")
        except BlockhostError:
            if show_traceback:
                raise
            return False
        return True
