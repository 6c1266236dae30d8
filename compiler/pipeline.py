"""Orchestrate a compile: check every input first, bring the model into ONNX once, then build,
measure, sign and pack one bundle per profile.

Everything a user can get wrong (identity, profiles, key, model, data shapes) is checked before
any profile is built, so a mistake costs seconds, not a half-written output directory.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

import edgefleet
from compiler import export, golden
from compiler.data import Dataset, FloatArray, check_shape, load_dataset
from compiler.deps import require
from compiler.errors import CompileError
from compiler.evidence import Reference, interface_of, measure
from compiler.package import (
    MODEL_FILE,
    BundleContent,
    PackedBundle,
    bundle_stem,
    prepare_directory,
    seal_and_pack,
)
from compiler.passes import record
from compiler.quantize import (
    QUANTIZE_PASS,
    QuantizationError,
    StaticQdqConfig,
    quantize_static_qdq,
)
from compiler.recipes import Recipe, Skip, recipe_for
from compiler.runner import HostModel
from compiler.sources import OnnxSource, TorchSource, load_torch, resolve_source
from edgefleet.bundle import Lineage, ModelInterface, PassRecord, SigningKey, load_signing_key
from edgefleet.bundle.manifest import NAME_PATTERN, SEMVER_PATTERN
from hardware_profiles import HardwareProfile, Precision, load_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileRequest:
    model: str
    profiles: Sequence[str]
    calibration: Path
    out: Path
    key: Path
    name: str
    version: str
    eval_data: Path | None = None
    seed: int = 0
    golden_count: int = golden.DEFAULT_COUNT


@dataclass(frozen=True)
class BuiltBundle:
    profile: str
    bundle: PackedBundle
    notes: tuple[str, ...] = ()

    @property
    def precision(self) -> str:
        return self.bundle.manifest.precision


@dataclass(frozen=True)
class CompileResult:
    bundles: tuple[BuiltBundle, ...]
    skipped: tuple[Skip, ...]
    float_size_bytes: int
    float_latency_ms: float
    float_accuracy: float | None


class Reporter(Protocol):
    """Where progress goes: the CLI shows it with rich; the library default logs it."""

    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


class LogReporter:
    def step(self, message: str) -> None:
        log.info("%s", message)

    def note(self, message: str) -> None:
        log.warning("%s", message)


@dataclass
class _Prepared:
    """The float model in ONNX and everything measured against it."""

    path: Path
    source_sha256: str
    passes: list[PassRecord]
    interface: ModelInterface
    calibration: Dataset
    evaluation: Dataset
    reference: Reference
    golden_inputs: FloatArray
    golden_float: FloatArray
    quantized: dict[str, tuple[Path, StaticQdqConfig] | QuantizationError] = field(
        default_factory=dict
    )


def compile_model(request: CompileRequest, reporter: Reporter | None = None) -> CompileResult:
    """Build one signed bundle per profile; raise :class:`CompileError` when none was built."""
    report = reporter or LogReporter()
    _check_identity(request.name, request.version)
    profiles = _load_profiles(request.profiles)
    key = load_signing_key(request.key)
    source = resolve_source(request.model)
    calibration = load_dataset(request.calibration, "calibration")
    evaluation = load_dataset(request.eval_data, "eval") if request.eval_data else None
    require("onnx", "onnxruntime", *(["torch"] if isinstance(source, TorchSource) else []))
    recipes: list[Recipe] = []
    skipped: list[Skip] = []
    for profile in profiles:
        recipe = recipe_for(profile, seed=request.seed)
        if isinstance(recipe, Skip):
            report.note(f"skipped {recipe.tag}: {recipe.reason}")
            skipped.append(recipe)
        else:
            recipes.append(recipe)
    if not recipes:
        _nothing_built(skipped)
    built: list[BuiltBundle] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-compile-") as tmp:
        work = Path(tmp)
        prepared = _prepare(request, source, calibration, evaluation, work, report)
        request.out.mkdir(parents=True, exist_ok=True)
        for recipe in recipes:
            outcome = _build(request, recipe, prepared, key, work, report)
            if isinstance(outcome, Skip):
                report.note(f"skipped {outcome.tag}: {outcome.reason}")
                skipped.append(outcome)
            else:
                built.append(outcome)
    if not built:
        _nothing_built(skipped)
    return CompileResult(
        bundles=tuple(built),
        skipped=tuple(skipped),
        float_size_bytes=prepared.reference.size_bytes,
        float_latency_ms=prepared.reference.latency_ms,
        float_accuracy=prepared.reference.accuracy,
    )


def _prepare(
    request: CompileRequest,
    source: OnnxSource | TorchSource,
    calibration: Dataset,
    evaluation: Dataset | None,
    work: Path,
    report: Reporter,
) -> _Prepared:
    float_path = work / "float.onnx"
    if isinstance(source, OnnxSource):
        report.step(f"checking ONNX model {source.path}")
        import_config = export.ImportConfig()
        export.import_onnx(source.path, float_path, import_config)
        source_sha256 = source.sha256()
        passes = [record(export.IMPORT_PASS, import_config)]
    else:
        report.step(f"building PyTorch model {source.spec}")
        model = load_torch(source, seed=request.seed)
        source_sha256 = model.sha256()
        report.step("exporting to ONNX (dynamic batch)")
        export_config = export.ExportConfig()
        export.export_torch(model, float_path, export_config)
        passes = [record(export.EXPORT_PASS, export_config)]
    interface = interface_of(float_path)
    if len(interface.inputs) != 1 or len(interface.outputs) != 1:
        raise CompileError(
            f"MODEL {request.model!r}: has {len(interface.inputs)} inputs and "
            f"{len(interface.outputs)} outputs; this compiler handles one of each for now"
        )
    spec = interface.inputs[0]
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != 1:
        raise CompileError(
            f"MODEL {request.model!r}: input {spec.name!r} has a fixed batch of {spec.shape[0]}; "
            "the compiler needs a dynamic batch axis or a batch of 1"
        )
    check_shape(calibration, spec.name, spec.shape)
    data = evaluation or calibration
    if evaluation is not None:
        check_shape(evaluation, spec.name, spec.shape)
    report.step("running the float reference on the host")
    host = HostModel(float_path)
    reference = Reference(
        x=data.x,
        y=data.y,
        outputs=host.run(data.x),
        size_bytes=float_path.stat().st_size,
        latency_ms=host.latency_ms(data.x),
    )
    golden_inputs = golden.select_inputs(data.x, request.golden_count)
    return _Prepared(
        path=float_path,
        source_sha256=source_sha256,
        passes=passes,
        interface=interface,
        calibration=calibration,
        evaluation=data,
        reference=reference,
        golden_inputs=golden_inputs,
        golden_float=host.run_each(golden_inputs),
    )


def _build(
    request: CompileRequest,
    recipe: Recipe,
    prepared: _Prepared,
    key: SigningKey,
    work: Path,
    report: Reporter,
) -> BuiltBundle | Skip:
    tag = recipe.profile.tag
    notes = list(recipe.notes)
    for line in notes:
        report.note(f"{tag}: {line}")
    precision = recipe.precision
    passes = list(prepared.passes)
    model_path = prepared.path
    if recipe.quantize is not None:
        report.step(f"{tag}: quantizing to int8 (static QDQ, calibrated)")
        try:
            model_path, effective = _quantized(recipe.quantize, prepared, work)
        except QuantizationError as exc:
            precision = Precision.FP32
            notes.append(f"{exc}; built fp32 instead")
            report.note(f"{tag}: {exc}; building fp32 instead")
        else:
            passes.append(record(QUANTIZE_PASS, effective))
    budget = recipe.profile.budgets.max_model_bytes
    size = model_path.stat().st_size
    if budget is not None and size > budget:
        return Skip(tag, f"the {precision.value} model is {size} bytes, over the budget {budget}")
    report.step(f"{tag}: measuring {precision.value} against the float model")
    artifact = HostModel(model_path)
    evidence = measure(artifact, prepared.reference)
    report.step(f"{tag}: golden samples, signing, packing")
    directory = prepare_directory(request.out, bundle_stem(request.name, request.version, tag))
    (directory / MODEL_FILE[recipe.profile.format]).write_bytes(model_path.read_bytes())
    samples = golden.write_golden(
        directory, artifact, prepared.golden_inputs, prepared.golden_float, precision
    )
    content = BundleContent(
        name=request.name,
        version=request.version,
        profile=tag,
        format=recipe.profile.format,
        precision=precision,
        interface=interface_of(model_path),
        lineage=Lineage(
            source_model_sha256=prepared.source_sha256,
            calibration_data_sha256=prepared.calibration.sha256,
            eval_data_sha256=prepared.evaluation.sha256 if request.eval_data else None,
            compiler_version=edgefleet.__version__,
            passes=tuple(passes),
            seed=request.seed,
        ),
        evidence=evidence,
        golden=samples,
    )
    bundle = seal_and_pack(directory, content, key)
    return BuiltBundle(profile=tag, bundle=bundle, notes=tuple(notes))


def _quantized(
    config: StaticQdqConfig, prepared: _Prepared, work: Path
) -> tuple[Path, StaticQdqConfig]:
    """The int8 model for ``config``; profiles with the same config share one quantization."""
    digest = config.digest()
    cached = prepared.quantized.get(digest)
    if cached is None:
        stage = work / f"int8-{digest[:12]}"
        stage.mkdir()
        try:
            effective = quantize_static_qdq(
                prepared.path,
                stage / "int8.onnx",
                input_name=prepared.interface.inputs[0].name,
                calibration=prepared.calibration.x,
                config=config,
                workdir=stage,
            )
            cached = (stage / "int8.onnx", effective)
        except QuantizationError as exc:
            cached = exc
        prepared.quantized[digest] = cached
    if isinstance(cached, QuantizationError):
        raise cached
    return cached


def _nothing_built(skipped: Sequence[Skip]) -> NoReturn:
    reasons = "; ".join(f"{s.tag}: {s.reason}" for s in skipped)
    raise CompileError(f"no bundle was produced ({reasons})")


def _check_identity(name: str, version: str) -> None:
    if not NAME_PATTERN.match(name):
        raise CompileError(
            f"--name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or a digit"
        )
    if not SEMVER_PATTERN.match(version):
        raise CompileError(f"--version {version!r}: must be a semantic version such as 1.2.0")


def _load_profiles(tags: Sequence[str]) -> list[HardwareProfile]:
    if not tags:
        raise CompileError("give at least one --profile")
    return [load_profile(tag) for tag in dict.fromkeys(tags)]
