'''The pass contract: a typed static config, declared formats, profile features and optional
dependencies, and the artifact every pass produces (with its parent, for lineage).

Adding a pass, complete (``compiler/passes/strip_docs.py``)::

    from __future__ import annotations

    from pathlib import Path
    from typing import ClassVar

    from compiler.passes.base import (
        Artifact, Format, Pass, PassConfig, PassContext, Requirement,
    )


    class StripDocsConfig(PassConfig):
        keep_producer: bool = True  # a typo such as keep_produce=... is an error (extra="forbid")


    class StripDocs(Pass[StripDocsConfig]):
        """Remove doc strings from every node of an ONNX model."""

        name: ClassVar[str] = "strip_docs"
        input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
        output_format: ClassVar[Format] = Format.ONNX
        required_features: ClassVar[frozenset[str]] = frozenset({"format:onnx"})
        requires: ClassVar[tuple[Requirement, ...]] = (Requirement("onnx", "pip install onnx"),)

        def run(self, source: Artifact, out: Path, context: PassContext) -> StripDocsConfig:
            import onnx  # heavy imports inside run(), never at module import

            model = onnx.load(str(source.file))
            for node in model.graph.node:
                node.doc_string = ""
            if not self.config.keep_producer:
                model.producer_name = ""
            onnx.save(model, str(out))
            return self.config  # the config as it effectively ran (recorded in lineage)

then register it in :data:`compiler.passes.registry.PASSES` (``"strip_docs":
"compiler.passes.strip_docs:StripDocs"``) and use it in a recipe::

    Pipeline([StripDocs(StripDocsConfig())], source=Format.ONNX).check(profile)

The pipeline checks, before anything runs, that the pass accepts the previous pass's output
format, that the profile has every ``required_features`` entry, and that every
``requires`` module is importable; it then runs the pass at most once per content digest
(input artifact digest + pass name + config digest, plus the calibration data digest when
``uses_calibration``), caching the output file.
'''

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from compiler.errors import CompileError
from edgefleet.bundle import PassRecord

if TYPE_CHECKING:
    from compiler.data import Dataset
    from compiler.sources import TorchModel
    from hardware_profiles import HardwareProfile


class Format(StrEnum):
    """What an artifact is: the formats passes accept and produce."""

    TORCH = "torch"
    ONNX = "onnx"
    ONNX_QDQ = "onnx-qdq"
    ONNX_DYNAMIC = "onnx-int8-dynamic"
    ONNX_FP16 = "onnx-fp16"
    TFLITE = "tflite"
    TFLITE_INT8 = "tflite-int8"  # int8 weights: full int8, dynamic range or weight-only
    TFLITE_FP16 = "tflite-fp16"  # float16 weights, float32 compute

    @property
    def container(self) -> str:
        """The file format: ``onnx``, ``tflite`` or ``torch`` (in memory)."""
        return self.value.split("-")[0]

    @property
    def suffix(self) -> str:
        return {"onnx": ".onnx", "tflite": ".tflite"}.get(self.container, "")


class PassConfig(BaseModel):
    """Typed, static, frozen configuration of one pass (a misspelt option is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def canonical_json(self) -> bytes:
        import json

        data: dict[str, Any] = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace) of this config."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


def record(name: str, config: PassConfig) -> PassRecord:
    """The lineage entry for a pass that ran with ``config``."""
    return PassRecord(
        name=name, config_digest=config.digest(), config=config.model_dump(mode="json")
    )


@dataclass(frozen=True)
class Requirement:
    """An optional Python module (or, with ``executable``, a command on PATH) a pass needs,
    and what to install to get it."""

    module: str
    install: str
    executable: bool = False

    def available(self) -> bool:
        if self.executable:
            return shutil.which(self.module) is not None
        return importlib.util.find_spec(self.module) is not None

    def message(self) -> str:
        kind = "the command" if self.executable else "the Python package"
        return f"needs {kind} {self.module!r}, which is not installed: {self.install}"


@dataclass(frozen=True)
class Artifact:
    """One model on the way: the file (``None`` for an in-memory PyTorch module), its format,
    its content digest, its parent's digest and the pass that made it from the parent."""

    format: Format
    digest: str
    path: Path | None = None
    parent: Artifact | None = None
    made_by: PassRecord | None = None
    cached: bool = False

    @property
    def file(self) -> Path:
        if self.path is None:
            raise CompileError(f"the {self.format.value} artifact has no file")
        return self.path

    def lineage(self) -> tuple[PassRecord, ...]:
        """The passes from the source to this artifact, in the order they ran."""
        chain: list[PassRecord] = []
        node: Artifact | None = self
        while node is not None:
            if node.made_by is not None:
                chain.append(node.made_by)
            node = node.parent
        return tuple(reversed(chain))


@dataclass(frozen=True)
class PassContext:
    """What a pass may use besides its input: a scratch directory, the calibration data, the
    PyTorch module (for passes whose input format is ``torch``) and the seed."""

    workdir: Path
    calibration: Dataset | None = None
    torch_model: TorchModel | None = None
    seed: int = 0
    on_pass: Callable[[str], None] | None = None  # told each pass name once it ran (progress)


ConfigT = TypeVar("ConfigT", bound=PassConfig)


class Pass(ABC, Generic[ConfigT]):
    """One transformation of a model. See the module docstring for a complete example."""

    name: ClassVar[str]
    input_formats: ClassVar[frozenset[Format]]
    output_format: ClassVar[Format]
    required_features: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[tuple[Requirement, ...]] = ()
    uses_calibration: ClassVar[bool] = False
    version: ClassVar[int] = 1  # bump when the pass's output changes for the same config

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    def missing(self) -> tuple[Requirement, ...]:
        """The optional modules this pass needs that are not installed."""
        return tuple(r for r in self.requires if not r.available())

    def problems(self, profile: HardwareProfile | None) -> list[str]:
        """Why this pass cannot run for ``profile`` (empty when it can)."""
        found: list[str] = []
        if profile is not None:
            lacking = sorted(self.required_features - profile.features)
            if lacking:
                found.append(f"profile {profile.tag} lacks {', '.join(lacking)}")
        for requirement in self.missing():
            found.append(requirement.message())
        return found

    def describe(self) -> str:
        inputs = "|".join(sorted(f.value for f in self.input_formats))
        return f"{self.name} ({inputs} -> {self.output_format.value})"

    @abstractmethod
    def run(self, source: Artifact, out: Path, context: PassContext) -> ConfigT:
        """Write the output model to ``out``; return the config as it effectively ran."""
