"""What the scanner, the prefetcher and replay need from a chain node, and nothing more.

:class:`listener.chain.rpc.RpcClient` (failover, retries, adaptive ranges) is the one real
implementation; a test or another transport plugs in by providing these five calls.
"""

from __future__ import annotations

from typing import Any, Protocol

from listener.chain.ranges import RangeController
from listener.chain.rpc import LogBatch


class ChainSource(Protocol):
    """Heads, headers and logs of one chain (the chain id already checked)."""

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (e.g. ``eth_call`` for a contract view)."""

    def block_number(self) -> int:
        """The newest head seen; never moves back because of a lagging node."""

    def head_and_block(self, number: int) -> tuple[int, dict[str, Any] | None]:
        """The head and block ``number``'s header (None if the node lacks it yet)."""

    def get_block(self, number: int | str) -> dict[str, Any]:
        """A block header by number or tag."""

    def fetch_logs(self, from_block: int, to_block: int, *, address: str | list[str] | None,
                   topics: list[Any] | None = None,
                   controller: RangeController) -> LogBatch:
        """One served ``eth_getLogs`` request starting at ``from_block``."""
