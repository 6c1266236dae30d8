from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.outbox import Outbox


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


_op = st.one_of(
    st.tuples(st.just("append"), st.integers(min_value=1, max_value=5)),
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
