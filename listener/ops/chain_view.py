"""What `blockhost gc` asks the chain itself instead of the journal.

Only the listener fills the journal, so with the listener stopped its chain time stands still
and a renewal may be on chain but not journaled. `gc` therefore reads the confirmed head's time
from the RPC (the stored chain time only as a labelled fallback) and, before it stops or
destroys anything, the subscription's own expiry from the contract's ``getSubscription`` view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.abi import function_signature_to_4byte_selector

from listener.chain.rpc import RpcClient, RpcError
from listener.chain.scanner import confirmed_head
from listener.chain.source import ChainSource
from listener.config import Config
from listener.errors import BlockhostError, UserError
from listener.reconcile.decide import Facts

#: ``getSubscription(uint256) returns (planId, subscriber, expiresAt, isActive, cancelled)``
GET_SUBSCRIPTION = "0x" + function_signature_to_4byte_selector("getSubscription(uint256)").hex()
GET_SUBSCRIPTION_RETURNS = ("uint256", "address", "uint256", "bool", "bool")
#: Few retries: a GC run with no RPC falls back quickly instead of waiting out an outage.
RPC_ATTEMPTS = 3
RPC_TIMEOUT = 10.0
#: What a chain read may raise when no node answers usefully (malformed replies included).
CHAIN_ERRORS = (BlockhostError, KeyError, TypeError, ValueError)


@dataclass(frozen=True)
class ChainTime:
    """The time `gc` judges expiry by, and where it came from."""

    value: int | None
    #: "rpc" (the confirmed head, read now), "stored" (the listener's last one) or None
    source: str | None
    confirmed_block: int | None = None
    #: why the RPC was not used (None when it was)
    rpc_error: str | None = None

    def describe(self) -> str:
        """One line for the operator: the time and how far to trust it."""
        if self.source == "rpc":
            return f"chain time {self.value} (confirmed block {self.confirmed_block}, from the RPC)"
        why = f"no RPC answered: {self.rpc_error}"
        if self.source == "stored":
            return (f"chain time {self.value} is the STORED one, not live ({why}); "
                    "subscriptions are not stopped or destroyed without an on-chain check")
        return f"no chain time ({why}; the listener stored none)"


class ChainView:
    """The confirmed head's time and one subscription's facts, read from a node."""

    def __init__(self, rpc: ChainSource, *, confirmations: int | str,
                 subscription_contract: str | None) -> None:
        self._rpc = rpc
        self._confirmations = confirmations
        self._contract = subscription_contract

    def confirmed_time(self, stored: int | None = None) -> ChainTime:
        """The confirmed head's timestamp, never earlier than the ``stored`` chain time (a
        lagging node must not move gc's clock back)."""
        number = max(0, confirmed_head(self._rpc, self._confirmations,
                                       self._rpc.block_number()))
        timestamp = _quantity(self._rpc.get_block(number)["timestamp"])
        return ChainTime(max(timestamp, stored or 0), "rpc", confirmed_block=number)

    def facts(self, subscription_id: int) -> Facts | None:
        """The subscription as the contract holds it at the newest block (a renewal counts as
        soon as it is mined: reading ahead of the confirmations can only keep a VM longer);
        None when the contract does not know it. A cancellation sets ``expiresAt`` to its
        block time, which is where the grace period starts."""
        if self._contract is None:
            raise UserError("chain.subscription_contract is not set, so gc cannot check a "
                            "subscription on chain; set it in the config")
        data = GET_SUBSCRIPTION + encode(["uint256"], [subscription_id]).hex()
        try:
            raw = self._rpc.call("eth_call", {"to": self._contract, "data": data}, "latest")
        except RpcError as exc:
            if "revert" in exc.rpc_message.lower():  # SubscriptionNotFound(id)
                return None
            raise
        _plan, _subscriber, expires_at, _active, cancelled = decode(
            list(GET_SUBSCRIPTION_RETURNS), bytes.fromhex(str(raw)[2:]))
        return Facts(expires_at=int(expires_at), cancelled=bool(cancelled),
                     cancelled_at=int(expires_at) if cancelled else None)


def open_chain(config: Config, chain_id: int | None) -> ChainView:
    """A view through ``chain.rpc_urls``, checked against the configured (or the database's)
    chain id; UserError when no URL is configured."""
    rpc = RpcClient(config.chain.rpc_urls, expected_chain_id=config.chain.chain_id or chain_id,
                    attempts=RPC_ATTEMPTS, timeout=RPC_TIMEOUT)
    return ChainView(rpc, confirmations=config.chain.confirmations,
                     subscription_contract=config.chain.subscription_contract)


def read_chain_time(config: Config, *, chain_id: int | None,
                    stored: int | None) -> tuple[ChainView | None, ChainTime]:
    """The view (None when no RPC answered) and the time to judge by: the RPC's confirmed head,
    else the ``stored`` chain time, labelled as such."""
    try:
        view = open_chain(config, chain_id)
        return view, view.confirmed_time(stored)
    except CHAIN_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    return None, ChainTime(stored, "stored" if stored is not None else None, rpc_error=error)


def _quantity(value: Any) -> int:
    return value if isinstance(value, int) else int(str(value), 16)
