"""Outbox segments: packed columns read back exactly what JSON lines would hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.segments import (
    Segment,
    SegmentFormat,
    columns_of,
    decode_segment,
    keep_records,
    nan_rows,
    segment_seqs,
    seq_ranges,
)

SHARED = {"device": "dev-1", "model": "m", "model_version": "1.0.0", "artifact_sha256": "a" * 64}


def _ids(count: int) -> list[str]:
    return [f"{n:032x}" for n in range(count)]


def _digests(count: int) -> list[str]:
    return [f"{n:064x}" for n in range(count)]


@pytest.mark.parametrize(
    "outputs",
    [
        np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32) * 1e3,
        np.arange(10, dtype=np.int64).reshape(5, 2),
        np.array([True, False, True, True, False]),
        np.random.default_rng(1).normal(size=(5, 2, 2)),
        np.array([np.nan, 1.0, np.inf, -0.0, 3.5], np.float32),  # scalar outputs
    ],
    ids=["float32", "int64", "bool", "float64-2d", "float32-scalar-nan"],
)
def test_packed_records_read_back_as_json_lines_hold_them(outputs: np.ndarray) -> None:
    inputs = {1: json.dumps([1.5, 2.0]), 4: json.dumps({"a": [1], "b": [2]})}
    columns = columns_of(
        SHARED, _ids(5), _digests(5), list(outputs), [0.5, 1.0, 2.0, 3.0, 4.0], [7.0] * 5, inputs
    )
    assert columns is not None
    segment = Segment.of_columns(columns)
    assert (segment.format, segment.count) == (SegmentFormat.COLUMNS, 5)
    lines = Segment.of_lines(
        [
            json.dumps(
                {
                    "record_id": record_id,
                    **SHARED,
                    "input_digest": digest,
                    "input": json.loads(inputs[i]) if i in inputs else None,
                    "output": outputs[i].tolist(),
                    "latency_ms": [0.5, 1.0, 2.0, 3.0, 4.0][i],
                    "ts": 7.0,
                }
            )
            for i, (record_id, digest) in enumerate(zip(_ids(5), _digests(5), strict=True))
        ]
    )
    packed = decode_segment(segment.format, segment.body)
    plain = decode_segment(lines.format, lines.body)
    assert json.dumps(packed) == json.dumps(plain)  # NaN included
    np.testing.assert_array_equal(np.asarray([r["output"] for r in packed], outputs.dtype), outputs)
    assert len(segment.body) < len(lines.body)


def test_records_that_do_not_pack_are_left_to_json_lines() -> None:
    def attempt(outputs: list[np.ndarray], ids: list[str] | None = None) -> object:
        ids = ids or _ids(len(outputs))
        count = len(outputs)
        return columns_of(SHARED, ids, _digests(count), outputs, [1.0] * count, [1.0] * count, {})

    one = np.zeros(3, np.float32)
    assert attempt([one, np.zeros(4, np.float32)]) is None  # shapes differ
    assert attempt([one, np.zeros(3, np.float64)]) is None  # dtypes differ
    assert attempt([np.array(["a"]), np.array(["b"])]) is None  # not numbers
    assert attempt([one, one], ids=["short", "0" * 32]) is None
    assert attempt([one, one], ids=["é" * 32, "0" * 32]) is None
    assert attempt([one, one], ids=["g" * 32, "0" * 32]) is None  # not hex
    assert attempt([one, one], ids=["ab " * 10 + "ab", "0" * 32]) is None  # spaces
    assert attempt([one, one], ids=["A" * 32, "0" * 32]) is None  # would read back lowercase
    assert attempt([]) is None
    assert attempt([one, one]) is not None


@pytest.mark.parametrize("packed", [True, False], ids=["columns", "lines"])
def test_keeping_some_records_keeps_them_exactly_and_shrinks_the_segment(packed: bool) -> None:
    outputs = [np.full(4, n, np.float32) for n in range(6)]
    inputs = {2: "[2]", 5: "[5]"}
    columns = columns_of(SHARED, _ids(6), _digests(6), outputs, [1.0] * 6, [2.0] * 6, inputs)
    assert columns is not None
    whole = (
        Segment.of_columns(columns)
        if packed
        else Segment.of_lines([json.dumps(r) for r in columns.records()])
    )
    body = keep_records(whole.format, whole.body, [0, 2, 3])
    assert len(body) < len(whole.body)
    kept = decode_segment(whole.format, body)
    assert kept == [columns.records()[i] for i in (0, 2, 3)]
    assert [r["input"] for r in kept] == [None, [2], None]


def test_seq_ranges_round_trip() -> None:
    seqs = [3, 4, 5, 9, 11, 12]
    text = seq_ranges(seqs)
    assert text == "[[3,5],[9,9],[11,12]]"
    assert segment_seqs(3, len(seqs), text) == seqs
    assert segment_seqs(7, 3, None) == [7, 8, 9]


def test_nan_rows_flags_each_record_with_a_nan() -> None:
    outputs = np.array([[1.0, np.nan], [np.inf, 0.0], [np.nan, np.nan]], np.float32)
    assert nan_rows(outputs).tolist() == [True, False, True]
    assert nan_rows(np.arange(3)).tolist() == [False, False, False]


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown outbox segment format 7"):
        decode_segment(7, b"")
