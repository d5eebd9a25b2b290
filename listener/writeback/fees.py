"""EIP-1559 fee choice and fee bumping under an operator's cap. Pure functions, no I/O.

Why a cap: a fee spike must never drain the signer. Why bumps of at least 10 %: nodes
(geth, anvil, most providers) refuse a same-nonce replacement that does not raise both the
fee cap and the tip by that much ("replacement transaction underpriced").
"""

from __future__ import annotations

from dataclasses import dataclass

GWEI = 10**9

#: Nodes require a replacement to pay at least this much more (percent) on both fields.
MIN_REPLACEMENT_BUMP_PERCENT = 10


@dataclass(frozen=True)
class Fees:
    """The two EIP-1559 fee fields of one signed attempt, in wei."""

    max_fee: int
    priority_fee: int


@dataclass(frozen=True)
class FeePolicy:
    """Operator limits: ``cap`` bounds maxFeePerGas of every attempt, bumps included."""

    cap: int
    priority_fee: int
    bump_percent: int = 20

    @classmethod
    def from_gwei(cls, max_fee_gwei: float, max_priority_fee_gwei: float,
                  bump_percent: int = 20) -> FeePolicy:
        return cls(cap=int(max_fee_gwei * GWEI), priority_fee=int(max_priority_fee_gwei * GWEI),
                   bump_percent=max(bump_percent, MIN_REPLACEMENT_BUMP_PERCENT))

    def initial(self, base_fee: int) -> Fees | None:
        """Fees for a first attempt, or None while the base fee alone exceeds the cap.

        2 x base fee + tip keeps the transaction includable through several full blocks
        (the base fee rises at most 12.5 % a block); only base fee + tip is charged.
        """
        if base_fee >= self.cap:
            return None
        tip = min(self.priority_fee, self.cap)
        max_fee = min(self.cap, 2 * base_fee + tip)
        return Fees(max_fee=max_fee, priority_fee=min(tip, max_fee))

    def bump(self, old: Fees, base_fee: int) -> Fees | None:
        """Fees for a replacement of ``old``, or None if the cap leaves no valid bump."""
        need_tip = _raise_by(old.priority_fee, MIN_REPLACEMENT_BUMP_PERCENT)
        need_max = _raise_by(old.max_fee, MIN_REPLACEMENT_BUMP_PERCENT)
        tip = max(_raise_by(old.priority_fee, self.bump_percent), need_tip)
        max_fee = max(_raise_by(old.max_fee, self.bump_percent), 2 * base_fee + tip, need_max)
        max_fee = min(max_fee, self.cap)
        if max_fee < need_max or min(tip, max_fee) < need_tip:
            return None
        return Fees(max_fee=max_fee, priority_fee=min(tip, max_fee))


def _raise_by(value: int, percent: int) -> int:
    """``value`` raised by ``percent``, rounded up, and by at least 1 wei when non-zero."""
    if value == 0:
        return 0
    return max(value + 1, -(-value * (100 + percent) // 100))
