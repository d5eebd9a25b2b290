"""Log decoding and journaling: synthetic raw logs (built with eth_abi) into a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import to_checksum_address as eth_utils_checksum
from hypothesis import given
from hypothesis import strategies as st

from listener.chain.events import EVENT_TOPICS, TOPIC_TO_EVENT, decode_log
from listener.chain.journal import Store
from listener.reconcile.decide import SubscriptionState
from listener.reconcile.progress import Progress, ProgressStore

CONTRACT = "0x" + "11" * 20
SUBSCRIBER = "0x" + "22" * 20


def topic_int(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def topic_addr(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def raw_log(name: str, topics: list[str], data: bytes, *, block: int = 10, index: int = 0,
            block_hash: str | None = None, address: str = CONTRACT) -> dict:
    return {
        "blockNumber": hex(block), "blockHash": block_hash or "0x" + f"{block:064x}",
        "transactionHash": "0x" + f"{block * 1000 + index:064x}", "logIndex": hex(index),
        "address": address, "topics": [EVENT_TOPICS[name], *topics], "data": "0x" + data.hex(),
    }


def created(sub_id: int, expires: int, blob: bytes = b"\x01\x02", **kw: object) -> dict:
    data = encode(["uint256", "uint256", "address", "bytes"], [expires, 500, CONTRACT, blob])
    return raw_log("SubscriptionCreated", [topic_int(sub_id), topic_int(1), topic_addr(SUBSCRIBER)],
                   data, **kw)


def extended(sub_id: int, new_expires: int, **kw: object) -> dict:
    data = encode(["uint256", "uint256", "address"], [new_expires, 500, CONTRACT])
    return raw_log("SubscriptionExtended", [topic_int(sub_id), topic_int(1), topic_addr(SUBSCRIBER)],
                   data, **kw)


class TestDecode:
    def test_signatures_match_spec(self) -> None:
        assert "SubscriptionCreated" in TOPIC_TO_EVENT.values()
        # keccak("PlanCreated(uint256,string,uint256)") is fixed by the deployed contract
        assert len(EVENT_TOPICS) == len(TOPIC_TO_EVENT)

    def test_created(self) -> None:
        entry = decode_log(created(7, 1234, b"\xff" * 100), contract=CONTRACT)
        assert entry.rejected is None
        assert entry.name == "SubscriptionCreated"
        assert entry.subscription_id == 7
        assert entry.args["subscriber"].lower() == SUBSCRIBER
        assert entry.args["userEncrypted"] == b"\xff" * 100

    def test_plan_with_hostile_name(self) -> None:
        name = "gold\"; rm -rf / #\n${x}"
        data = encode(["string", "uint256"], [name, 100])
        entry = decode_log(raw_log("PlanCreated", [topic_int(3)], data))
        assert entry.args["name"] == name

    @pytest.mark.parametrize(
        ("mutate", "reason"),
        [
            (lambda log: log.update(address="0x" + "33" * 20), "another contract"),
            (lambda log: log.update(topics=[]), "anonymous"),
            (lambda log: log["topics"].__setitem__(0, "0x" + "00" * 32), "unknown event"),
            (lambda log: log.update(data="0x1234"), "undecodable"),
            (lambda log: log["topics"].pop(), "undecodable"),
        ],
    )
    def test_bad_logs_are_rejected_not_raised(self, mutate, reason: str) -> None:
        log = created(1, 10)
        mutate(log)
        entry = decode_log(log, contract=CONTRACT)
        assert entry.rejected is not None and reason in entry.rejected

    def test_oversized_payload_keeps_the_paid_facts(self) -> None:
        entry = decode_log(created(1, 10, b"x" * 10_000), contract=CONTRACT)
        assert entry.rejected is None
        assert entry.args["userEncrypted"] == b""
        assert entry.args["userEncryptedDropped"] == 10_000


class TestJournal:
    def test_events_facts_and_cursor_in_one_transaction(self, tmp_path: Path) -> None:
        store = Store.open(tmp_path / "db.sqlite")
        logs = [decode_log(created(1, 100, index=0)), decode_log(extended(1, 200, index=1))]
        new = store.journal_batch(logs, to_block=10, to_hash="0xaa", to_timestamp=50,
                                  block_times={})
        assert new == 2
        sub = store.subscription(1)
        assert sub is not None and sub.expires_at == 200 and sub.user_encrypted == b"\x01\x02"
        state = store.chain_state()
        assert (state.cursor, state.cursor_hash, state.chain_time) == (10, "0xaa", 50)

    def test_replay_changes_nothing(self, tmp_path: Path) -> None:
        store = Store.open(tmp_path / "db.sqlite")
        logs = [decode_log(created(1, 100)), decode_log(extended(1, 200, index=1))]
        store.journal_batch(logs, to_block=10, to_hash="0xaa", to_timestamp=50, block_times={})
        progress = ProgressStore(store.conn)
        progress.save(1, Progress(), Progress(state=SubscriptionState.ACTIVE, token_id=4))
        again = store.journal_batch(logs[:1], to_block=10, to_hash="0xaa", to_timestamp=50,
                                    block_times={})
        assert again == 0
        sub = store.subscription(1)
        assert sub is not None and sub.expires_at == 200
        assert progress.of(1) == Progress(state=SubscriptionState.ACTIVE, token_id=4)

    def test_rollback_keeps_cursor_and_events_together(self, tmp_path: Path) -> None:
        store = Store.open(tmp_path / "db.sqlite")
        bad = decode_log(created(1, 100))._replace(args={})  # a fact that cannot be applied
        with pytest.raises(KeyError):
            store.journal_batch([bad], to_block=10, to_hash="0xaa", to_timestamp=50,
                                block_times={})
        assert store.event_count() == 0
        assert store.chain_state().cursor is None

    def test_unknown_subscription_extension_is_marked(self, tmp_path: Path) -> None:
        store = Store.open(tmp_path / "db.sqlite")
        store.journal_batch([decode_log(extended(9, 200))], to_block=10, to_hash="0xaa",
                            to_timestamp=50, block_times={})
        row = store.conn.execute("SELECT rejected FROM events").fetchone()
        assert "unknown subscription" in row[0]


class TestReplayRefold:
    """A replay that fills a gap re-derives each touched subscription from the whole journal."""

    @staticmethod
    def cancelled(sub_id: int, **kw: object) -> dict:
        return raw_log("SubscriptionCancelled", [topic_int(sub_id), topic_int(1),
                                                 topic_addr(SUBSCRIBER)], b"", **kw)

    def history(self) -> list:
        logs = []
        for i in range(1, 31):
            logs.append(decode_log(created(i, 1000 + i, block=10, index=i)))
            logs.append(decode_log(extended(i, 5000 + i, block=20, index=i)))
            if i % 3 == 0:
                logs.append(decode_log(self.cancelled(i, block=30, index=i)))
        return logs

    @staticmethod
    def facts(store: Store) -> list[tuple]:
        return [(s.id, s.expires_at, s.cancelled, s.cancelled_at, s.created_block,
                 s.updated_block) for s in store.subscriptions()]

    def test_gap_filled_late_gives_the_facts_of_an_unbroken_journal(self, tmp_path: Path) -> None:
        logs = self.history()
        times = {10: 100, 20: 200, 30: 300}
        whole = Store.open(tmp_path / "whole.sqlite")
        for block in (10, 20, 30):
            whole.journal_batch([e for e in logs if e.block_number == block], to_block=block,
                                to_hash=f"0x{block:064x}", to_timestamp=times[block],
                                block_times=times)
        # the node lost every even purchase: their extensions and cancellations were
        # journaled first, as "unknown subscription"
        missing = [e for e in logs if e.name == "SubscriptionCreated" and e.subscription_id % 2 == 0]
        gappy = Store.open(tmp_path / "gappy.sqlite")
        for block in (10, 20, 30):
            gappy.journal_batch([e for e in logs if e.block_number == block and e not in missing],
                                to_block=block, to_hash=f"0x{block:064x}",
                                to_timestamp=times[block], block_times=times)
        assert len(gappy.subscriptions()) == 15
        assert gappy.journal_replayed(missing, block_times=times) == 15
        assert self.facts(gappy) == self.facts(whole)
        rejected = gappy.conn.execute(
            "SELECT COUNT(*) FROM events WHERE rejected IS NOT NULL").fetchone()[0]
        assert rejected == 0


class TestJournalSchema:
    """Migration 6 rebuilt ``events`` with its identity index in chain order."""

    def test_a_version_5_journal_migrates_with_every_row(self, tmp_path: Path) -> None:
        from listener.chain.journal_schema import MIGRATIONS
        from provisioner.storage.sqlite_db import connect, migrate

        path = tmp_path / "db.sqlite"
        conn = connect(path)
        migrate(conn, "listener", MIGRATIONS[:5])
        conn.execute("INSERT INTO events (block_number, block_hash, tx_hash, log_index, address,"
                     " name, subscription_id, plan_id, args, rejected, applied, block_time)"
                     " VALUES (10, '0xaa', '0xt1', 0, '0xc', 'SubscriptionCreated', 1, 1, '{}',"
                     " NULL, 1, 50), (11, '0xbb', '0xt2', 3, '0xc', 'unknown', NULL, NULL,"
                     " '{}', 'log from another contract', 0, NULL)")
        conn.commit()
        before = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        conn.close()

        store = Store.open(path)
        after = store.conn.execute(
            "SELECT id, block_number, block_hash, tx_hash, log_index, address, name,"
            " subscription_id, plan_id, args, rejected, applied, block_time"
            " FROM events ORDER BY id").fetchall()
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        indexes = {r[0]: r[1] for r in store.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}
        assert "events_block" not in indexes
        assert "WHERE applied = 0" in (indexes["events_unapplied"] or "")
        assert store.unapplied_blocks(20) == {11: "0xbb"}

    def test_identity_is_still_unique(self, tmp_path: Path) -> None:
        import sqlite3

        store = Store.open(tmp_path / "db.sqlite")
        row = ("0xaa", "0xt", "0xc", "x", "{}")
        insert = ("INSERT INTO events (block_number, block_hash, tx_hash, log_index, address,"
                  " name, args) VALUES (10, ?, ?, 0, ?, ?, ?)")
        store.conn.execute(insert, row)
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(insert, row)
        # the same position on another fork is another event
        store.conn.execute(insert, ("0xbb", *row[1:]))

    def test_lookups_by_identity_use_the_index(self, tmp_path: Path) -> None:
        store = Store.open(tmp_path / "db.sqlite")
        plan = " ".join(str(r[3]) for r in store.conn.execute(
            "EXPLAIN QUERY PLAN UPDATE events SET rejected = 'x'"
            " WHERE block_number = 1 AND log_index = 2 AND block_hash = '0xaa'"))
        assert "USING INDEX" in plan and "SCAN" not in plan


class TestCreatedFastPath:
    """The hand decoder of SubscriptionCreated must agree with eth_abi on everything."""

    @staticmethod
    def created_data(expires: int, paid: int, token: bytes, blob: bytes) -> bytes:
        from eth_abi import encode

        return encode(["uint256", "uint256", "address", "bytes"], [expires, paid, token, blob])

    @given(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.binary(min_size=20,
           max_size=20), st.binary(max_size=300))
    def test_agrees_with_eth_abi(self, expires: int, paid: int, token: bytes, blob: bytes) -> None:
        from eth_abi import decode as abi_decode

        from listener.chain.events import _decode_created_data

        data = self.created_data(expires, paid, token, blob)
        fast = _decode_created_data(data)
        slow = abi_decode(["uint256", "uint256", "address", "bytes"], data)
        assert fast is not None
        assert (fast["expiresAt"], fast["paidAmount"], fast["userEncrypted"]) == (
            slow[0], slow[1], slow[3])
        assert fast["paymentToken"].lower() == slow[2].lower()

    @given(st.binary(max_size=400))
    def test_garbage_never_raises(self, data: bytes) -> None:
        from listener.chain.events import _decode_created_data

        result = _decode_created_data(data)
        assert result is None or isinstance(result["userEncrypted"], bytes)

    def test_non_canonical_encodings_fall_back(self) -> None:
        from listener.chain.events import _decode_created_data

        data = bytearray(self.created_data(1, 2, b"\x11" * 20, b"abc"))
        dirty_padding = bytes(data[:-1]) + b"\x01"
        assert _decode_created_data(dirty_padding) is None
        dirty_address = bytearray(data)
        dirty_address[2 * 32] = 1
        assert _decode_created_data(bytes(dirty_address)) is None
        assert _decode_created_data(bytes(data[:-32])) is None


class TestStaticDataFastPath:
    """The word-by-word decoder of one-word-only data against eth_abi: equal values when it
    decodes, None (eth_abi then judges) for everything else, never a different verdict."""

    STATIC_EVENTS = ("SubscriptionExtended", "PrimaryStablecoinSet", "FundsWithdrawn")

    @staticmethod
    def reference(types: tuple[str, ...], data: bytes) -> list | None:
        from eth_abi import decode as abi_decode

        try:
            values = abi_decode(list(types), data)
        except Exception:  # noqa: BLE001 - any eth_abi refusal
            return None
        return [eth_utils_checksum(v) if t == "address" else v for t, v in zip(types, values, strict=True)]

    @given(st.data())
    def test_canonical_data_decodes_like_eth_abi(self, data: st.DataObject) -> None:
        from listener.chain.events import EVENT_ABI, _decode_static_data

        name = data.draw(st.sampled_from(self.STATIC_EVENTS))
        types = tuple(t for _, t in EVENT_ABI[name][1])
        values = [data.draw(st.binary(min_size=20, max_size=20)) if t == "address"
                  else data.draw(st.booleans()) if t == "bool"
                  else data.draw(st.integers(0, 2 ** int(t[4:]) - 1)) for t in types]
        encoded = encode(list(types), values)
        assert _decode_static_data(types, encoded) == self.reference(types, encoded)
        assert _decode_static_data(types, encoded) is not None

    @given(types=st.lists(st.sampled_from(["uint256", "uint8", "address", "bool", "uint64"]),
                          min_size=1, max_size=3).map(tuple),
           words=st.lists(st.sampled_from([bytes(32), b"\x01".rjust(32, b"\0"),
                                           b"\x02".rjust(32, b"\0"), b"\xff" * 32,
                                           b"\x01" + bytes(31), b"\x07" * 20 + bytes(12),
                                           bytes(12) + b"\x07" * 20, b"\x01" * 32]),
                          min_size=0, max_size=4),
           tail=st.binary(max_size=40))
    def test_any_data_gets_eth_abis_verdict_or_none(self, types: tuple[str, ...],
                                                    words: list[bytes], tail: bytes) -> None:
        from listener.chain.events import _decode_static_data

        blob = b"".join(words) + tail
        ours = _decode_static_data(types, blob)
        if ours is not None:
            assert ours == self.reference(types, blob)

    def test_non_canonical_encodings_fall_back(self) -> None:
        from listener.chain.events import _decode_static_data

        types = ("uint256", "uint256", "address")
        good = encode(list(types), [1, 2, b"\x11" * 20])
        assert _decode_static_data(types, good) == [1, 2, eth_utils_checksum(b"\x11" * 20)]
        assert _decode_static_data(types, good + bytes(32)) is None  # trailing word
        assert _decode_static_data(types, good[:-1]) is None
        dirty = bytearray(good)
        dirty[64] = 1  # the address word's padding
        assert _decode_static_data(types, bytes(dirty)) is None
        assert _decode_static_data(("uint8",), (256).to_bytes(32, "big")) is None
        assert _decode_static_data(("bool",), (2).to_bytes(32, "big")) is None
        assert _decode_static_data(("string",), bytes(32)) is None

    def test_extension_logs_decode_through_it(self) -> None:
        log = extended(7, 1_900_000_123)
        decoded = decode_log(log, contract=CONTRACT)
        assert decoded.rejected is None
        assert decoded.args == {"subscriptionId": 7, "planId": 1,
                                "extendedBy": eth_utils_checksum(SUBSCRIBER),
                                "newExpiresAt": 1_900_000_123, "paidAmount": 500,
                                "paymentToken": eth_utils_checksum(CONTRACT)}


class TestChecksum:
    """The decoder's compiled EIP-55 (cchecksum) against eth_utils' reference one."""

    @given(st.binary(min_size=20, max_size=20))
    def test_agrees_with_eth_utils(self, raw: bytes) -> None:
        from listener.chain.events import checksum_address, to_checksum_address

        want = eth_utils_checksum(raw)
        assert checksum_address(raw) == want
        assert checksum_address("0x" + raw.hex()) == want
        assert checksum_address("0x" + raw.hex().upper()) == want
        assert to_checksum_address(raw) == want

    @pytest.mark.parametrize("bad", ["0x123", "0x" + "g" * 40, b"\x00" * 19, " 0x" + "ab" * 20])
    def test_malformed_addresses_raise_value_error(self, bad: object) -> None:
        from listener.chain.events import checksum_address

        with pytest.raises(ValueError):
            checksum_address(bad)


class TestFastPath:
    """decode_log's SubscriptionCreated fast path against the strict decoder."""

    @staticmethod
    def same(log: dict) -> None:
        from listener.chain.events import _fast_created, args_json, decode_log_strict

        fast = _fast_created(log, CONTRACT)
        strict = decode_log_strict(log, contract=CONTRACT)
        if fast is None:
            return  # the strict path decides alone
        assert strict.rejected is None and fast.rejected is None
        assert (fast.block_number, fast.block_hash, fast.tx_hash, fast.log_index,
                fast.address, fast.name, fast.args) == (
            strict.block_number, strict.block_hash, strict.tx_hash, strict.log_index,
            strict.address, strict.name, strict.args)
        assert fast.args_text == args_json(strict.args)  # byte-identical journal text

    @given(sub_id=st.integers(0, 2**256 - 1), plan=st.integers(0, 2**256 - 1),
           expires=st.integers(0, 2**256 - 1), paid=st.integers(0, 2**256 - 1),
           token=st.binary(min_size=20, max_size=20), blob=st.binary(max_size=600),
           subscriber=st.binary(min_size=20, max_size=20), upper=st.booleans())
    def test_valid_logs_decode_identically(self, sub_id: int, plan: int, expires: int,
                                           paid: int, token: bytes, blob: bytes,
                                           subscriber: bytes, upper: bool) -> None:
        data = encode(["uint256", "uint256", "address", "bytes"], [expires, paid, token, blob])
        log = raw_log("SubscriptionCreated", [topic_int(sub_id), topic_int(plan),
                                              topic_addr("0x" + subscriber.hex())], data)
        if upper:
            log["data"] = "0x" + log["data"][2:].upper()
            log["topics"] = [t if i == 0 else "0x" + t[2:].upper()
                             for i, t in enumerate(log["topics"])]
        from listener.chain.events import _fast_created

        fast = _fast_created(log, CONTRACT)
        assert fast is not None
        self.same(log)
        # the reference EIP-55 (eth_utils), not only the strict path, which shares our helper
        assert fast.args["subscriber"] == eth_utils_checksum(subscriber)
        assert fast.args["paymentToken"] == eth_utils_checksum(token)

    @given(position=st.integers(0, 700), junk=st.sampled_from(["_", " ", "g", "0", "1", "F"]),
           field=st.sampled_from(["data", "t1", "t2", "t3"]))
    def test_mutated_logs_get_the_strict_verdict(self, position: int, junk: str,
                                                 field: str) -> None:
        data = encode(["uint256", "uint256", "address", "bytes"], [5, 6, CONTRACT, b"\x01" * 40])
        log = raw_log("SubscriptionCreated", [topic_int(1), topic_int(2), topic_addr(SUBSCRIBER)],
                      data)
        if field == "data":
            text = log["data"]
            log["data"] = text[:position] + junk + text[position + 1:]
        else:
            index = int(field[1])
            text = log["topics"][index]
            log["topics"][index] = text[:position % 66] + junk + text[position % 66 + 1:]
        self.same(log)
