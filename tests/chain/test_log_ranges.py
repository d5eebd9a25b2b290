"""Pure tests of the adaptive getLogs range controller and the provider error parser."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.chain.ranges import LogRangeError, RangeController, RangeHint, parse_range_error

# -- parsing real providers' texts -----------------------------------------------------------

ALCHEMY = ("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
           "range and no limit on the response size, or you can request any block range with a "
           "cap of 10K logs in the response. Based on your parameters, this block range should "
           "work: [0x10, 0x1f]")


@pytest.mark.parametrize(
    ("message", "data", "expected"),
    [
        (ALCHEMY, None, RangeHint("result_size", 16, 31, None)),
        ("query returned more than 10000 results. Try with this block range [0x64, 0xc7].", None,
         RangeHint("result_size", 100, 199, None)),
        ("query returned more than 10000 results", None, RangeHint("result_size")),
        ("query returned more than 10000 results", {"from": "0x1", "to": "0x5"},
         RangeHint("result_size", 1, 5, None)),
        ("eth_getLogs is limited to a 10,000 range", None,
         RangeHint("block_range", max_span=10_000)),
        ("block range too large", None, RangeHint("block_range")),
        ("block range is too wide", None, RangeHint("block_range")),
        ("eth_getLogs range (10001 blocks) exceeds limit of 10000", None,
         RangeHint("block_range", max_span=10_000)),
        ("query exceeds max results 20000, retry with the range 100-200", None,
         RangeHint("result_size", 100, 200, None)),
        ("exceed maximum block range: 5000", None, RangeHint("block_range", max_span=5000)),
        ("ranges over 10000 blocks are not supported", None,
         RangeHint("block_range", max_span=10_000)),
        ("Block range greater than 2000 max", None, RangeHint("block_range", max_span=2000)),
        ("maximum [from, to] blocks distance: 3000", None,
         RangeHint("block_range", max_span=3000)),
        ("eth_getLogs requests are limited to a 2K block range", None,
         RangeHint("block_range", max_span=2000)),
        ("Log response size exceeded", None, RangeHint("result_size")),
        ("eth_getLogs and eth_newFilter are limited to a 10,000 blocks range", None,
         RangeHint("block_range", max_span=10_000)),
        ("Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block "
         "range. Based on your parameters, this block range should work: [0x64, 0x6d]", None,
         RangeHint("block_range", 100, 109, 10)),
        ("query timeout exceeded", None, RangeHint("result_size")),
        ("Block range limit exceeded", None, RangeHint("block_range")),
        # Suggestions that run backwards are ignored, the kind is kept.
        ("query returned more than 10000 results. Try with this block range [0x20, 0x10].", None,
         RangeHint("result_size")),
    ],
)
def test_parse_provider_texts(message: str, data: object, expected: RangeHint) -> None:
    assert parse_range_error(message, data) == expected


@pytest.mark.parametrize(
    "message",
    ["header not found", "execution reverted", "rate limit exceeded", "daily request count "
     "exceeded, request rate limited", "block range extends beyond current head block",
     "invalid block range params", "unknown block", "internal error", ""],
)
def test_non_range_texts_are_not_range_errors(message: str) -> None:
    assert parse_range_error(message) is None


# -- the controller: examples ----------------------------------------------------------------


def test_starts_at_max_and_clips_to_the_requested_end() -> None:
    c = RangeController(100)
    assert c.end_for(10, 1000) == 109
    assert c.end_for(10, 50) == 50
    with pytest.raises(ValueError):
        c.end_for(10, 9)


def test_explicit_suggestion_is_taken_when_smaller() -> None:
    c = RangeController(1000)
    c.on_too_large(100, 1099, RangeHint("result_size", 100, 349))
    assert c.size == 250
    assert c.ceiling == 1000  # result-size refusals are not a permanent limit


def test_suggestion_equal_to_the_request_tries_one_less_then_halves() -> None:
    c = RangeController(1000)
    same = RangeHint("result_size", 0, 999)
    c.on_too_large(0, 999, same)
    assert c.size == 999
    c.on_too_large(0, 998, RangeHint("result_size", 0, 998))
    assert c.size == 499


def test_suggestion_larger_than_the_request_halves() -> None:
    c = RangeController(1000)
    c.on_too_large(0, 999, RangeHint("result_size", 0, 5000))
    assert c.size == 500


def test_unknown_refusal_halves() -> None:
    c = RangeController(1000)
    c.on_too_large(0, 999, None)
    assert c.size == 500
    c.on_too_large(0, 499, RangeHint("result_size"))
    assert c.size == 250


def test_one_block_over_a_stated_limit() -> None:
    c = RangeController(10_001)
    c.on_too_large(0, 10_000, RangeHint("block_range", max_span=10_000))
    assert c.size == 10_000 and c.ceiling == 10_000
    # An off-by-one provider refuses 10,000 too: one block less, not a halving.
    c.on_too_large(0, 9_999, RangeHint("block_range", max_span=10_000))
    assert c.size == 9_999 and c.ceiling == 9_999


def test_block_range_limit_caps_growth_for_good() -> None:
    c = RangeController(1000, grow_after=1, grow_factor=2.0)
    c.on_too_large(0, 999, RangeHint("block_range", max_span=300))
    assert (c.size, c.ceiling) == (300, 300)
    for start in range(0, 30_000, 300):
        c.on_success(start, start + 299, 0)
    assert c.size == 300


def test_growth_is_slow_and_bounded() -> None:
    c = RangeController(1000, initial=100, grow_after=3, grow_factor=1.25)
    c.on_success(0, 99, 0)
    c.on_success(100, 199, 0)
    assert c.size == 100
    c.on_success(200, 299, 0)
    assert c.size == 125
    for _ in range(200):
        c.on_success(0, c.size - 1, 0)
    assert c.size == 1000


def test_clipped_success_does_not_grow() -> None:
    c = RangeController(1000, initial=100, grow_after=1)
    for _ in range(10):
        c.on_success(0, 5, 0)  # tailing the head: 6-block requests
    assert c.size == 100


def test_dense_success_shrinks_towards_target_logs() -> None:
    c = RangeController(1000, target_logs=500)
    c.on_success(0, 999, 5000)
    assert c.size == 100
    for _ in range(3):
        c.on_success(0, 99, 499)
    assert c.size == 100  # growth would overshoot the target at this density


def test_single_block_still_too_large_gives_up_clearly() -> None:
    c = RangeController(10)
    with pytest.raises(LogRangeError, match=r"single block 42 .*query returned"):
        c.on_too_large(42, 42, RangeHint("result_size"), "query returned more than 10000 results")


def test_bad_arguments() -> None:
    for kwargs in ({"max_block_range": 0}, {"max_block_range": 5, "grow_after": 0},
                   {"max_block_range": 5, "grow_factor": 1.0},
                   {"max_block_range": 5, "target_logs": 0}):
        with pytest.raises(ValueError):
            RangeController(**kwargs)


# -- the controller: properties ----------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("ok"), st.integers(0, 20_000)),
        st.tuples(st.just("big"), st.sampled_from(["result_size", "block_range"]),
                  st.none() | st.integers(1, 50_000), st.none() | st.integers(-5, 50_000)),
    ),
    max_size=60,
)


@given(st.integers(1, 20_000), st.integers(1, 20_000), events)
def test_invariants_hold_for_any_history(max_range: int, initial: int, history: list) -> None:
    c = RangeController(max_range, initial=initial)
    start = 1_000
    for event in history:
        end = c.end_for(start, start + 10**7)
        span = end - start + 1
        assert span == c.size
        if event[0] == "ok":
            c.on_success(start, end, event[1])
            start = end + 1
        else:
            _, kind, max_span, offset = event
            hint = RangeHint(kind, start, None if offset is None else start + offset, max_span)
            if span == 1:
                with pytest.raises(LogRangeError):
                    c.on_too_large(start, end, hint)
                return
            c.on_too_large(start, end, hint)
            assert c.size < span  # every refusal strictly shrinks: no retry loop
        assert 1 <= c.size <= c.ceiling <= max_range


@settings(max_examples=150)
@given(
    max_range=st.integers(1, 5_000),
    limit=st.integers(1, 5_000),
    inclusive=st.booleans(),
    states_limit=st.booleans(),
    length=st.integers(1, 20_000),
)
def test_fixed_span_provider_is_covered_exactly_once(max_range: int, limit: int, inclusive: bool,
                                                     states_limit: bool, length: int) -> None:
    """A provider with a block-span limit (counted either way): contiguous, bounded retries."""
    c = RangeController(max_range)
    start, last = 0, length - 1
    covered: list[tuple[int, int]] = []
    refusals_in_a_row = 0
    while start <= last:
        end = c.end_for(start, last)
        width = end - start + 1 if inclusive else end - start
        if width > limit:
            refusals_in_a_row += 1
            assert refusals_in_a_row <= 16
            c.on_too_large(start, end, RangeHint("block_range",
                                                 max_span=limit if states_limit else None))
            continue
        refusals_in_a_row = 0
        covered.append((start, end))
        c.on_success(start, end, 0)
        start = end + 1
    assert covered[0][0] == 0 and covered[-1][1] == last
    assert all(a[1] + 1 == b[0] for a, b in pairwise(covered))


@settings(max_examples=100)
@given(
    density=st.lists(st.integers(0, 40), min_size=1, max_size=400),
    cap=st.integers(1, 60),
    max_range=st.integers(1, 500),
    suggest=st.booleans(),
)
def test_result_capped_provider_covers_or_names_the_block(density: list[int], cap: int,
                                                          max_range: int, suggest: bool) -> None:
    """A provider capping results: every block is read once, or the first over-cap block is named."""
    c = RangeController(max_range)
    start, last = 0, len(density) - 1
    seen = 0
    while start <= last:
        end = c.end_for(start, last)
        n = sum(density[start:end + 1])
        if n > cap:
            fit = start
            while fit < end and sum(density[start:fit + 2]) <= cap:
                fit += 1
            hint = RangeHint("result_size", start, fit) if suggest else RangeHint("result_size")
            if end == start:
                with pytest.raises(LogRangeError) as info:
                    c.on_too_large(start, end, hint)
                assert info.value.block == start and density[start] > cap
                assert seen == sum(density[:start])
                return
            c.on_too_large(start, end, hint)
            continue
        seen += n
        c.on_success(start, end, n)
        start = end + 1
    assert seen == sum(density)
    assert max(density) <= cap


def test_the_listener_controller_bounds_logs_per_response() -> None:
    """A dense stretch (40,000 logs in one 2,000-block answer) shrinks the next request to
    about TARGET_LOGS_PER_REQUEST logs: memory stays bounded however busy the contract is."""
    from listener.chain.ranges import TARGET_LOGS_PER_REQUEST

    c = RangeController.for_listener(2000)
    assert c.end_for(1, 10**9) == 2000
    c.on_success(1, 2000, 4 * TARGET_LOGS_PER_REQUEST)
    assert c.end_for(2001, 10**9) == 2000 + 500


def test_two_replies_in_flight_share_the_logs_budget() -> None:
    """With a prefetcher two replies are held at once: each aims at half the logs."""
    from listener.chain.ranges import TARGET_LOGS_PER_REQUEST

    c = RangeController.for_listener(2000, in_flight=2)
    c.on_success(1, 2000, 4 * TARGET_LOGS_PER_REQUEST)
    assert c.end_for(2001, 10**9) == 2000 + 250
    with pytest.raises(ValueError, match="in_flight"):
        RangeController.for_listener(2000, in_flight=0)


def test_the_scan_step_pauses_the_cyclic_gc_and_always_restores_it() -> None:
    import gc

    import pytest

    from listener.chain.scanner import _cyclic_gc_paused

    assert gc.isenabled()
    with _cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _cyclic_gc_paused():
        raise RuntimeError("a failed fetch")
    assert gc.isenabled()
    gc.disable()
    try:
        with _cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # someone else's choice is left alone
    finally:
        gc.enable()


@pytest.mark.parametrize("limit", [10_000, 6_000, 777])
def test_a_bare_refusal_converges_near_the_real_limit(limit: int) -> None:
    """'block range is too wide' with no number: the controller probes back up instead of
    keeping the first half it fell to, with a bounded number of refusals."""
    c = RangeController(100_000)
    start, refusals, spans = 0, 0, []
    while start < 5_000_000:
        end = c.end_for(start, 10**9)
        if end - start + 1 > limit:
            refusals += 1
            c.on_too_large(start, end, RangeHint("block_range"))
            continue
        c.on_success(start, end, 0)
        spans.append(end - start + 1)
        start = end + 1
    assert refusals <= 20
    assert spans[-1] > 0.8 * limit  # it settled near the limit, not at a half of it
