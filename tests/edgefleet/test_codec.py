"""edgefleet.codec: what it accepts, how it names what it refuses, and what it writes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.codec import (
    DecodeError,
    Extra,
    Record,
    decode,
    encode,
    from_json,
    spec,
    to_json,
)
from edgefleet.protocol.messages import (
    Ack,
    DesiredState,
    FeatureSketch,
    Histogram,
    LatencySummary,
    PredictionBatch,
    PredictionRecord,
    Telemetry,
)


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, kw_only=True)
class Inner(Record):
    extra_fields: ClassVar[Extra] = "forbid"

    size: int = field(metadata=spec(ge=1))
    label: str | None = None


@dataclass(frozen=True, kw_only=True)
class Outer(Record):
    name: str = field(metadata=spec(pattern=r"^[a-z]+$"))
    ratio: float = field(default=0.5, metadata=spec(gt=0, le=1))
    colour: Colour = Colour.RED
    mode: Literal["a", "b", "c"] = "a"
    dims: tuple[int | str, ...] = field(default=(), metadata=spec(min_length=0))
    pair: tuple[int, int] | None = None
    inner: Inner = field(default_factory=lambda: Inner(size=1))
    items: tuple[Inner, ...] = ()
    by_name: dict[str, Inner] = field(default_factory=dict)
    when: datetime | None = None
    anything: Any = None


def problems(data: Any) -> str:
    with pytest.raises(DecodeError) as caught:
        decode(Outer, data)
    return str(caught.value)


def test_valid_data_decodes_with_defaults_and_conversions() -> None:
    outer = decode(
        Outer,
        {
            "name": "x",
            "ratio": 1,  # an int for a float
            "colour": "blue",
            "dims": ["batch", 3],
            "pair": [1, 2],
            "inner": {"size": 2},
            "items": [{"size": 3, "label": "l"}],
            "by_name": {"k": {"size": 4}},
            "when": "2026-11-28T15:04:05Z",
            "anything": {"nested": [1, 2.5]},
            "unknown": "ignored",  # Outer ignores unknown keys
        },
    )
    assert outer.ratio == 1.0 and isinstance(outer.ratio, float)
    assert outer.colour is Colour.BLUE
    assert outer.dims == ("batch", 3) and outer.pair == (1, 2)
    assert outer.items == (Inner(size=3, label="l"),)
    assert outer.by_name == {"k": Inner(size=4)}
    assert outer.when == datetime(2026, 11, 28, 15, 4, 5, tzinfo=UTC)
    assert decode(Outer, {"name": "y"}) == Outer(name="y")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "field name: Field required"),
        ({"name": 3}, "field name: Input should be a valid string"),
        ({"name": "UP"}, "field name: String should match pattern '^[a-z]+$'"),
        ({"name": "x", "ratio": 0}, "field ratio: Input should be greater than 0"),
        ({"name": "x", "ratio": "0.5"}, "field ratio: Input should be a valid number"),
        ({"name": "x", "ratio": True}, "field ratio: Input should be a valid number"),
        ({"name": "x", "colour": "green"}, "field colour: Input should be 'red' or 'blue'"),
        ({"name": "x", "mode": "d"}, "field mode: Input should be 'a', 'b' or 'c'"),
        ({"name": "x", "dims": "abc"}, "field dims: Input should be a valid tuple"),
        (
            {"name": "x", "dims": [1, None]},
            "field dims[1]: Input should be a valid integer or a valid string",
        ),
        ({"name": "x", "pair": [1]}, "field pair: Tuple should have 2 items, not 1"),
        ({"name": "x", "inner": {"size": 0}}, "field inner.size: Input should be greater than"),
        (
            {"name": "x", "inner": {"size": 1, "colour": "red"}},
            "field inner.colour: unknown field, extra fields not permitted (allowed: size, label)",
        ),
        ({"name": "x", "items": [{"size": 1}, {}]}, "field items[1].size: Field required"),
        ({"name": "x", "by_name": {"k": 3}}, "field by_name.k: Input should be a valid dict"),
        ({"name": "x", "when": "yesterday"}, "field when: Input should be a valid datetime"),
        ({"name": "x", "inner": {"size": 1.5}}, "field inner.size: Input should be a valid int"),
    ],
)
def test_each_problem_names_the_field_path(data: dict[str, Any], message: str) -> None:
    assert message in problems(data)


def test_every_problem_is_reported_at_once() -> None:
    text = problems({"ratio": 2, "inner": {"size": -1, "x": 1}})
    assert text.startswith("field name: Field required; ")
    assert "field ratio: Input should be less than or equal to 1" in text
    assert "field inner.size: Input should be greater than or equal to 1" in text
    assert "field inner.x: unknown field" in text


def test_a_top_level_problem_names_no_field() -> None:
    with pytest.raises(DecodeError, match=r"^not valid JSON \("):
        from_json(Outer, b"{")
    with pytest.raises(DecodeError, match=r"^Input should be a valid dictionary or instance"):
        decode(Outer, [1, 2])


def test_built_in_code_the_value_rules_still_hold() -> None:
    with pytest.raises(DecodeError, match="field size: Input should be greater than or equal"):
        Inner(size=0)
    with pytest.raises(DecodeError, match="field seq: Input should be greater than or equal to 1"):
        PredictionRecord(
            seq=0, record_id="r", model="m", model_version="1", artifact_sha256="a",
            input_digest="d", output=[1], latency_ms=1.0, ts=1.0,
        )  # fmt: skip


def test_encode_writes_json_data_and_to_json_writes_the_same_document() -> None:
    outer = Outer(
        name="x",
        colour=Colour.BLUE,
        dims=("b", 2),
        when=datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        anything={"t": (1, float("nan")), "c": Colour.RED},
        items=(Inner(size=2),),
    )
    data = encode(outer)
    assert data["colour"] == "blue" and data["dims"] == ["b", 2]
    assert data["when"] == "2026-01-02T03:04:05.120000Z"
    assert data["anything"] == {"t": [1, None], "c": "red"}
    assert data["items"] == [{"size": 2, "label": None}]
    assert json.loads(to_json(outer)) == data
    assert decode(Outer, data) == replace(outer, anything=data["anything"])
    assert "label" not in encode(outer, exclude_none=True)["items"][0]


def test_non_finite_floats_are_written_as_null() -> None:
    telemetry = Telemetry(
        window_s=1.0, requests=1, errors=0, latency=LatencySummary(p50_ms=float("inf")),
        outbox_depth=0, ts=1.0,
    )  # fmt: skip
    assert encode(telemetry)["latency"]["p50_ms"] == math.inf  # typed floats kept, as pydantic
    assert json.loads(to_json(telemetry))["latency"]["p50_ms"] is None


_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
_records = st.builds(
    PredictionRecord,
    seq=st.integers(min_value=1, max_value=2**40),
    record_id=st.text(max_size=8),
    model=st.text(max_size=8),
    model_version=st.text(max_size=8),
    artifact_sha256=st.text(max_size=8),
    input_digest=st.text(max_size=8),
    input=st.none() | st.lists(_floats, max_size=4),
    output=st.lists(_floats, max_size=4) | st.dictionaries(st.text(max_size=3), _floats),
    latency_ms=_floats,
    ts=_floats,
)
_sketches = st.builds(
    FeatureSketch,
    index=st.integers(min_value=0, max_value=99),
    count=st.integers(min_value=0, max_value=99),
    mean=_floats,
    m2=st.floats(min_value=0, max_value=1e6),
    min=_floats,
    max=_floats,
    histogram=st.none()
    | st.builds(Histogram, bounds=st.tuples(_floats), counts=st.tuples(st.integers(0, 9))),
)


@given(st.lists(_records, min_size=1, max_size=5), st.lists(_sketches, max_size=3))
def test_messages_survive_json_both_ways(
    records: list[PredictionRecord], sketches: list[FeatureSketch]
) -> None:
    batch = PredictionBatch(records=tuple(records))
    assert from_json(PredictionBatch, batch.to_bytes()) == batch
    assert json.loads(batch.to_bytes()) == encode(batch)
    telemetry = Telemetry(
        window_s=1.0, requests=1, errors=0, latency=LatencySummary(), outbox_depth=0,
        input_sketches=tuple(sketches), ts=2.0,
    )  # fmt: skip
    assert from_json(Telemetry, telemetry.to_bytes()) == telemetry
    ack = Ack.of(record.seq for record in records)
    assert from_json(Ack, ack.to_bytes()) == ack


def test_the_fast_path_and_the_checking_path_agree() -> None:
    """Decoding takes a generated fast path for valid data; the same data through the path
    that checks field by field gives an equal record."""
    from edgefleet.codec import _plan

    data = json.loads(
        DesiredState(
            deployment_id="d", model="m", version="1.0.0", artifact_url="/a", sha256="0" * 64,
            size=1, ts=3.0,
        ).to_bytes()
    )  # fmt: skip
    plan = _plan(DesiredState)
    assert plan.fast(data) == plan.check(data) == decode(DesiredState, data)
    del data["health"]  # a default_factory field left out
    assert plan.fast(data) == plan.check(data)
