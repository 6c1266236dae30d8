"""Manifest.canonical_bytes() is what bundles are signed over: it must never change.

The bytes below were produced by the pydantic model this module replaced. A change here
breaks the signature of every bundle already shipped, so this test pins them exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from edgefleet.bundle.manifest import (
    Candidate,
    Evidence,
    FileEntry,
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    PassRecord,
    QuantParams,
    TensorSpec,
)
from edgefleet.codec import DecodeError, decode, from_json

PINNED = (
    '{"created_at":"2026-11-28T15:04:05.120000Z","evidence":{"accuracy_delta":-0.0025,"ca'
    'ndidates":[{"accepted":true,"excluded_nodes":["conv_3"],"host_latency_ms":0.125,"met'
    'ric":"top1_agreement","metric_value":0.995,"name":"int8-static-qdq","precision":"int'
    '8","reason":"chosen: smallest within the bound","size_bytes":4096},{"accepted":false'
    ',"excluded_nodes":[],"host_latency_ms":null,"metric":"top1_agreement","metric_value"'
    ':null,"name":"fp32","precision":"fp32","reason":"larger","size_bytes":16384}],"exclu'
    'ded_nodes":["conv_3"],"fallback_ops":["Softmax"],"flash_bytes":4096,"float_size_byte'
    's":16384,"host_latency_ms":0.125,"max_abs_error":0.015625,"selection":"int8 within 1'
    '% top-1","size_bytes":4096,"tensor_arena_bytes":2048,"top1_agreement":0.995},"files"'
    ':{"golden.npz":{"sha256":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'
    'ffffff","size":1234},"model.tflite":{"sha256":"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee'
    'eeeeeeeeeeeeeeeeeeeeeeeeeee","size":4096}},"format":"tflite","golden":{"atol":0.001,'
    '"count":8,"file":"golden.npz","rtol":1e-05},"interface":{"inputs":[{"dtype":"float32'
    '","name":"x","quantization":{"scale":0.0078125,"zero_point":-128},"shape":["batch",1'
    ',8,8]}],"outputs":[{"dtype":"float32","name":"y","quantization":null,"shape":["batch'
    '",10]}],"preprocessing":"scale to [0, 1] — ä"},"lineage":{"calibration_data_sha256":'
    '"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","compiler_version'
    '":"0.1.0","eval_data_sha256":null,"passes":[{"config":{"n":null,"nodes":["n1","n2"],'
    '"per_channel":true,"tol":1e-07},"config_digest":"ccccccccccccccccccccccccccccccccccc'
    'ccccccccccccccccccccccccccccc","name":"quantize_static"},{"config":{},"config_digest'
    '":"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd","name":"strip_d'
    'ocs"}],"seed":7,"source_model_sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
    'aaaaaaaaaaaaaaaaaaa"},"model_file":"model.tflite","name":"digits","precision":"int8"'
    ',"profile":"x86-64/avx512-vnni","schema_version":1,"version":"1.2.0-rc.1"}'
).encode()


def fixed_manifest(
    created_at: datetime = datetime(2026, 11, 28, 15, 4, 5, 120000, tzinfo=UTC),
) -> Manifest:
    return Manifest(
        name="digits",
        version="1.2.0-rc.1",
        profile="x86-64/avx512-vnni",
        format="tflite",
        precision="int8",
        model_file="model.tflite",
        created_at=created_at,
        interface=ModelInterface(
            inputs=(
                TensorSpec(
                    name="x",
                    dtype="float32",
                    shape=("batch", 1, 8, 8),
                    quantization=QuantParams(scale=0.0078125, zero_point=-128),
                ),
            ),
            outputs=(TensorSpec(name="y", dtype="float32", shape=("batch", 10)),),
            preprocessing="scale to [0, 1] — ä",
        ),
        lineage=Lineage(
            source_model_sha256="a" * 64,
            calibration_data_sha256="b" * 64,
            compiler_version="0.1.0",
            passes=(
                PassRecord(
                    name="quantize_static",
                    config_digest="c" * 64,
                    config={"per_channel": True, "nodes": ["n1", "n2"], "tol": 1e-7, "n": None},
                ),
                PassRecord(name="strip_docs", config_digest="d" * 64),
            ),
            seed=7,
        ),
        evidence=Evidence(
            size_bytes=4096,
            float_size_bytes=16384,
            max_abs_error=0.015625,
            top1_agreement=0.995,
            accuracy_delta=-0.0025,
            host_latency_ms=0.125,
            fallback_ops=("Softmax",),
            candidates=(
                Candidate(
                    name="int8-static-qdq",
                    precision="int8",
                    size_bytes=4096,
                    host_latency_ms=0.125,
                    metric="top1_agreement",
                    metric_value=0.995,
                    excluded_nodes=("conv_3",),
                    accepted=True,
                    reason="chosen: smallest within the bound",
                ),
                Candidate(
                    name="fp32",
                    precision="fp32",
                    size_bytes=16384,
                    metric="top1_agreement",
                    accepted=False,
                    reason="larger",
                ),
            ),
            excluded_nodes=("conv_3",),
            selection="int8 within 1% top-1",
            tensor_arena_bytes=2048,
            flash_bytes=4096,
        ),
        golden=GoldenSamples(count=8, atol=1e-3, rtol=1e-5),
        files={
            "model.tflite": FileEntry(sha256="e" * 64, size=4096),
            "golden.npz": FileEntry(sha256="f" * 64, size=1234),
        },
    )


def test_canonical_bytes_are_the_ones_signed_before() -> None:
    assert fixed_manifest().canonical_bytes() == PINNED


@pytest.mark.parametrize(
    ("created_at", "text"),
    [
        (datetime(2026, 11, 28, 15, 4, 5, tzinfo=UTC), "2026-11-28T15:04:05Z"),
        (datetime(2026, 11, 28, 15, 4, 5, 120000, tzinfo=UTC), "2026-11-28T15:04:05.120000Z"),
        (
            datetime(2026, 11, 28, 15, 4, 5, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-11-28T15:04:05.000001+05:30",
        ),
        (datetime(2026, 11, 28, 15, 4, 5), "2026-11-28T15:04:05"),
    ],
)
def test_created_at_is_written_as_before(created_at: datetime, text: str) -> None:
    data = fixed_manifest(created_at).canonical_bytes()
    assert data.startswith(f'{{"created_at":"{text}",'.encode())
    assert data.split(b",", 1)[1] == PINNED.split(b",", 1)[1]


def test_a_manifest_read_back_writes_the_same_bytes() -> None:
    again = from_json(Manifest, PINNED)
    assert again == fixed_manifest()
    assert again.canonical_bytes() == PINNED


def test_a_manifest_with_an_unknown_field_or_a_bad_hash_is_refused() -> None:
    data = json.loads(PINNED)
    with pytest.raises(DecodeError, match=r"^field colour: unknown field"):
        decode(Manifest, {**data, "colour": "red"})
    data["files"]["golden.npz"]["sha256"] = "F" * 64
    data["version"] = "1.0"
    with pytest.raises(DecodeError) as caught:
        decode(Manifest, data)
    assert str(caught.value) == (
        "field version: must be a semantic version such as 1.2.0; "
        "field files.golden.npz.sha256: must be 64 lower-case hex digits"
    )
