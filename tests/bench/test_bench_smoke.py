"""A tiny run of every benchmark path: they must all journal the SAME, correct events.

Correctness only: nothing here looks at how long anything took.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.emitter import EMITTER_ADDRESS, Workload, expected_event, produce
from bench.paths import PATHS, Replay, journaled_rows
from bench.runner import BenchError, PathResult, _check_same_rows, rows_digest
from listener.chain.events import EVENT_TOPICS
from listener.devkit.devchain import Anvil

EVENTS = 200
PER_BLOCK = 30  # 7 blocks, the last one partial
RANGE = 3  # several getLogs windows, the last one short


@pytest.fixture(scope="module")
def workload(module_anvil: Anvil) -> Workload:
    return produce(module_anvil, EVENTS, events_per_block=PER_BLOCK)


@pytest.fixture(scope="module")
def replay(module_anvil: Anvil, workload: Workload) -> Replay:
    return Replay(module_anvil.url, workload.address, workload.first_block, workload.last_block,
                  RANGE)


def test_emitter_mines_the_requested_shape(workload: Workload) -> None:
    assert workload.events == EVENTS
    assert workload.blocks == 7
    assert workload.address == EMITTER_ADDRESS


def test_replay_windows_cover_the_range_once(replay: Replay) -> None:
    windows = list(replay.ranges())
    covered = [b for start, end in windows for b in range(start, end + 1)]
    assert covered == list(range(replay.first_block, replay.last_block + 1))
    assert all(end - start + 1 <= RANGE for start, end in windows)


@pytest.mark.parametrize("scenario", PATHS, ids=[p.key for p in PATHS])
def test_every_path_handles_every_event(scenario, replay: Replay, tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite3"
    assert scenario.run(replay, db) == EVENTS
    if not scenario.writes_db:
        return
    rows = journaled_rows(db)
    assert len(rows) == EVENTS
    for row, subscription_id in zip(rows, range(1, EVENTS + 1), strict=True):
        (block_number, block_hash, tx_hash, log_index, address, name, sub_id, plan_id,
         args, rejected) = row
        want = expected_event(subscription_id)
        assert (name, rejected, address) == ("SubscriptionCreated", None, EMITTER_ADDRESS.lower())
        assert (sub_id, plan_id) == (subscription_id, want.plan_id)
        assert replay.first_block <= block_number <= replay.last_block
        assert block_hash.startswith("0x") and len(block_hash) == 66
        assert tx_hash.startswith("0x") and len(tx_hash) == 66
        assert log_index == (subscription_id - 1) % PER_BLOCK
        assert json.loads(args) == {
            "subscriptionId": subscription_id,
            "planId": want.plan_id,
            "subscriber": want.subscriber,
            "expiresAt": want.expires_at,
            "paidAmount": want.paid_amount,
            "paymentToken": want.payment_token,
            "userEncrypted": "0x" + want.user_encrypted.hex(),
        }


def test_sql_paths_journal_identical_rows(replay: Replay, tmp_path: Path) -> None:
    digests = {}
    for scenario in (p for p in PATHS if p.writes_db):
        db = tmp_path / f"{scenario.key}.sqlite3"
        scenario.run(replay, db)
        digests[scenario.key] = rows_digest(db)
    assert len(digests) == 5
    assert len(set(digests.values())) == 1, digests


def test_our_path_also_applies_the_facts_and_moves_the_cursor(replay: Replay,
                                                              tmp_path: Path) -> None:
    ours = next(p for p in PATHS if p.key == "ours-journal")
    db = tmp_path / "ours.sqlite3"
    ours.run(replay, db)
    conn = sqlite3.connect(db)
    try:
        subs = conn.execute("SELECT id, expires_at FROM subscriptions ORDER BY id").fetchall()
        cursor = conn.execute("SELECT cursor FROM chain_state").fetchone()[0]
    finally:
        conn.close()
    assert subs == [(i, expected_event(i).expires_at) for i in range(1, EVENTS + 1)]
    assert cursor == replay.last_block


def test_a_replay_twice_into_the_same_database_adds_nothing(replay: Replay,
                                                            tmp_path: Path) -> None:
    ours = next(p for p in PATHS if p.key == "ours-journal")
    db = tmp_path / "ours.sqlite3"
    assert ours.run(replay, db) == EVENTS
    assert ours.run(replay, db) == 0  # the persisted cursor: a rerun resumes at the end


def test_mismatched_rows_are_reported(tmp_path: Path) -> None:
    results = [PathResult(PATHS[0], digest="a"), PathResult(PATHS[2], digest="b")]
    with pytest.raises(BenchError, match="different rows"):
        _check_same_rows(results)
    _check_same_rows([PathResult(PATHS[0], digest="a"), PathResult(PATHS[2], digest="a")])


def test_the_emitted_logs_use_the_contract_event_signature(module_anvil: Anvil,
                                                           workload: Workload) -> None:
    from bench.emitter import JsonRpc

    logs = JsonRpc(module_anvil.url).call(
        "eth_getLogs", {"address": workload.address, "fromBlock": hex(workload.first_block),
                        "toBlock": hex(workload.first_block)})
    assert logs and logs[0]["topics"][0] == EVENT_TOPICS["SubscriptionCreated"]


def test_cli_runs_all_paths_and_prints_json(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_main(["--events", "60", "--events-per-block", "25", "--block-range", "2",
                       "--repeat", "2", "--json", "--workdir", str(tmp_path)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 60 and report["blocks"] == 3 and report["repeat"] == 2
    assert [p["key"] for p in report["paths"]] == [p.key for p in PATHS]
    for path in report["paths"]:
        assert path["events"] == 60 and len(path["seconds"]) == 2
        assert path["min_events_per_s"] <= path["median_events_per_s"] <= path["max_events_per_s"]
    assert report["paths"][0]["ratio_vs_baseline"] == 1.0
    medians = {p["key"]: p["median_events_per_s"] for p in report["paths"]}
    ratios = report["ratios"]
    assert set(ratios) == {"ours_vs_web3_batched", "ours_vs_eth_abi_executemany",
                           "ceiling_over_ours", "ceiling_orjson_over_ours"}
    assert ratios["ceiling_over_ours"] == pytest.approx(
        medians["ceiling"] / medians["ours-journal"], abs=0.01)
    assert list(tmp_path.iterdir()) == []  # the temp workdir is cleaned up


def test_cli_rejects_unknown_paths_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--paths", "ours-journal,bogus"])
    assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err
