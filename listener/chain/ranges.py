"""Adaptive ``eth_getLogs`` block ranges: pure logic, no I/O.

Providers refuse ranges that are too wide (a fixed block-span limit) or too dense (a cap on
the number of logs / response size), each with its own error text. ``parse_range_error`` turns
such a text into a :class:`RangeHint`; :class:`RangeController` picks the next span: it takes a
provider's suggestion when it is genuinely smaller than the request, halves otherwise, never
retries a span that a block-span limit refused, and grows back slowly after successes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from listener.errors import BlockhostError

HintKind = Literal["block_range", "result_size"]


@dataclass(frozen=True)
class RangeHint:
    """What a provider's refusal tells us.

    ``kind`` is ``block_range`` for a fixed span limit (it holds for every later request too)
    and ``result_size`` when the range held too many logs (it depends on the blocks).
    ``suggested_from``/``suggested_to`` is an explicit range the provider proposed;
    ``max_span`` a span limit (in blocks) stated in the text.
    """

    kind: HintKind
    suggested_from: int | None = None
    suggested_to: int | None = None
    max_span: int | None = None


class LogRangeError(BlockhostError):
    """Even a one-block ``eth_getLogs`` request is refused: the range cannot shrink further."""

    def __init__(self, block: int, detail: str) -> None:
        super().__init__(
            f"eth_getLogs for the single block {block} is still refused as too large "
            f"({detail}); use an RPC endpoint without a result cap for this contract"
        )
        self.block = block


# -- parsing provider error texts ----------------------------------------------------------

_NUM = r"(0x[0-9a-fA-F]+|\d[\d,_]*)"
_PAIR = re.compile(r"\[\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\]")
_DASH_PAIR = re.compile(r"range\s+(?:of\s+)?" + r"(\d+)\s*-\s*(\d+)", re.IGNORECASE)

#: Texts that mean "too many results / too large a response" (depends on the blocks' content).
_RESULT_SIZE = re.compile(
    r"more than \d[\d,_]* results|response size (?:exceeded|is larger|should not)|"
    r"response (?:is )?too (?:large|big)|exceeds? max(?:imum)? results|"
    r"logs? matched by query exceeds|too many (?:logs|results)|query timeout exceeded|"
    r"result(?:s)? (?:set )?(?:is )?too large|payload too large|query returned more than|"
    r"max(?:imum)? (?:number of )?results",
    re.IGNORECASE,
)
#: Texts that mean "the block span itself is above the provider's limit".
_BLOCK_RANGE = re.compile(
    r"blocks? range|range (?:is )?too (?:large|wide|big)|blocks? distance|range limit|"
    r"limited to a [\d,_]+k? (?:blocks? )?range|ranges? over \d|exceeds? (?:the )?max(?:imum)? "
    r"(?:block )?range|too many blocks|range .*exceeds limit|max(?:imum)? range",
    re.IGNORECASE,
)
#: Texts that look like a range complaint but mean the node is behind or the request is wrong.
_NOT_RANGE = re.compile(
    r"beyond (?:the )?(?:current )?head|invalid block range|after last accepted|"
    r"header not found|unknown block|fromBlock .*(?:greater|after|>) ?.*toBlock",
    re.IGNORECASE,
)
#: Span limits stated in blocks, e.g. "limited to a 10,000 range", "up to a 2K block range",
#: "max: 5000", "blocks distance: 3000", "exceeds limit of 10000" (only in a block-range text).
_SPAN_PATTERNS = (
    re.compile(r"limited to (?:a |an )?(\d[\d,_]*)(k?)\s*(?:-?\s*blocks?)?\s*range", re.I),
    re.compile(r"up to (?:a |an )?(\d[\d,_]*)(k?)\s*block range", re.I),
    re.compile(r"(?:block )?range (?:limit|max(?:imum)?)(?: is| of)?:?\s*(\d[\d,_]*)(k?)", re.I),
    re.compile(r"max(?:imum)? (?:block )?range(?: is| of)?:?\s*(\d[\d,_]*)(k?)", re.I),
    re.compile(r"blocks? distance:?\s*(\d[\d,_]*)(k?)", re.I),
    re.compile(r"ranges? over (\d[\d,_]*)(k?) blocks", re.I),
    re.compile(r"greater than (\d[\d,_]*)(k?) (?:blocks? )?max", re.I),
    re.compile(r"exceeds? (?:the )?limit of (\d[\d,_]*)(k?)", re.I),
    re.compile(r"\bmax:?\s*(\d[\d,_]*)(k?)\b", re.I),
)


def _int(text: str) -> int:
    text = text.replace(",", "").replace("_", "")
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _data_range(data: Any) -> tuple[int, int] | None:
    """Some providers (Infura) put the suggested range in ``error.data`` as {from, to}."""
    if isinstance(data, dict) and "from" in data and "to" in data:
        try:
            return _int(str(data["from"])), _int(str(data["to"]))
        except ValueError:
            return None
    return None


def parse_range_error(message: str, data: Any = None) -> RangeHint | None:
    """Classify a provider's refusal; ``None`` when the text is not a range/size complaint."""
    text = message or ""
    if _NOT_RANGE.search(text):
        return None
    result_size = bool(_RESULT_SIZE.search(text))
    block_range = bool(_BLOCK_RANGE.search(text))
    suggestion = _data_range(data)
    if suggestion is None:
        match = _PAIR.search(text) or _DASH_PAIR.search(text)
        if match:
            suggestion = _int(match.group(1)), _int(match.group(2))
    if not (result_size or block_range):
        return None
    span: int | None = None
    if block_range and not result_size:
        for pattern in _SPAN_PATTERNS:
            found = pattern.search(text)
            if found:
                span = _int(found.group(1)) * (1000 if found.group(2) else 1)
                break
    kind: HintKind = "result_size" if result_size else "block_range"
    if suggestion is not None and suggestion[1] < suggestion[0]:
        suggestion = None
    return RangeHint(
        kind=kind,
        suggested_from=suggestion[0] if suggestion else None,
        suggested_to=suggestion[1] if suggestion else None,
        max_span=span if span and span > 0 else None,
    )


# -- the controller ------------------------------------------------------------------------


#: Logs per eth_getLogs response the listener aims for: a denser stretch of chain shrinks the
#: next request, so memory stays bounded (~55 MB per 10,000 logs while parsed) however busy
#: the contract is; see README "Benchmarks" (peak RSS).
TARGET_LOGS_PER_REQUEST = 10_000


class RangeController:
    """Chooses how many blocks the next ``eth_getLogs`` asks for.

    Not thread-safe: one controller per scanning loop. ``size`` starts at ``initial`` (default
    ``max_block_range``). A block-span refusal also lowers ``ceiling`` for good, so growth never
    walks back into a limit the provider already stated; result-size refusals only shrink
    ``size`` because the next blocks may be sparser.
    """

    def __init__(
        self,
        max_block_range: int,
        *,
        initial: int | None = None,
        grow_after: int = 3,
        grow_factor: float = 1.25,
        target_logs: int | None = None,
    ) -> None:
        if max_block_range < 1:
            raise ValueError("max_block_range must be >= 1")
        if grow_after < 1 or grow_factor <= 1.0:
            raise ValueError("grow_after must be >= 1 and grow_factor > 1")
        if target_logs is not None and target_logs < 1:
            raise ValueError("target_logs must be >= 1")
        self.max_block_range = max_block_range
        self.ceiling = max_block_range
        self.size = max(1, min(initial or max_block_range, max_block_range))
        self.grow_after = grow_after
        self.grow_factor = grow_factor
        self.target_logs = target_logs
        self._streak = 0
        self._equal_tried = False
        #: Widest span served since the last refusal (a bare refusal shrinks back to it).
        self._largest_ok = 0
        #: The ceiling came from a refusal that stated no limit (growth bisects towards it).
        self._ceiling_unproven = False

    @property
    def probing(self) -> bool:
        """True while the ceiling comes from a refusal that stated no limit: the real
        limit lies somewhere at or below it, and growth bisects towards it."""
        return self._ceiling_unproven

    @classmethod
    def for_listener(cls, max_block_range: int, *, in_flight: int = 1) -> RangeController:
        """The daemon's, replay's and the benches' controller: ``chain.max_block_range``
        with the ``in_flight`` replies held at once (2 with a
        :class:`~listener.chain.prefetch.LogPrefetcher`) together about
        :data:`TARGET_LOGS_PER_REQUEST` logs."""
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        return cls(max_block_range, target_logs=max(1, TARGET_LOGS_PER_REQUEST // in_flight))

    def end_for(self, from_block: int, to_block: int) -> int:
        """Last block of the next request starting at ``from_block`` (never past ``to_block``)."""
        if to_block < from_block:
            raise ValueError(f"empty range {from_block}..{to_block}")
        return min(to_block, from_block + self.size - 1)

    def on_success(self, from_block: int, to_block: int, n_logs: int) -> None:
        """Record a served request; grow after ``grow_after`` full-size successes in a row."""
        span = to_block - from_block + 1
        self._equal_tried = False
        self._largest_ok = max(self._largest_ok, span)
        if self.target_logs is not None and n_logs > self.target_logs:
            # Dense blocks: aim the next request at about target_logs logs.
            self.size = max(1, min(self.size, span * self.target_logs // n_logs))
            self._streak = 0
            return
        if span < self.size:
            return  # clipped by to_block (tailing the head): says nothing about a bigger span
        self._streak += 1
        if self._streak < self.grow_after:
            return
        self._streak = 0
        grown = max(self.size + 1, int(self.size * self.grow_factor))
        if self._ceiling_unproven:
            # below a ceiling learned from a bare refusal: bisect towards it, so the real
            # limit is found in a few refusals instead of one block at a time
            grown = min(grown, max(self.size + 1, (self.size + self.ceiling + 1) // 2))
        if self.target_logs is not None and n_logs:
            grown = min(grown, max(self.size, span * self.target_logs // n_logs))
        self.size = min(grown, self.ceiling)

    def on_too_large(self, from_block: int, to_block: int, hint: RangeHint | None,
                     detail: str = "") -> None:
        """Shrink after a refusal of ``from_block..to_block``; raise at a single block."""
        span = to_block - from_block + 1
        self._streak = 0
        if span <= 1:
            raise LogRangeError(from_block, detail or "no smaller range exists")
        proposed = self._proposed_span(from_block, span, hint)
        if proposed is None or proposed >= span:
            if proposed == span and not self._equal_tried:
                # "Suggests the same range" or one block over an off-by-one limit: try one
                # block less once, then fall back to halving (reth#23810 loops otherwise).
                new = span - 1
                self._equal_tried = True
            else:
                new = span // 2
                if span // 2 < self._largest_ok < span:
                    new = self._largest_ok  # served a moment ago: the limit lies above it
        else:
            new = proposed
        new = max(1, new)
        self.size = new
        if hint is not None and hint.kind == "block_range":
            # A stated limit caps growth for good. A bare "range too wide" only proves that
            # this span is too wide: growth may probe up to one block less, so the controller
            # converges on the real limit instead of settling at a half.
            stated = proposed is not None and proposed < span
            self.ceiling = min(self.ceiling, new if stated else span - 1)
            self._ceiling_unproven = not stated
        self._largest_ok = 0 if self._largest_ok >= span else self._largest_ok

    @staticmethod
    def _proposed_span(from_block: int, span: int, hint: RangeHint | None) -> int | None:
        if hint is None:
            return None
        candidates: list[int] = []
        if hint.suggested_from is not None and hint.suggested_to is not None:
            start = hint.suggested_from if hint.suggested_from >= from_block else from_block
            if hint.suggested_to >= start:
                # A suggestion that starts later than asked still tells us a workable width.
                candidates.append(hint.suggested_to - start + 1)
        if hint.max_span is not None:
            candidates.append(hint.max_span)
        if not candidates:
            return None
        return min(candidates)
