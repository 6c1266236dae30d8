"""How a prediction becomes an outbox row: exact float32 outputs, NaN counted, JSON valid."""

from __future__ import annotations

import json
import threading

import numpy as np

from edge_agent.memory import limit_arenas, release_free_memory
from edge_agent.recording import RecordIds, nan_count, output_json
from edge_agent.serving import BatchResults


def test_float32_outputs_are_written_so_that_they_read_back_exactly() -> None:
    values = np.random.default_rng(0).normal(size=(1000,)).astype(np.float32) * 1e3
    values[:4] = [0.0, -0.0, np.float32(1e-42), np.finfo(np.float32).max]
    text, has_nan = output_json([values], lambda outputs: outputs[0].tolist())
    assert not has_nan
    assert np.array_equal(np.asarray(json.loads(text), dtype=np.float32), values)


def test_nan_and_infinity_fall_back_to_json_dumps_and_only_nan_counts() -> None:
    nan = np.array([1.0, np.nan], np.float32)
    text, has_nan = output_json([nan], lambda outputs: outputs[0].tolist())
    assert has_nan and text == json.dumps(nan.tolist())
    inf = np.array([1.0, np.inf], np.float32)
    text, has_nan = output_json([inf], lambda outputs: outputs[0].tolist())
    assert not has_nan and text == json.dumps(inf.tolist())


def test_other_outputs_are_the_json_of_the_response_value() -> None:
    logits, labels = np.ones((2,), np.float64), np.arange(3, dtype=np.int64)
    value = {"logits": logits.tolist(), "labels": labels.tolist()}
    text, has_nan = output_json([logits, labels], lambda outputs: value)
    assert (json.loads(text), has_nan) == (value, False)


def test_malloc_tuning_is_harmless_to_call() -> None:
    assert isinstance(limit_arenas(2), bool)
    assert isinstance(release_free_memory(), bool)


def test_record_ids_are_unique_across_threads_blocks_and_batches() -> None:
    ids = RecordIds()
    taken: list[list[str]] = [[] for _ in range(8)]

    def work(index: int) -> None:
        for n in range(400):
            taken[index].extend(ids.take(1 if n % 7 else 3))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [record_id for part in taken for record_id in part]
    assert len(flat) == 8 * (400 + 2 * 58) and len(set(flat)) == len(flat)
    assert all(len(record_id) == 32 and int(record_id, 16) >= 0 for record_id in flat)
    assert len({record_id[:16] for record_id in flat}) == 1  # one random prefix per process


def test_nan_is_counted_per_example_in_batches_and_single_examples() -> None:
    logits = np.array([[1, np.nan], [2, 3], [np.nan, np.nan], [np.inf, 0]], np.float32)
    labels = np.array([0, 1, 2, 3])
    batch = BatchResults([[row, label] for row, label in zip(logits, labels, strict=True)],
                         [logits, labels])  # fmt: skip
    assert nan_count(batch) == 2
    assert nan_count([list(result) for result in batch]) == 2  # one by one
    assert nan_count(BatchResults([[row] for row in labels], [labels])) == 0
