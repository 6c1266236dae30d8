"""Orchestrate a compile: check every input and every profile's plan first, bring the model
into ONNX once (export or import, then clean-up), then for each profile run the
accuracy-guarded search over its recipe's candidates and sign and pack the winner.

Everything a user can get wrong (identity, profiles, key, model, data shapes, metric, ops the
target cannot run without a forbidden CPU fallback) is checked before any profile is built.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from pydantic import ValidationError

import edgefleet
from compiler import budget, golden, progress
from compiler.data import Dataset, FloatArray, Samples, bind, load_dataset
from compiler.errors import CompileError
from compiler.evidence import artifact_interface
from compiler.graph import GraphKind, fallback_ops, graph_kind, op_types
from compiler.metrics import Bound, check_output, resolve_metric
from compiler.package import (
    MODEL_FILE,
    BundleContent,
    PackedBundle,
    bundle_stem,
    prepare_directory,
    seal_and_pack,
)
from compiler.passes.base import Artifact, Format, Pass, PassContext
from compiler.passes.cache import PassCache, default_cache_dir
from compiler.passes.cleanup_onnx import CleanupConfig, CleanupOnnx
from compiler.passes.export_onnx import ExportConfig, ExportOnnx
from compiler.passes.import_onnx import ImportConfig, ImportOnnx
from compiler.passes.pipeline import Pipeline
from compiler.passes.quantize_static import CalibrationMethodName
from compiler.recipes import QuantizationMode, Recipe, recipe_for
from compiler.runner import HOST_THREADS, Outputs, host_for
from compiler.search import FloatReference, Measured, SearchOutcome, SearchSettings, search
from compiler.sources import (
    OnnxSource,
    Source,
    TfliteSource,
    TorchModel,
    TorchSource,
    load_torch,
    resolve_source,
)
from compiler.targets import load_targets
from compiler.tflite_route import tflite_baseline
from edgefleet.bundle import Evidence, Lineage, SigningKey, load_signing_key
from edgefleet.bundle.manifest import NAME_PATTERN, SEMVER_PATTERN
from hardware_profiles import HardwareProfile
from hardware_profiles.schema import ArtifactFormat

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
    metric: str | None = None
    max_drop: float | None = None
    min_metric: float | None = None
    quantization: QuantizationMode = "auto"
    calibrate_method: CalibrationMethodName = "minmax"
    cache_dir: Path | None = None
    use_cache: bool = True
    speed_batch: int = 32
    speed_check: bool = True
    prune: float | None = None  # share of channels removed (structured, torch-pruning)
    train_step: str | None = None  # 'module:function', train(model, epochs)
    fine_tune_epochs: int = 2
    lottery_sparsity: float | None = None  # iterative magnitude pruning with rewinding
    distill_student: str | None = None  # 'module:factory' of the student
    train_data: Path | None = None  # .npz x (and y) the student learns on
    distill_temperature: float = 4.0
    distill_alpha: float = 0.7
    distill_epochs: int = 12
    output: str | None = None  # the output the metric reads; None: every output (the worst)
    max_exclusions: int = 8  # nodes the search may keep in float per candidate


@dataclass(frozen=True)
class Skip:
    tag: str
    reason: str


@dataclass(frozen=True)
class BuiltBundle:
    profile: str
    bundle: PackedBundle
    notes: tuple[str, ...] = ()
    batch_ms: float | None = None
    float_batch_ms: float | None = None
    speed_batch: int = 32  # samples per batch-N run (1 for a static-batch model)

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
    float_runtime: str  # how the float reference was timed, e.g. "LiteRT CPU, 1 thread"
    metric: str = ""
    float_metric: float | None = None
    cache_hits: int = 0
    cache_misses: int = 0


class Reporter(Protocol):
    """Where progress goes: the CLI shows it with rich; the library default logs it."""

    def step(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...


class LogReporter:
    def step(self, message: str) -> None:
        log.info("%s", message)

    def note(self, message: str) -> None:
        log.warning("%s", message)


def prefix_pipeline(source: Source, request: CompileRequest | None = None) -> Pipeline:
    """From the user's model to the clean float ONNX model every ONNX candidate starts from:
    distillation and pruning (PyTorch models only, when asked), export or import, clean-up.
    A ``.tflite`` is the float model itself (only TFLite profiles build from it)."""
    steps: list[Pass[Any]] = model_passes(source, request) if request is not None else []
    if isinstance(source, TfliteSource):
        return Pipeline(steps, source=Format.TFLITE)
    first: Pass[Any]
    if isinstance(source, TorchSource):
        first, start = ExportOnnx(ExportConfig()), Format.TORCH
    else:
        first, start = ImportOnnx(ImportConfig()), Format.ONNX
    return Pipeline([*steps, first, CleanupOnnx(CleanupConfig())], source=start)


def model_passes(source: Source, request: CompileRequest) -> list[Pass[Any]]:
    """The torch -> torch passes the request asks for, in order: distill, lottery, prune."""
    from compiler.passes.distill import Distill, DistillConfig
    from compiler.passes.lottery_ticket import LotteryConfig, LotteryTicket
    from compiler.passes.prune_channels import PruneChannels, PruneConfig

    asked = [
        flag
        for flag, value in (
            ("--distill-student", request.distill_student),
            ("--lottery-sparsity", request.lottery_sparsity),
            ("--prune", request.prune),
        )
        if value is not None
    ]
    if not asked:
        return []
    if not isinstance(source, TorchSource):
        raise CompileError(f"{asked[0]} needs a PyTorch model ('package.module:factory')")
    steps: list[Pass[Any]] = []
    try:
        if request.distill_student is not None:
            if request.train_data is None:
                raise CompileError("--distill-student needs --train-data DATA.npz")
            data = load_dataset(request.train_data, "training")
            steps.append(
                Distill(
                    DistillConfig(
                        student=request.distill_student,
                        train_data=str(request.train_data),
                        train_data_sha256=data.sha256,
                        temperature=request.distill_temperature,
                        alpha=request.distill_alpha,
                        epochs=request.distill_epochs,
                    )
                )
            )
        if request.lottery_sparsity is not None:
            if request.train_step is None:
                raise CompileError("--lottery-sparsity needs --train-step module:function")
            steps.append(
                LotteryTicket(
                    LotteryConfig(
                        sparsity=request.lottery_sparsity,
                        epochs=max(1, request.fine_tune_epochs),
                        train_step=request.train_step,
                    )
                )
            )
        if request.prune is not None:
            steps.append(
                PruneChannels(
                    PruneConfig(
                        ratio=request.prune,
                        fine_tune_epochs=request.fine_tune_epochs,
                        train_step=request.train_step,
                    )
                )
            )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CompileError(f"{where}: {first['msg']}") from None
    if request.train_step is not None:
        from compiler.torch_state import load_train_step

        load_train_step(request.train_step)  # fail before anything runs
    return steps


def plan_recipes(
    request: CompileRequest,
    profiles: Sequence[HardwareProfile],
    source: Source,
    graph: GraphKind = GraphKind.UNKNOWN,
) -> tuple[list[Recipe], list[Skip]]:
    """Each profile's recipe with the candidates that can run here; a profile none of whose
    candidates can run (or whose float TFLite conversion cannot) is skipped, with the first
    reason (naming the pass). A ``.tflite`` given for a profile that runs ONNX is an error."""
    start = source_format(source)
    recipes: list[Recipe] = []
    skipped: list[Skip] = []
    for profile in profiles:
        if start is Format.TFLITE and profile.format is not ArtifactFormat.TFLITE:
            raise CompileError(
                f"{profile.tag} runs ONNX models and MODEL {source.spec!r} is a TFLite model: "
                "give the ONNX file or the PyTorch factory it came from, or a TFLite profile"
            )
        recipe = recipe_for(
            profile,
            source=start,
            graph=graph,
            quantization=request.quantization,
            calibrate_method=request.calibrate_method,
            seed=request.seed,
        )
        runnable = tuple(c for c in recipe.candidates if not c.pipeline.problems(profile))
        converter = recipe.float_pipeline.problems(profile) if recipe.float_pipeline else []
        if converter or not runnable:
            reason = (converter or recipe.candidates[0].pipeline.problems(profile))[0]
            skipped.append(Skip(profile.tag, reason))
            continue
        recipes.append(Recipe(profile, runnable, recipe.notes, recipe.float_pipeline))
    return recipes, skipped


def source_format(source: Source) -> Format:
    """The format of the artifact the user's model becomes first."""
    if isinstance(source, TorchSource):
        return Format.TORCH
    return Format.TFLITE if isinstance(source, TfliteSource) else Format.ONNX


def compile_model(request: CompileRequest, reporter: Reporter | None = None) -> CompileResult:
    """Build one signed bundle per profile; raise :class:`CompileError` when none was built."""
    report = reporter or LogReporter()
    _check_identity(request.name, request.version)
    profiles = _load_profiles(request.profiles)
    key = load_signing_key(request.key)
    source = resolve_source(request.model)
    calibration = load_dataset(request.calibration, "calibration")
    evaluation = load_dataset(request.eval_data, "eval") if request.eval_data else None
    if request.metric is not None and request.metric != "accuracy":
        resolve_metric(request.metric, classifier=True, has_labels=True)  # fail early on typos
    prefix = prefix_pipeline(source, request)
    prefix.check(None)
    recipes, skipped = plan_recipes(request, profiles, source)
    for skip in skipped:
        report.note(f"skipped {skip.tag}: {skip.reason}")
    if not recipes:
        _nothing_built(skipped)
    cache = PassCache((request.cache_dir or default_cache_dir()) if request.use_cache else None)
    built: list[BuiltBundle] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-compile-") as tmp:
        sources, source_sha, torch_model = _source_artifacts(source, request, report)
        context = PassContext(
            workdir=Path(tmp), calibration=calibration, torch_model=torch_model, seed=request.seed
        )
        report.step(
            " -> ".join(step.name for step in prefix.passes)
            if isinstance(source, TorchSource)
            else f"checking the {prefix.source.value} model {source.path}"
        )
        bars = progress.tracker(report)
        bars.begin(progress.FLOAT, len(prefix.passes))
        float_artifact = prefix.run(
            sources[prefix.source], progress.observed(context, bars, progress.FLOAT), cache
        )
        bars.finish(progress.FLOAT, "ready")
        sources[float_artifact.format] = float_artifact
        ops = artifact_ops(float_artifact.file)
        if request.quantization == "auto":
            recipes, late = plan_recipes(
                request, [r.profile for r in recipes], source, graph_kind(ops)
            )
            skipped.extend(late)
        _check_fallback(recipes, ops)
        interface = artifact_interface(float_artifact.file)
        check_output(request.output, [spec.name for spec in interface.outputs])
        data = _check_data(request, interface, calibration, evaluation)
        context = dataclasses.replace(context, calibration=data.calibration)
        report.step("running the float reference on the host")
        host = host_for(float_artifact.file)
        reference = FloatReference(float_artifact, host, data.x, data.y, host.run_all(data.x))
        metric = resolve_metric(
            request.metric,
            classifier=_is_classifier(_primary(reference.outputs, request.output)),
            has_labels=data.y is not None,
        )
        bound = Bound(
            max_drop=request.max_drop
            if request.max_drop is not None or request.min_metric is not None
            else Bound().max_drop,
            min_metric=request.min_metric,
        )
        settings = SearchSettings(
            metric=metric,
            bound=bound,
            speed_batch=request.speed_batch,
            speed_check=request.speed_check,
            output=request.output,
            max_exclusions=request.max_exclusions,
        )
        float_latency = host.latency_ms(data.x)
        float_size = reference.size()  # the file may live in the temporary directory
        request.out.mkdir(parents=True, exist_ok=True)
        float_metric: float | None = None
        for recipe in recipes:
            tag = recipe.profile.tag
            for line in recipe.notes:
                report.note(f"{tag}: {line}")
            bars.begin(tag, progress.pass_count(recipe))
            watched = progress.observed(context, bars, tag)
            inputs, baseline = tflite_baseline(recipe, sources, reference, watched, cache)
            outcome = search(recipe, inputs, baseline, settings, watched, cache, report.step)
            float_metric = outcome.float_metric
            if outcome.winner is None:
                tried = "; ".join(f"{c.name}: {c.reason}" for c in outcome.candidates)
                skip = Skip(tag, f"every candidate was rejected ({tried})")
                report.note(f"skipped {tag}: {skip.reason}")
                skipped.append(skip)
                bars.finish(tag, "skipped: every candidate was rejected")
                continue
            report.step(f"{tag}: golden samples, signing, packing {outcome.winner.plan.name}")
            built.append(
                _package(
                    request,
                    recipe,
                    outcome,
                    baseline,
                    ops,
                    data,
                    source_sha,
                    key,
                    settings,
                )
            )
            bars.finish(tag, f"packed {outcome.winner.plan.name}")
    if not built:
        _nothing_built(skipped)
    return CompileResult(
        bundles=tuple(built),
        skipped=tuple(skipped),
        float_size_bytes=float_size,
        float_latency_ms=float_latency,
        float_runtime=f"{host.runtime}, {HOST_THREADS} thread",
        float_accuracy=_accuracy(_primary(reference.outputs, request.output), data.y),
        metric=metric.name,
        float_metric=float_metric,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
    )


def _source_artifacts(
    source: Source, request: CompileRequest, report: Reporter
) -> tuple[dict[Format, Artifact], str, TorchModel | None]:
    """The user's model as the first artifact, its sha256, and the PyTorch module if any.
    A PyTorch model's digest covers its weights and its class (the code is not hashed)."""
    if isinstance(source, OnnxSource | TfliteSource):
        digest, start = source.sha256(), source_format(source)
        return {start: Artifact(start, digest, path=source.path)}, digest, None
    report.step(f"building PyTorch model {source.spec}")
    model = load_torch(source, seed=request.seed)
    digest = model.sha256()
    module_class = type(model.module)
    identity = f"{digest}:{module_class.__module__}.{module_class.__qualname__}"
    return {Format.TORCH: Artifact(Format.TORCH, identity)}, digest, model


@dataclass(frozen=True)
class _Data:
    x: Samples
    y: Any
    calibration: Dataset
    evaluation: Dataset | None


def _check_data(
    request: CompileRequest, interface: Any, calibration: Dataset, evaluation: Dataset | None
) -> _Data:
    """Bind the calibration and eval arrays to the model's named inputs (shapes checked)."""
    calibration = bind(calibration, interface.inputs)
    evaluation = bind(evaluation, interface.inputs) if evaluation is not None else None
    data = evaluation or calibration
    assert data.samples is not None
    for spec in interface.inputs:
        fixed = spec.shape[0] if spec.shape else None
        if data.samples.batched[spec.name] and isinstance(fixed, int) and fixed != 1:
            raise CompileError(
                f"MODEL {request.model!r}: input {spec.name!r} has a fixed batch of {fixed}; "
                "the compiler needs a dynamic batch axis or a batch of 1"
            )
    return _Data(x=data.samples, y=data.y, calibration=calibration, evaluation=evaluation)


def _check_fallback(recipes: Sequence[Recipe], ops: Any) -> None:
    """Before anything is built: ONNX ops a profile's accelerator cannot run. A TFLite
    profile lists TFLite ops, checked on the converted model (:func:`_check_profile_ops`)."""
    for recipe in recipes:
        if recipe.profile.format is not ArtifactFormat.TFLITE:
            _check_profile_ops(recipe.profile, ops)


def _check_profile_ops(profile: HardwareProfile, ops: Any) -> tuple[str, ...]:
    """The ops of ``ops`` that would fall back to the CPU; raise when the profile forbids it."""
    falling = fallback_ops(ops, profile)
    if falling and not profile.execution.allow_cpu_fallback:
        accelerator = profile.hardware.accelerator_name or profile.accelerator.value
        raise CompileError(
            f"{profile.tag}: op {', '.join(falling)} cannot run on the {accelerator} and "
            "the profile forbids CPU fallback"
        )
    return falling


def artifact_ops(path: Path) -> Counter[str]:
    """Op types of an ONNX or TFLite artifact (TFLite builtin names, e.g. ``CONV_2D``)."""
    if path.suffix == ".tflite":
        return Counter(step.op for step in budget.read_tflite(path).steps)
    return op_types(path)


def _package(
    request: CompileRequest,
    recipe: Recipe,
    outcome: SearchOutcome,
    reference: FloatReference,
    ops: Any,
    data: _Data,
    source_sha: str,
    key: SigningKey,
    settings: SearchSettings,
) -> BuiltBundle:
    winner: Measured | None = outcome.winner
    assert winner is not None
    profile = recipe.profile
    tag = profile.tag
    precision = winner.plan.precision
    artifact = winner.artifact
    host = winner.host or host_for(artifact.file, like=reference.host)
    memory = budget.check(profile, artifact.file)  # microcontrollers: fits, or one line
    all_outputs = winner.outputs if winner.outputs is not None else host.run_all(reference.x)
    import numpy as np

    outputs = _primary(all_outputs, request.output)
    float_outputs = _primary(reference.outputs, request.output)
    agreement = None
    if _is_classifier(outputs):
        agreement = float(np.mean(outputs.argmax(axis=1) == float_outputs.argmax(axis=1)))
    accuracy, float_accuracy = _accuracy(outputs, data.y), _accuracy(float_outputs, data.y)
    max_error = max(
        float(np.max(np.abs(all_outputs[name] - reference.outputs[name])))
        for name in reference.outputs
    )
    evidence = Evidence(
        size_bytes=winner.size,
        float_size_bytes=reference.size(),
        max_abs_error=max_error,
        top1_agreement=agreement,
        accuracy_delta=None
        if accuracy is None or float_accuracy is None
        else accuracy - float_accuracy,
        host_latency_ms=winner.latency_ms,
        fallback_ops=_check_profile_ops(profile, artifact_ops(artifact.file)),
        candidates=tuple(outcome.candidates),
        excluded_nodes=outcome.excluded_nodes,
        selection=outcome.selection,
        tensor_arena_bytes=memory.arena_bytes if memory is not None else None,
        flash_bytes=memory.flash_bytes if memory is not None else None,
    )
    directory = prepare_directory(request.out, bundle_stem(request.name, request.version, tag))
    (directory / MODEL_FILE[profile.format]).write_bytes(artifact.file.read_bytes())
    golden_inputs = golden.choose_inputs(
        reference.x, all_outputs, reference.outputs, request.golden_count
    )
    samples = golden.write_golden(directory, host, golden_inputs, precision)
    content = BundleContent(
        name=request.name,
        version=request.version,
        profile=tag,
        format=profile.format,
        precision=precision,
        interface=artifact_interface(artifact.file),
        lineage=Lineage(
            source_model_sha256=source_sha,
            calibration_data_sha256=data.calibration.sha256,
            eval_data_sha256=data.evaluation.sha256 if data.evaluation is not None else None,
            compiler_version=edgefleet.__version__,
            passes=artifact.lineage(),
            seed=request.seed,
        ),
        evidence=evidence,
        golden=samples,
    )
    bundle = seal_and_pack(directory, content, key)
    notes = list(recipe.notes)
    rejected = [c for c in outcome.candidates if not c.accepted and c.precision != precision.value]
    notes.extend(f"{c.name} rejected: {c.reason}" for c in rejected)
    return BuiltBundle(
        profile=tag,
        bundle=bundle,
        notes=tuple(notes),
        batch_ms=winner.batch_ms,
        float_batch_ms=winner.float_batch_ms,
        speed_batch=winner.batch_size or settings.speed_batch,
    )


def _primary(outputs: Outputs, chosen: str | None) -> FloatArray:
    """The output labels and top-1 agreement read: the chosen one, else the first."""
    return outputs[chosen] if chosen is not None else next(iter(outputs.values()))


def _is_classifier(outputs: FloatArray) -> bool:
    return outputs.ndim == 2 and outputs.shape[1] >= 2


def _accuracy(outputs: FloatArray, labels: Any) -> float | None:
    import numpy as np

    if labels is None or not _is_classifier(outputs):
        return None
    return float(np.mean(outputs.argmax(axis=1) == labels))


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
    """Tags or profile YAML files (see :mod:`compiler.targets`)."""
    return load_targets(tags)
