"""The hardware profile schema: what a deployment target is and can do.

A profile is declarative. The tag is its identity (``raspberry-pi/4b``). Declared facts
(``hardware``, ``execution``, ``budgets``) are read-only; tunable defaults sit in ``defaults``;
derived features (``features``, ``preferred_precision``) are computed, never written in YAML.

Example (``hardware_profiles/profiles/raspberry-pi-4b.yaml``)::

    tag: raspberry-pi/4b
    name: Raspberry Pi 4 Model B
    arch: aarch64
    accelerator: cpu
    runtime: onnxruntime
    format: onnx
    hardware: {cores: 4, memory_mb: 4096, cpu: Cortex-A72, cpu_features: [neon]}
    execution: {providers: [CPUExecutionProvider]}
    precisions: [int8, fp32]
    quantization: {scheme: static_qdq, per_channel: true, activations: uint8, weights: int8}
    budgets: {max_model_bytes: 200000000}
    defaults: {threads: 4}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

from edgefleet.codec import Extra, Record, spec

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9.-]*$")


class Accelerator(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"
    TPU = "tpu"
    MCU = "mcu"


class Runtime(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    TFLITE_MICRO = "tflite-micro"


class ArtifactFormat(StrEnum):
    ONNX = "onnx"
    TFLITE = "tflite"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class QuantScheme(StrEnum):
    """How int8 is produced for this target."""

    STATIC_QDQ = "static_qdq"  # onnxruntime static QDQ with calibration
    DYNAMIC = "dynamic"  # onnxruntime dynamic (weights int8, activations at run time)
    FULL_INT8 = "full_int8"  # TFLite full integer, int8 input and output
    NONE = "none"


class _Frozen(Record):
    """Profiles are read-only, and a key the schema does not know is an error (a typo)."""

    extra_fields: ClassVar[Extra] = "forbid"


@dataclass(frozen=True, kw_only=True)
class HardwareFacts(_Frozen):
    """Declared facts about the device. Read-only."""

    cores: int = field(metadata=spec(ge=1))
    memory_mb: int | None = field(
        default=None, metadata=spec(ge=1, description="Application RAM in MiB.")
    )
    cpu: str = field(metadata=spec(description="CPU core name, e.g. Cortex-A72."))
    cpu_features: tuple[str, ...] = ()
    accelerator_name: str | None = field(
        default=None, metadata=spec(description="e.g. Ampere GPU, Hexagon.")
    )
    ram_kb: int | None = field(
        default=None, metadata=spec(ge=1, description="SRAM for microcontrollers.")
    )
    flash_kb: int | None = field(
        default=None, metadata=spec(ge=1, description="Flash for microcontrollers.")
    )


@dataclass(frozen=True, kw_only=True)
class Execution(_Frozen):
    """Runtime back-ends in fallback order: the first that loads is used."""

    providers: tuple[str, ...] = field(
        default=(), metadata=spec(description="onnxruntime execution providers, first preferred.")
    )
    delegates: tuple[str, ...] = field(
        default=(), metadata=spec(description="LiteRT delegates, first preferred.")
    )
    allow_cpu_fallback: bool = field(
        default=True,
        metadata=spec(
            description="Whether ops the accelerator cannot run may fall back to the CPU."
        ),
    )
    accelerator_ops: tuple[str, ...] = field(
        default=(),
        metadata=spec(
            description="Op types the accelerator runs (ONNX op types for onnxruntime targets, "
            "TFLite builtin op names for LiteRT ones); other ops fall back to the CPU. Empty: "
            "not declared, every op the runtime has runs on the target (a CPU target)."
        ),
    )


@dataclass(frozen=True, kw_only=True)
class Quantization(_Frozen):
    scheme: QuantScheme
    per_channel: bool = True
    activations: Literal["int8", "uint8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    int8_io: bool = field(
        default=False, metadata=spec(description="Model inputs and outputs are int8 too.")
    )


@dataclass(frozen=True, kw_only=True)
class Budgets(_Frozen):
    max_model_bytes: int | None = field(default=None, metadata=spec(ge=1))
    max_arena_bytes: int | None = field(
        default=None, metadata=spec(ge=1, description="Tensor arena (MCU).")
    )


@dataclass(frozen=True, kw_only=True)
class Defaults(_Frozen):
    """Tunable defaults: the only block a user is expected to change."""

    threads: int = field(default=1, metadata=spec(ge=1))
    batch_size: int = field(default=1, metadata=spec(ge=1))


@dataclass(frozen=True, kw_only=True)
class HardwareProfile(_Frozen):
    tag: str = field(
        metadata=spec(
            pattern=TAG_PATTERN.pattern,
            message="must look like 'family/model' in lower case, e.g. raspberry-pi/4b",
            description="Identity, 'vendor-or-family/model', e.g. raspberry-pi/4b.",
        )
    )
    name: str
    description: str = ""
    arch: str = field(metadata=spec(description="Instruction set: x86_64, aarch64, armv7e-m, ..."))
    accelerator: Accelerator
    runtime: Runtime
    format: ArtifactFormat
    hardware: HardwareFacts
    execution: Execution
    precisions: tuple[Precision, ...] = field(
        metadata=spec(min_length=1, description="Supported precisions, most preferred first.")
    )
    quantization: Quantization
    budgets: Budgets = Budgets()
    defaults: Defaults = Defaults()

    @property
    def preferred_precision(self) -> Precision:
        return self.precisions[0]

    @property
    def features(self) -> frozenset[str]:
        """Derived capabilities that compiler passes declare they need."""
        found = {f"precision:{p.value}" for p in self.precisions}
        found.add(f"runtime:{self.runtime.value}")
        found.add(f"format:{self.format.value}")
        found.add(f"accelerator:{self.accelerator.value}")
        found.update(f"cpu:{flag}" for flag in self.hardware.cpu_features)
        return frozenset(found)
