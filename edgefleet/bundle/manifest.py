"""The bundle manifest: the contract between compiler, fleet server and edge agent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from edgefleet.codec import Extra, Record, encode, spec

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"
GOLDEN_FILE = "golden.npz"
GOLDEN_INPUTS = "inputs"  # array in golden.npz: the sample inputs, batch axis first
GOLDEN_OUTPUTS = "outputs"  # array in golden.npz: the artifact's outputs for them


def golden_key(group: str, name: str) -> str:
    """The golden.npz array of one named input or output of a model with several inputs or
    outputs: ``inputs/<input name>``, ``outputs/<output name>``."""
    return f"{group}/{name}"


SEMVER_PATTERN = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Frozen(Record):
    extra_fields: ClassVar[Extra] = "forbid"


@dataclass(frozen=True, kw_only=True)
class QuantParams(_Frozen):
    """Affine quantization of an int8/uint8 tensor: real = scale * (q - zero_point).

    On a :class:`TensorSpec` whose ``dtype`` is a float type, it says that the model's tensor
    itself is integer (a full-int8 TFLite model's input or output): callers feed and get
    ``dtype`` values, and the runtime quantizes inputs (``round(real / scale) + zero_point``,
    clipped to the integer range) and dequantizes outputs with these parameters.
    """

    scale: float
    zero_point: int


@dataclass(frozen=True, kw_only=True)
class TensorSpec(_Frozen):
    name: str
    dtype: str = field(
        metadata=spec(description="numpy dtype name: float32, float16, int8, uint8, int64, ...")
    )
    shape: tuple[int | str, ...] = field(
        metadata=spec(description="Dimensions; a string names a dynamic axis.")
    )
    quantization: QuantParams | None = None


@dataclass(frozen=True, kw_only=True)
class ModelInterface(_Frozen):
    inputs: tuple[TensorSpec, ...] = field(metadata=spec(min_length=1))
    outputs: tuple[TensorSpec, ...] = field(metadata=spec(min_length=1))
    preprocessing: str = ""


@dataclass(frozen=True, kw_only=True)
class PassRecord(_Frozen):
    """One compiler pass that produced this artifact, with the digest of its config."""

    name: str
    config_digest: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Lineage(_Frozen):
    source_model_sha256: str
    calibration_data_sha256: str | None = None
    eval_data_sha256: str | None = None
    compiler_version: str
    passes: tuple[PassRecord, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, kw_only=True)
class Candidate(_Frozen):
    """One variant the compiler tried for a profile, and what it measured."""

    name: str = field(
        metadata=spec(description="e.g. int8-static-qdq, int8-static-qdq-excl-3, fp16, fp32")
    )
    precision: Literal["fp32", "fp16", "int8"]
    size_bytes: int = field(metadata=spec(ge=0))
    host_latency_ms: float | None = None
    metric: str = field(
        metadata=spec(description="top1_agreement, max_abs_error, cosine or a user metric")
    )
    metric_value: float | None = None
    excluded_nodes: tuple[str, ...] = ()
    accepted: bool
    reason: str = field(metadata=spec(description="Why it was accepted, rejected or chosen."))


@dataclass(frozen=True, kw_only=True)
class Evidence(_Frozen):
    size_bytes: int = field(metadata=spec(ge=0))
    float_size_bytes: int | None = field(default=None, metadata=spec(ge=0))
    max_abs_error: float | None = field(
        default=None, metadata=spec(description="Versus the float model.")
    )
    top1_agreement: float | None = field(
        default=None, metadata=spec(description="Versus the float model.")
    )
    accuracy_delta: float | None = field(
        default=None,
        metadata=spec(description="Task accuracy minus the float model's, on the eval set."),
    )
    host_latency_ms: float | None = field(
        default=None, metadata=spec(description="Batch 1, median, on host.")
    )
    fallback_ops: tuple[str, ...] = ()
    candidates: tuple[Candidate, ...] = field(
        default=(), metadata=spec(description="Every variant tried, in the order tried.")
    )
    excluded_nodes: tuple[str, ...] = field(
        default=(),
        metadata=spec(description="Nodes kept in float because quantizing them broke the bound."),
    )
    selection: str = field(default="", metadata=spec(description="Why the shipped variant won."))
    tensor_arena_bytes: int | None = field(
        default=None,
        metadata=spec(ge=0, description="Microcontrollers: the tensor arena estimate (SRAM)."),
    )
    flash_bytes: int | None = field(
        default=None,
        metadata=spec(ge=0, description="Microcontrollers: the model bytes kept in flash."),
    )


@dataclass(frozen=True, kw_only=True)
class GoldenSamples(_Frozen):
    """Inputs with expected outputs, re-checked on the device after install."""

    file: str = GOLDEN_FILE
    count: int = field(metadata=spec(ge=1))
    atol: float = field(metadata=spec(ge=0))
    rtol: float = field(default=0.0, metadata=spec(ge=0))


@dataclass(frozen=True, kw_only=True)
class FileEntry(_Frozen):
    sha256: str = field(
        metadata=spec(pattern=_SHA256.pattern, message="must be 64 lower-case hex digits")
    )
    size: int = field(metadata=spec(ge=0))


@dataclass(frozen=True, kw_only=True)
class Manifest(_Frozen):
    schema_version: Literal[1] = 1
    name: str = field(metadata=spec(pattern=NAME_PATTERN.pattern))
    version: str = field(
        metadata=spec(
            pattern=SEMVER_PATTERN.pattern, message="must be a semantic version such as 1.2.0"
        )
    )
    profile: str
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8"]
    model_file: str
    created_at: datetime = field(default_factory=_utc_now)
    interface: ModelInterface
    lineage: Lineage
    evidence: Evidence
    golden: GoldenSamples
    files: dict[str, FileEntry] = field(default_factory=dict)

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are hashed and signed: sorted keys, no whitespace."""
        data = encode(self)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, kw_only=True)
class Signature(_Frozen):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    signature: str = field(
        metadata=spec(description="base64 of the signature over Manifest.canonical_bytes().")
    )
