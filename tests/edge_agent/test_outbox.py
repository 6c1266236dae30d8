from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.outbox import Outbox, OutboxConfig, OutboxMode, OverflowPolicy, Ticket
from edge_agent.segments import Deferred, Segment, SegmentFormat, columns_of


def _record(n: int) -> dict[str, object]:
    return {
        "record_id": f"r{n}",
        "model": "tiny",
        "model_version": "1.0.0",
        "artifact_sha256": "a" * 64,
        "input_digest": f"d{n}",
        "output": [n, n + 0.5],
        "latency_ms": 0.25,
        "ts": 1000.0 + n,
    }


def test_records_survive_reopen_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    seqs = [outbox.append(_record(n)) for n in range(5)]
    outbox.close()

    reopened = Outbox(tmp_path / "outbox.sqlite")
    pending = reopened.pending(100)
    assert seqs == [1, 2, 3, 4, 5]
    assert [r.seq for r in pending] == seqs
    assert [r.record_id for r in pending] == [f"r{n}" for n in range(5)]
    assert pending[2].output == [2, 2.5]
    assert reopened.depth() == 5


def test_delete_removes_exactly_the_given_seqs_and_seqs_are_never_reused(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append_many([_record(n) for n in range(6)])
    assert outbox.delete([2, 4, 99]) == 2
    assert [r.seq for r in outbox.pending(100)] == [1, 3, 5, 6]
    assert outbox.delete([6]) == 1
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert reopened.append(_record(7)) == 7
    assert reopened.last_seq() == 7
    assert [r.seq for r in reopened.pending(2)] == [1, 3]
    assert [r.seq for r in reopened.pending(10, after=3)] == [5, 7]
    assert [r.seq for r in reopened.get([7, 3, 2])] == [3, 7]


def test_concurrent_appends_get_distinct_gap_free_seqs(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    seqs: list[int] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for n in range(25):
            seq = outbox.append(_record(offset + n))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=work, args=(i * 100,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(1, 101))
    assert outbox.depth() == 100


def _columns(first: int, count: int) -> Segment:
    """``count`` records as one packed segment (as the recorder stores a batch request)."""
    shared = {"model": "tiny", "model_version": "1.0.0", "artifact_sha256": "a" * 64}
    ids = [f"{n:032x}" for n in range(first, first + count)]
    outputs = [np.array([n, n + 0.5], np.float32) for n in range(first, first + count)]
    columns = columns_of(
        shared, ids, ["d" * 64] * count, outputs, [0.25] * count, [1000.0] * count, {}
    )
    assert columns is not None
    return Segment.of_columns(columns)


_op = st.one_of(
    st.tuples(st.just("append"), st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("columns"), st.integers(min_value=1, max_value=6)),
    st.tuples(st.just("ack"), st.sets(st.integers(min_value=0, max_value=40), max_size=10)),
    st.tuples(st.just("reopen"), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=25))
def test_append_and_ack_never_lose_or_duplicate(ops: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outbox.sqlite"
        outbox = Outbox(path)
        expected: dict[int, str] = {}
        counter = 0
        for kind, arg in ops:
            if kind == "append":
                assert isinstance(arg, int)
                batch = [_record(counter + i) for i in range(arg)]
                seqs = outbox.append_many(batch)
                assert all(seq not in expected for seq in seqs)
                expected.update(zip(seqs, (str(r["record_id"]) for r in batch), strict=True))
                counter += arg
            elif kind == "columns":
                assert isinstance(arg, int)
                seqs = outbox.submit_segments([_columns(counter, arg)]).wait()
                ids = [f"{n:032x}" for n in range(counter, counter + arg)]
                expected.update(zip(seqs, ids, strict=True))
                counter += arg
            elif kind == "ack":
                assert isinstance(arg, set)
                removed = outbox.delete(arg)
                assert removed == len(arg & expected.keys())
                for seq in arg:
                    expected.pop(seq, None)
            else:
                outbox.close()
                outbox = Outbox(path)
            pending = outbox.pending(1000)
            assert [r.seq for r in pending] == sorted(expected)
            assert {r.seq: r.record_id for r in pending} == expected
            assert outbox.depth() == len(expected)
        outbox.close()


def test_a_partly_acknowledged_segment_keeps_the_rest_across_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    assert outbox.submit_segments([_columns(0, 8), _columns(8, 4)]).wait() == list(range(1, 13))
    full = outbox.bytes
    assert outbox.delete([2, 3, 8, 9]) == 4  # holes in the first segment, its tail gone
    assert 0 < outbox.bytes < full
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    rest = reopened.pending(100)
    assert [r.seq for r in rest] == [1, 4, 5, 6, 7, 10, 11, 12]
    assert rest[1].output == [3.0, 3.5] and rest[1].record_id == f"{3:032x}"
    assert [r.seq for r in reopened.get([7, 12, 8])] == [7, 12]
    assert [r.seq for r in reopened.pending(3, after=5)] == [6, 7, 10]
    assert reopened.delete(range(1, 13)) == 8
    assert reopened.depth() == 0 and reopened.bytes == 0
    assert reopened.submit_segments([_columns(12, 2)]).wait() == [13, 14]
    reopened.close()


def test_an_outbox_of_an_older_agent_is_taken_over_with_its_seqs(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL, "
        "size INTEGER NOT NULL DEFAULT 0)"
    )
    for n in range(5):
        text = json.dumps(_record(n))
        old.execute("INSERT INTO outbox (record, size) VALUES (?, ?)", (text, len(text)))
    old.execute("DELETE FROM outbox WHERE seq IN (1, 5)")  # acknowledged, seq 5 the highest
    old.close()

    outbox = Outbox(path)
    assert [(r.seq, r.record_id) for r in outbox.pending(10)] == [(2, "r1"), (3, "r2"), (4, "r3")]
    assert outbox.last_seq() == 5
    assert outbox.append(_record(5)) == 6  # seqs are never reused
    assert outbox.delete([3]) == 1 and outbox.depth() == 3
    outbox.close()
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "outbox" not in tables


def test_drop_oldest_drops_whole_segments_and_counts_their_records(tmp_path: Path) -> None:
    one = len(_columns(0, 10).body)
    config = OutboxConfig(max_bytes=int(one * 3.5), policy=OverflowPolicy.DROP_OLDEST)
    outbox = Outbox(tmp_path / "outbox.sqlite", config)
    for n in range(6):
        outbox.submit_segments([_columns(n * 10, 10)]).wait()
    assert outbox.stats().dropped_oldest == 30 and outbox.depth() == 30
    assert outbox.pending(1)[0].seq == 31
    outbox.close()


def test_the_write_ahead_log_is_checkpointed_and_stays_small(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    shared = {"model": "big", "model_version": "1", "artifact_sha256": "a" * 64}
    outputs = np.zeros((64, 4096), np.float32)  # 1 MiB a write
    for n in range(40):
        ids = [f"{n * 64 + k:032x}" for k in range(64)]
        columns = columns_of(shared, ids, ["d" * 64] * 64, outputs, [1.0] * 64, [2.0] * 64, {})
        assert columns is not None
        outbox.submit_segments([Segment.of_columns(columns)]).wait()
    wal = tmp_path / "outbox.sqlite-wal"
    assert 0 < wal.stat().st_size < 16 << 20  # of 40 MiB written
    assert outbox.depth() == 40 * 64
    outbox.close()
    assert len(Outbox(tmp_path / "outbox.sqlite").pending(10)) == 10


def test_records_that_fail_to_encode_are_counted_and_the_outbox_goes_on(tmp_path: Path) -> None:
    def broken() -> Segment:
        raise ValueError("cannot encode")

    outbox = Outbox(tmp_path / "outbox.sqlite")
    lost = outbox.submit_segments([Deferred(3, broken)])
    kept = outbox.submit_segments([Deferred(2, lambda: _columns(0, 2))])
    assert lost.wait(10) == [] and not lost.stored
    assert kept.wait(10) == [1, 2]
    assert outbox.stats().rejected_new == 3
    assert [r.record_id for r in outbox.pending(10)] == [f"{n:032x}" for n in range(2)]
    outbox.close()


def test_a_segment_line_with_a_raw_newline_is_stored_as_valid_json() -> None:
    segment = Segment.of_lines(['{"a": 1}', '{"b":\n 2}'])
    assert segment.format is SegmentFormat.LINES and segment.count == 2
    assert segment.body == b'{"a": 1}\n{"b": 2}'


# -- group commit, modes, bounds, full disk ---------------------------------------------------


def test_concurrent_durable_writes_share_commits(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    tickets: list[Ticket] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for n in range(200):
            ticket = outbox.write([_record(offset + n)])
            assert ticket.done and ticket.stored
            with lock:
                tickets.append(ticket)

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = outbox.stats()
    assert stats.committed == 1600 and outbox.depth() == 1600
    assert stats.commits < 1600  # group commit: several records per transaction
    assert sorted(seq for t in tickets for seq in t.seqs) == list(range(1, 1601))
    outbox.close()


def test_fast_mode_returns_before_the_commit_and_close_flushes(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(mode=OutboxMode.FAST))
    tickets = [outbox.write([_record(n)]) for n in range(500)]
    assert outbox.flush(10)
    assert all(ticket.stored for ticket in tickets)
    outbox.write([_record(n) for n in range(500, 600)])
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite")
    assert reopened.depth() == 600
    reopened.close()


def test_a_ticket_wakes_every_waiter_and_times_out_before_its_commit(tmp_path: Path) -> None:
    config = OutboxConfig(mode=OutboxMode.FAST, commit_interval=0.5)
    outbox = Outbox(tmp_path / "outbox.sqlite", config)
    outbox.write([_record(0)])  # seq 1
    ticket = outbox.write([_record(n) for n in (1, 2, 3)])  # fast: back before the commit
    assert not ticket.done and ticket.seqs == []
    with pytest.raises(TimeoutError):
        ticket.wait(0.01)
    seen: list[list[int]] = []
    waiters = [threading.Thread(target=lambda: seen.append(ticket.wait(10))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    assert outbox.flush(10)
    assert ticket.done and ticket.stored
    for waiter in waiters:
        waiter.join()
    assert seen == [[2, 3, 4]] * 3 and ticket.wait(0) == [2, 3, 4]
    assert outbox.get([2, 3, 4])[2].record_id == "r3"
    outbox.close()


def test_a_group_larger_than_one_insert_statement_keeps_seqs_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    tickets = [outbox.submit([_record(n) for n in range(i * 50, i * 50 + 50)]) for i in range(5)]
    seqs = [seq for ticket in tickets for seq in ticket.wait(10)]
    assert seqs == list(range(1, 251))
    assert [r.record_id for r in outbox.pending(300)] == [f"r{n}" for n in range(250)]
    outbox.close()


def _sized(n: int) -> dict[str, object]:
    return {**_record(n), "output": "x" * 200}


def test_drop_oldest_keeps_the_newest_within_the_byte_bound(tmp_path: Path) -> None:
    config = OutboxConfig(max_bytes=10_000, policy=OverflowPolicy.DROP_OLDEST)
    outbox = Outbox(tmp_path / "outbox.sqlite", config)
    for n in range(200):
        outbox.append(_sized(n))
    stats = outbox.stats()
    assert outbox.bytes <= 10_000
    assert stats.dropped_oldest == 200 - outbox.depth() > 100
    assert stats.rejected_new == 0
    pending = outbox.pending(1000)
    assert pending[-1].record_id == "r199"  # the newest survive
    assert [r.seq for r in pending] == list(range(200 - len(pending) + 1, 201))
    # Acks free bytes; the bound is tracked across reopen.
    outbox.delete(r.seq for r in pending[:10])
    before = outbox.bytes
    assert 0 < before < 10_000
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite", config)
    assert reopened.bytes == before
    reopened.close()


def test_reject_new_keeps_the_oldest_and_counts_the_rejected(tmp_path: Path) -> None:
    config = OutboxConfig(max_bytes=10_000, policy=OverflowPolicy.REJECT_NEW)
    outbox = Outbox(tmp_path / "outbox.sqlite", config)
    stored = [outbox.write([_sized(n)]).stored for n in range(200)]
    depth = outbox.depth()
    assert stored == [True] * depth + [False] * (200 - depth)
    assert outbox.stats().rejected_new == 200 - depth > 100
    assert outbox.pending(1)[0].record_id == "r0"
    outbox.close()


@pytest.mark.parametrize("policy", list(OverflowPolicy))
def test_a_full_database_file_drops_by_policy_and_never_raises(
    tmp_path: Path, policy: OverflowPolicy
) -> None:
    # max_page_count makes SQLite answer SQLITE_FULL like a full disk (the tmpfs test in
    # test_agent_faults does it with a real full file system).
    config = OutboxConfig(max_db_pages=40, policy=policy)
    outbox = Outbox(tmp_path / "outbox.sqlite", config)
    results = [outbox.write([_sized(n) for n in range(i * 20, i * 20 + 20)]) for i in range(40)]
    stats = outbox.stats()
    assert stats.disk_full > 0
    assert stats.dropped > 0
    assert any(ticket.stored for ticket in results)
    if policy is OverflowPolicy.DROP_OLDEST:
        assert stats.dropped_oldest > 0
        assert results[-1].stored  # room was made for the newest
    else:
        assert not results[-1].stored and results[0].stored
    outbox.close()
