"""The speed rule: a sign test on interleaved pairs, indifferent to how big a stall is, and a
real model whose int8 build is slower than fp32 rejected on a CPU profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.speed import SpeedPolicy, decide, sign_test
from edgefleet.bundle import verify_bundle
from tests.compiler.conftest import Keys

CPU = "x86-64/avx512-vnni"
SLOW = "compiler.examples.slow_int8:depthwise_tanh"


def test_sign_test_tail() -> None:
    assert sign_test(16, 16) == pytest.approx(0.5**16)
    assert sign_test(0, 16) == 1.0
    assert sign_test(8, 16) == pytest.approx(0.5982, abs=1e-4)
    assert sign_test(0, 0) == 1.0


def test_stalls_do_not_flip_a_really_faster_model() -> None:
    # int8 takes 0.75x of fp32; a few runs of each hit a 20x stall (a preempted process).
    fp32 = [1.0] * 32
    int8 = [0.75] * 32
    for i in (1, 5, 9):
        int8[i] = 20.0
    for i in (2, 7):
        fp32[i] = 20.0
    verdict = decide(fp32, int8, SpeedPolicy(), final=False)
    assert verdict is not None and verdict.faster and verdict.decided
    assert verdict.wins == 29 and verdict.ratio == pytest.approx(0.75)


def test_a_slower_model_is_rejected_and_a_tie_is_not_faster() -> None:
    slower = decide([1.0] * 16, [1.3] * 16, SpeedPolicy(), final=False)
    assert slower is not None and not slower.faster and slower.decided
    tie = [1.0, 1.1] * 8
    assert decide(tie, tie[::-1], SpeedPolicy(), final=False) is None  # measure more
    capped = decide(tie, tie[::-1], SpeedPolicy(), final=True)
    assert capped is not None and not capped.faster and not capped.decided
    assert "faster in 8 of 16 interleaved pairs" in capped.describe()


def test_a_static_batch_model_is_timed_and_described_per_sample_at_batch_1(
    tmp_path: Path,
) -> None:
    """A TFLite model with a static batch of one runs one sample per timed run whatever batch
    is asked for: the verdict says batch 1, so 'ms per sample' is not divided by 32."""
    import numpy as np

    from compiler.litert_host import LiteRtModel
    from compiler.runner import HostModel
    from compiler.speed import compare_speed
    from tests.edge_agent.helpers import write_tiny_onnx, write_tiny_tflite

    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    static = LiteRtModel(write_tiny_tflite(tmp_path / "static.tflite", batch=1))
    dynamic = HostModel(write_tiny_onnx(tmp_path / "dynamic.onnx"))
    quick = SpeedPolicy(round_pairs=4, max_pairs=4)
    verdict = compare_speed(static, static, x, batch=32, policy=quick)
    assert verdict.batch == 1 and "at batch 1;" in verdict.describe()
    ms = verdict.candidate_ms
    assert f"{ms:.4f} vs" in verdict.describe()
    assert compare_speed(dynamic, dynamic, x, batch=32, policy=quick).batch == 32


@pytest.mark.integration
def test_cpu_profile_rejects_int8_that_is_slower_than_fp32(tmp_path: Path, keys: Keys) -> None:
    from compiler.examples.slow_int8 import write_datasets
    from compiler.pipeline import CompileRequest, compile_model

    calibration, evaluation = write_datasets(tmp_path / "data")

    def build(speed_check: bool, out: str) -> tuple[str, str]:
        request = CompileRequest(
            model=SLOW,
            profiles=[CPU],
            calibration=calibration,
            eval_data=evaluation,
            out=tmp_path / out,
            key=keys.private,
            name="slow",
            version="1.0.0",
            metric="top1_agreement",
            max_drop=0.5,
            speed_check=speed_check,
        )
        (built,) = compile_model(request).bundles
        manifest = verify_bundle(built.bundle.directory, [keys.verify]).manifest
        reasons = " | ".join(c.reason for c in manifest.evidence.candidates)
        return manifest.precision, reasons

    precision, reasons = build(True, "checked")
    assert precision == "fp32"
    assert "not faster than fp32 on the host" in reasons and "interleaved pairs" in reasons
    # The same model with the check off ships int8: the rule alone decided.
    precision, _ = build(False, "unchecked")
    assert precision == "int8"
