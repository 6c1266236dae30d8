"""The bundle manifest: the contract between compiler, fleet server and edge agent."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuantParams(_Frozen):
    """Affine quantization of an int8/uint8 tensor: real = scale * (q - zero_point).

    On a :class:`TensorSpec` whose ``dtype`` is a float type, it says that the model's tensor
    itself is integer (a full-int8 TFLite model's input or output): callers feed and get
    ``dtype`` values, and the runtime quantizes inputs (``round(real / scale) + zero_point``,
    clipped to the integer range) and dequantizes outputs with these parameters.
    """

    scale: float
    zero_point: int


class TensorSpec(_Frozen):
    name: str
    dtype: str = Field(description="numpy dtype name: float32, float16, int8, uint8, int64, ...")
    shape: tuple[int | str, ...] = Field(description="Dimensions; a string names a dynamic axis.")
    quantization: QuantParams | None = None


class ModelInterface(_Frozen):
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    preprocessing: str = ""


class PassRecord(_Frozen):
    """One compiler pass that produced this artifact, with the digest of its config."""

    name: str
    config_digest: str
    config: dict[str, Any] = Field(default_factory=dict)


class Lineage(_Frozen):
    source_model_sha256: str
    calibration_data_sha256: str | None = None
    eval_data_sha256: str | None = None
    compiler_version: str
    passes: tuple[PassRecord, ...] = ()
    seed: int | None = None


class Candidate(_Frozen):
    """One variant the compiler tried for a profile, and what it measured."""

    name: str = Field(description="e.g. int8-static-qdq, int8-static-qdq-excl-3, fp16, fp32")
    precision: Literal["fp32", "fp16", "int8"]
    size_bytes: int = Field(ge=0)
    host_latency_ms: float | None = None
    metric: str = Field(description="top1_agreement, max_abs_error, cosine or a user metric")
    metric_value: float | None = None
    excluded_nodes: tuple[str, ...] = ()
    accepted: bool
    reason: str = Field(description="Why it was accepted, rejected or chosen.")


class Evidence(_Frozen):
    size_bytes: int = Field(ge=0)
    float_size_bytes: int | None = Field(default=None, ge=0)
    max_abs_error: float | None = Field(default=None, description="Versus the float model.")
    top1_agreement: float | None = Field(default=None, description="Versus the float model.")
    accuracy_delta: float | None = Field(
        default=None, description="Task accuracy minus the float model's, on the eval set."
    )
    host_latency_ms: float | None = Field(default=None, description="Batch 1, median, on host.")
    fallback_ops: tuple[str, ...] = ()
    candidates: tuple[Candidate, ...] = Field(
        default=(), description="Every variant tried, in the order tried."
    )
    excluded_nodes: tuple[str, ...] = Field(
        default=(), description="Nodes kept in float because quantizing them broke the bound."
    )
    selection: str = Field(default="", description="Why the shipped variant won.")
    tensor_arena_bytes: int | None = Field(
        default=None, ge=0, description="Microcontrollers: the tensor arena estimate (SRAM)."
    )
    flash_bytes: int | None = Field(
        default=None, ge=0, description="Microcontrollers: the model bytes kept in flash."
    )


class GoldenSamples(_Frozen):
    """Inputs with expected outputs, re-checked on the device after install."""

    file: str = GOLDEN_FILE
    count: int = Field(ge=1)
    atol: float = Field(ge=0)
    rtol: float = Field(default=0.0, ge=0)


class FileEntry(_Frozen):
    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("must be 64 lower-case hex digits")
        return value


class Manifest(_Frozen):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN.pattern)
    version: str
    profile: str
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8"]
    model_file: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    interface: ModelInterface
    lineage: Lineage
    evidence: Evidence
    golden: GoldenSamples
    files: dict[str, FileEntry] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER_PATTERN.match(value):
            raise ValueError("must be a semantic version such as 1.2.0")
        return value

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are hashed and signed: sorted keys, no whitespace."""
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signature(_Frozen):
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    signature: str = Field(description="base64 of the signature over Manifest.canonical_bytes().")
