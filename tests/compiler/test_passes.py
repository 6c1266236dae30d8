"""The pass / pipeline core: checks before anything runs, the lazy registry, lineage, and the
content-digest cache (a re-run is a cache hit)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.metrics import Bound, resolve_metric
from compiler.passes import Artifact, Format, PassCache, PassContext, Pipeline, PipelineError
from compiler.passes.cleanup_onnx import CleanupConfig, CleanupOnnx
from compiler.passes.convert_fp16 import ConvertFp16, Fp16Config
from compiler.passes.quantize_static import QuantizeStatic, StaticQdqConfig
from compiler.passes.registry import PASSES, availability, pass_class
from compiler.passes.torch_to_tflite import TorchToTflite, TorchToTfliteConfig
from edgefleet.bundle import sha256_file
from hardware_profiles import load_profile


def test_a_pass_the_profile_cannot_run_is_named_before_anything_runs() -> None:
    cpu = load_profile("x86-64/avx512-vnni")
    pipeline = Pipeline([ConvertFp16(Fp16Config())], source=Format.ONNX)
    with pytest.raises(
        PipelineError, match=r"x86-64/avx512-vnni: pass 'convert_fp16'.*precision:fp16"
    ):
        pipeline.check(cpu)


def test_a_format_mismatch_names_the_pass() -> None:
    quantize = QuantizeStatic(StaticQdqConfig())
    pipeline = Pipeline([quantize, CleanupOnnx(CleanupConfig())], source=Format.ONNX)
    problems = pipeline.problems(None)
    assert problems == ["pass 'cleanup_onnx': takes onnx, but gets onnx-qdq from the step before"]


@pytest.mark.usefixtures("no_tool_envs")
def test_a_missing_optional_dependency_names_the_pass_and_what_to_install() -> None:
    coral = load_profile("google/coral-edgetpu")
    pipeline = Pipeline([TorchToTflite(TorchToTfliteConfig())], source=Format.TORCH)
    with pytest.raises(
        PipelineError, match=r"pass 'torch_to_tflite': needs .*edgefleet tools setup litert-torch"
    ):
        pipeline.check(coral)
    # an ONNX target cannot take a TFLite pipeline's output
    assert any("runs onnx models" in p for p in pipeline.problems(load_profile("raspberry-pi/4b")))


@pytest.mark.usefixtures("no_tool_envs")
def test_registry_is_explicit_and_lazy() -> None:
    found = availability()
    assert set(found) == set(PASSES)
    assert found["quantize_static_qdq"] is None
    assert found["torch_to_tflite"] is not None and "litert-torch" in found["torch_to_tflite"]
    assert pass_class("convert_fp16") is ConvertFp16
    code = (
        "import sys, compiler.passes.registry as r\n"
        "r.availability()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'onnx', 'onnxruntime', 'litert_torch'})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.integration
def test_lineage_and_cache_by_content_digest(float_onnx: Path, tmp_path: Path) -> None:
    cache = PassCache(tmp_path / "cache")
    source = Artifact(Format.ONNX, sha256_file(float_onnx), path=float_onnx)
    pipeline = Pipeline([CleanupOnnx(CleanupConfig())], source=Format.ONNX)
    context = PassContext(workdir=tmp_path / "work")
    started = time.perf_counter()
    first = pipeline.run(source, context, cache)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    second = pipeline.run(source, context, cache)
    warm = time.perf_counter() - started
    assert (cache.misses, cache.hits) == (1, 1)
    assert not first.cached and second.cached
    assert second.digest == first.digest == sha256_file(second.file)
    assert second.parent is source and second.format is Format.ONNX
    (entry,) = second.lineage()
    assert entry.name == "cleanup_onnx" and entry.config["applied"] is True
    assert entry.config_digest == CleanupConfig(applied=True).digest()
    assert warm < cold
    other = Pipeline([CleanupOnnx(CleanupConfig(optimize=False))], source=Format.ONNX)
    other.run(source, context, cache)
    assert cache.misses == 2  # another config is another key


def test_bound_for_higher_and_lower_is_better_metrics() -> None:
    agreement = resolve_metric("top1_agreement", classifier=True, has_labels=False)
    bound = Bound(max_drop=0.02)
    assert bound.holds(agreement, 0.985, 1.0) and not bound.holds(agreement, 0.97, 1.0)
    assert (
        Bound(max_drop=None, min_metric=0.99).describe(agreement, 1.0) == "top1_agreement >= 0.99"
    )
    error = resolve_metric("max_abs_error", classifier=False, has_labels=False)
    assert Bound(max_drop=0.5).holds(error, 0.4, 0.0) and not Bound(max_drop=0.5).holds(
        error, 0.6, 0.0
    )
    assert resolve_metric(None, classifier=False, has_labels=False).name == "cosine"
    assert resolve_metric(None, classifier=True, has_labels=True).name == "accuracy"
    user = resolve_metric("compiler.metrics:cosine", classifier=True, has_labels=False)
    assert user.name == "compiler.metrics:cosine" and user.higher_is_better
