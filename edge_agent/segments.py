"""How the outbox stores records: in segments, one per write, each holding many records.

A batch request's records go in as *one* row, so the cost of a commit is one fsync plus one
row per writer, not one row (and one JSON text) per record. Two formats:

- :attr:`SegmentFormat.LINES`: one JSON object per line, what :meth:`Outbox.submit` is given.
- :attr:`SegmentFormat.COLUMNS`: the records of one model, column by column
  (:class:`RecordColumns`): a JSON header with what they share, then the record ids and
  input digests as bytes, latencies, times and outputs as packed numbers (a latency or time
  that all of them share, as the records of one prediction do, is stored once, in the
  header). Nothing is encoded per record when storing; the delivery loop decodes records as
  it sends them.

Both decode to the same record fields (:func:`decode_segment`), so the delivery loop and the
server cannot tell which format a record was stored in. A segment's records have
consecutive seqs until some of them are deleted; then :func:`keep_records` rewrites it, in
the same format, with the rest, and their seqs are kept as ranges beside it
(:func:`seq_ranges`), so a delete never makes a segment larger.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from edge_agent.runtime.base import Array

_ID = 16
"""Bytes of a record id (32 hex digits, :class:`edge_agent.recording.RecordIds`)."""
_DIGEST = 32
"""Bytes of an input digest (sha256; 64 hex digits)."""
_HEADER = struct.Struct("<I")
_KINDS = "fiub"
"""dtype kinds whose arrays are stored as packed bytes (numbers and booleans)."""


class SegmentFormat(IntEnum):
    LINES = 0
    COLUMNS = 1


@dataclass(frozen=True)
class Segment:
    """Records ready to store: ``count`` of them, ``body`` as stored (its size is what the
    outbox's byte bound counts)."""

    format: SegmentFormat
    count: int
    body: bytes

    @classmethod
    def of_lines(cls, rows: Sequence[str]) -> Segment:
        """Records as JSON object texts, without seq."""
        text = "\n".join(rows)
        if text.count("\n") != len(rows) - 1:  # a row holds a raw newline: normalize it
            text = "\n".join(json.dumps(json.loads(row)) for row in rows)
        return cls(SegmentFormat.LINES, len(rows), text.encode())

    @classmethod
    def of_columns(cls, columns: RecordColumns) -> Segment:
        return cls(SegmentFormat.COLUMNS, len(columns.outputs), columns.encode())


@dataclass(frozen=True)
class Deferred:
    """Records whose segment the outbox's writer thread encodes, just before it stores them.

    Encoding costs the GIL either way; done by the one writer thread for every write of a
    commit, it spares each durable request thread a turn at the GIL (with a dozen writers,
    waiting for that turn cost more than the encoding)."""

    count: int
    encode: Callable[[], Segment]


@dataclass(frozen=True)
class RecordColumns:
    """Records of one model version, column by column; row ``i`` of every column is record
    ``i``. Build it with :func:`columns_of`, which checks what the packed format needs."""

    shared: Mapping[str, str]
    """Members every record carries alike: device, model, model_version, artifact_sha256."""
    ids: bytes
    """The record ids, as bytes (``_ID`` each), joined."""
    digests: bytes
    """The input digests, as bytes (``_DIGEST`` each), joined."""
    outputs: Array
    """Shape ``(n, ...)``: record ``i``'s single output is ``outputs[i]``."""
    latency_ms: Array
    """Shape ``(n,)``, or ``()`` when every record has the same (stored once)."""
    ts: Array
    """As ``latency_ms``."""
    inputs: Mapping[int, str] = field(default_factory=dict)
    """Sampled inputs as JSON text, by record index."""

    @property
    def record_ids(self) -> list[str]:
        return split_every(self.ids.hex(), 2 * _ID)

    @property
    def input_digests(self) -> list[str]:
        return split_every(self.digests.hex(), 2 * _DIGEST)

    def records(self) -> list[dict[str, Any]]:
        """Every record's fields, as :meth:`Segment.of_lines` would hold them."""
        count = len(self.outputs)
        outputs = self.outputs.tolist()
        latency = np.broadcast_to(self.latency_ms, (count,)).tolist()
        ts = np.broadcast_to(self.ts, (count,)).tolist()
        inputs = {index: json.loads(text) for index, text in self.inputs.items()}
        return [
            {
                "record_id": record_id,
                **self.shared,
                "input_digest": digest,
                "input": inputs.get(index),
                "output": outputs[index],
                "latency_ms": latency[index],
                "ts": ts[index],
            }
            for index, (record_id, digest) in enumerate(
                zip(self.record_ids, self.input_digests, strict=True)
            )
        ]

    def take(self, indices: Sequence[int]) -> RecordColumns:
        """The records at ``indices``, in that order."""
        rows = list(indices)
        renumbered = {old: new for new, old in enumerate(rows)}
        ids, digests = self.ids, self.digests
        return RecordColumns(
            shared=self.shared,
            ids=b"".join(ids[i * _ID : (i + 1) * _ID] for i in rows),
            digests=b"".join(digests[i * _DIGEST : (i + 1) * _DIGEST] for i in rows),
            outputs=self.outputs[rows],
            latency_ms=self.latency_ms[rows] if self.latency_ms.ndim else self.latency_ms,
            ts=self.ts[rows] if self.ts.ndim else self.ts,
            inputs={renumbered[i]: text for i, text in self.inputs.items() if i in renumbered},
        )

    def encode(self) -> bytes:
        outputs = self.outputs
        header = (
            f'{_shared_text(tuple(self.shared.items()))}"n": {len(outputs)}, '
            f'"dtype": "{outputs.dtype.str}", "shape": {list(outputs.shape[1:])}'
        )
        columns = [self.ids, self.digests]
        for name, values in (("latency_ms", self.latency_ms), ("ts", self.ts)):
            if values.ndim:
                columns.append(np.ascontiguousarray(values, dtype="<f8").tobytes())
            else:
                header = f'{header}, "{name}": {float(values)!r}'
        if self.inputs:
            sampled = ", ".join(f'"{index}": {text}' for index, text in self.inputs.items())
            header = f'{header}, "inputs": {{{sampled}}}'
        head = f"{{{header}}}".encode()
        columns.append(np.ascontiguousarray(outputs).tobytes())
        return b"".join((_HEADER.pack(len(head)), head, *columns))


@functools.lru_cache(maxsize=16)
def _shared_text(members: tuple[tuple[str, str], ...]) -> str:
    """``members`` as the start of a JSON object's members (``"device": "d", ``)."""
    return json.dumps(dict(members))[1:-1] + ", "


@functools.lru_cache(maxsize=64)
def _slices(count: int, width: int) -> list[slice]:
    return [slice(at, at + width) for at in range(0, count * width, width)]


def _floats(values: Sequence[float]) -> Array:
    """``values`` as float64: one 0-d array when they are all the same (as they are for the
    records of one prediction), which is stored once."""
    if isinstance(values, list):
        if values.count(values[0]) == len(values):
            return np.asarray(values[0], dtype="<f8")
        return np.asarray(values, dtype="<f8")
    array = np.asarray(values, dtype="<f8")
    return array[0] if bool((array == array[0]).all()) else array


def _from_hex(text: str) -> bytes | None:
    """The bytes of lowercase hex ``text`` (which they give back exactly), else None."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if raw.hex() == text else None  # not upper case, no spaces (fromhex skips them)


def split_every(text: str, width: int) -> list[str]:
    """``text`` cut into pieces of ``width`` characters."""
    return list(map(text.__getitem__, _slices(len(text) // width, width)))


def columns_of(
    shared: Mapping[str, str],
    record_ids: Sequence[str],
    input_digests: Sequence[str],
    outputs: Sequence[Array] | Array,
    latency_ms: Sequence[float],
    ts: Sequence[float],
    inputs: Mapping[int, str],
) -> RecordColumns | None:
    """The records as columns, or None when they do not pack: outputs of different dtypes or
    shapes, or not numbers; ids or digests that are not lowercase hex of their length.
    ``outputs`` is one array per record, or all of them as one array with a row per record."""
    count = len(record_ids)
    if not count or not (len(input_digests) == len(outputs) == len(latency_ms) == count):
        return None
    if set(map(len, record_ids)) != {2 * _ID} or set(map(len, input_digests)) != {2 * _DIGEST}:
        return None
    ids, digests = _from_hex("".join(record_ids)), _from_hex("".join(input_digests))
    if ids is None or digests is None:
        return None
    if isinstance(outputs, np.ndarray):  # already one row per record
        stacked = outputs
    else:
        first = outputs[0]
        if first.dtype.kind not in _KINDS or len({out.shape for out in outputs}) != 1:
            return None
        stacked = (  # concatenate: 3x faster than stack, but it takes no scalars
            np.concatenate(outputs).reshape((count, *first.shape))
            if first.ndim
            else np.stack(outputs)
        )
        if stacked.dtype != first.dtype:  # the outputs' dtypes differ
            return None
    if stacked.dtype.kind not in _KINDS:
        return None
    return RecordColumns(
        shared=shared,
        ids=ids,
        digests=digests,
        outputs=stacked,
        latency_ms=_floats(latency_ms),
        ts=_floats(ts),
        inputs=inputs,
    )


def nan_rows(outputs: Array) -> Array:
    """Per row of ``outputs``, whether it holds a NaN."""
    if outputs.dtype.kind != "f" or np.isfinite(np.add.reduce(outputs, axis=None)):
        return np.zeros(len(outputs), dtype=bool)  # a NaN anywhere would make the sum NaN
    return np.asarray(np.isnan(outputs.reshape(len(outputs), -1)).any(axis=1))


def decode_segment(format_: int, body: bytes | str) -> list[dict[str, Any]]:
    """The record fields of every record in a stored segment, in order."""
    data = body.encode() if isinstance(body, str) else body
    if format_ == SegmentFormat.COLUMNS:
        return _parse_columns(data).records()
    if format_ == SegmentFormat.LINES:
        return [json.loads(line) for line in data.decode().split("\n")]
    raise ValueError(f"unknown outbox segment format {format_}")


def keep_records(format_: int, body: bytes | str, indices: Sequence[int]) -> bytes:
    """The body of a segment holding only the records at ``indices`` (in order)."""
    data = body.encode() if isinstance(body, str) else body
    if format_ == SegmentFormat.COLUMNS:
        return _parse_columns(data).take(indices).encode()
    if format_ == SegmentFormat.LINES:
        lines = data.split(b"\n")
        return b"\n".join(lines[index] for index in indices)
    raise ValueError(f"unknown outbox segment format {format_}")


def segment_seqs(first: int, count: int, ranges: str | None) -> list[int]:
    """The seqs of a segment's records: ``first`` on, or the ranges a delete left."""
    if ranges is None:
        return list(range(first, first + count))
    return [seq for low, high in json.loads(ranges) for seq in range(low, high + 1)]


def seq_ranges(seqs: Sequence[int]) -> str:
    """Increasing seqs as JSON ``[[first, last], ...]`` ranges."""
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return json.dumps(ranges, separators=(",", ":"))


def _parse_columns(data: bytes) -> RecordColumns:
    (length,) = _HEADER.unpack_from(data)
    at = _HEADER.size
    header = json.loads(data[at : at + length])
    at += length
    inputs = header.pop("inputs", {})
    count = int(header.pop("n"))
    dtype = np.dtype(header.pop("dtype"))
    shape = tuple(header.pop("shape"))
    ids = data[at : at + _ID * count]
    at += _ID * count
    digests = data[at : at + _DIGEST * count]
    at += _DIGEST * count
    floats: list[Array] = []
    for name in ("latency_ms", "ts"):
        if name in header:
            floats.append(np.asarray(header.pop(name), dtype="<f8"))
        else:
            floats.append(np.frombuffer(data, "<f8", count, at))
            at += 8 * count
    latency, ts = floats
    outputs = np.frombuffer(data, dtype, count * int(np.prod(shape, dtype=np.int64)), at)
    return RecordColumns(
        shared=header,
        ids=ids,
        digests=digests,
        outputs=outputs.reshape((count, *shape)),
        latency_ms=latency,
        ts=ts,
        inputs={int(index): json.dumps(value) for index, value in inputs.items()},
    )
