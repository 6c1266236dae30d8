"""GPU profile check: is the GPU provider the one actually used, and how fast is it?

onnxruntime only warns when a requested execution provider is missing and then runs on the
CPU, so a GPU bundle can "work" without ever touching the GPU. This script checks that it
does not, in two steps:

``prepare DIR`` (any machine, CPU only): builds the ResNet-18 of ``bench/compile_bench.py``
(random weights, seeded), exports it to ONNX, and compiles it with ``edgefleet compile`` for a
GPU profile (default ``nvidia/jetson-orin-nano``: fp16, TensorRT then CUDA provider options).
The signed bundle, its public key and the fp32 model's outputs on the check inputs go to DIR.
Accuracy of the fp16 artifact against fp32 is checked on the CPU here, as the compiler does.

``run DIR`` (the GPU machine, with ``onnxruntime-gpu``): verifies the bundle and loads it the
way the agent does (``edge_agent.runtime.ort``: the profile's providers in order, CPU last),
then fails unless the provider actually used is TensorRT or CUDA. It measures, side by side in
one run, batch-1 latency and batch-N throughput of the GPU session against a CPU session of
the same artifact, and the GPU outputs' agreement with the fp32 reference. The result is
printed and written as JSON (``--json``).

Exit status: 0 when the GPU provider is used and outputs agree; 1 otherwise, with one line
saying why (for example, which providers this onnxruntime build has).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEFAULT_PROFILE = "nvidia/jetson-orin-nano"
RESOLUTION = 128


def prepare(directory: Path, profile: str, samples: int) -> None:
    """Compile the ResNet-18 for ``profile`` into ``directory`` (CPU only)."""
    import torch

    from bench.compile_bench import resnet18

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = resnet18()
    x = np.random.default_rng(0).normal(size=(samples, 3, RESOLUTION, RESOLUTION))
    x = x.astype(np.float32)
    onnx_path = directory / "resnet18.onnx"
    torch.onnx.export(
        model,
        (torch.from_numpy(x[:1]),),
        str(onnx_path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    np.save(directory / "inputs.npy", x)
    np.save(directory / "reference.npy", reference)
    edgefleet = [sys.executable, "-m", "edgefleet"]
    _call([*edgefleet, "keys", "generate", "--out", str(directory), "--name", "check"])
    _call(
        [
            *edgefleet,
            "compile",
            str(onnx_path),
            "--profile",
            profile,
            "--calibration",
            str(directory / "inputs.npy"),
            "--metric",
            "cosine",
            "--out",
            str(directory / "bundles"),
            "--key",
            str(directory / "check.key"),
            "--name",
            "resnet18",
            "--version",
            "1.0.0",
        ]
    )
    (directory / "profile.txt").write_text(profile + "\n")
    print(f"prepared {directory}: run 'python bench/gpu_check.py run {directory}' on the GPU")


def _call(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: {' '.join(command[2:4])} failed (exit {done.returncode})")


def run(directory: Path, batch: int, runs: int) -> dict[str, Any]:
    """Load the bundle as the agent does and measure GPU against CPU. Raises SystemExit."""
    import onnxruntime as ort

    from edge_agent.runtime.ort import OnnxRuntimeBackend
    from edgefleet.bundle.signing import load_verify_key
    from edgefleet.bundle.store import verify_bundle
    from hardware_profiles import load_profile

    profile = load_profile((directory / "profile.txt").read_text().strip())
    bundle_dirs = [p for p in (directory / "bundles").iterdir() if p.is_dir()]
    if len(bundle_dirs) != 1:
        raise SystemExit(f"gpu_check: expected one bundle in {directory / 'bundles'}")
    bundle = verify_bundle(bundle_dirs[0], [load_verify_key(directory / "check.pub")])
    available = ort.get_available_providers()
    if not set(GPU_PROVIDERS) & set(available):
        raise SystemExit(
            f"gpu_check: this onnxruntime {ort.__version__} has no GPU provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    gpu = OnnxRuntimeBackend(profile).prepare(bundle.model_path, bundle.manifest)
    if gpu.provider not in GPU_PROVIDERS:
        raise SystemExit(
            f"gpu_check: the bundle runs on {gpu.provider}, not on a GPU provider "
            f"(profile asks {', '.join(profile.execution.providers)}; "
            f"available: {', '.join(available)})"
        )
    cpu_session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    x = np.load(directory / "inputs.npy")
    reference = np.load(directory / "reference.npy")
    name = bundle.manifest.interface.inputs[0].name

    def on_gpu(feed: np.ndarray) -> np.ndarray:
        return np.asarray(gpu.run({name: feed})[0])

    def on_cpu(feed: np.ndarray) -> np.ndarray:
        return np.asarray(cpu_session.run(None, {name: feed})[0])

    outputs = np.concatenate([on_gpu(x[i : i + 1]) for i in range(len(x))]).astype(np.float32)
    cosines = _cosines(outputs, reference)
    big = np.concatenate([x] * (batch // len(x) + 1))[:batch]
    result = {
        "profile": profile.tag,
        "precision": bundle.manifest.precision,
        "provider": gpu.provider,
        "onnxruntime": ort.__version__,
        "gpu_ms_batch1": _median_ms(on_gpu, x[:1], runs),
        "cpu_ms_batch1": _median_ms(on_cpu, x[:1], runs),
        "gpu_ms_batchN": _median_ms(on_gpu, big, max(runs // 10, 5)),
        "cpu_ms_batchN": _median_ms(on_cpu, big, max(runs // 10, 5)),
        "batch": batch,
        "cosine_min": float(cosines.min()),
        "top1_agreement": float(np.mean(outputs.argmax(1) == reference.argmax(1))),
    }
    return result


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.asarray(np.sum(a2 * b2, axis=1) / np.maximum(norms, 1e-12))


def _median_ms(run_once: Callable[[np.ndarray], np.ndarray], feed: np.ndarray, runs: int) -> float:
    for _ in range(5):
        run_once(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once(feed)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    make = steps.add_parser("prepare", help="compile the check bundle (CPU machine)")
    make.add_argument("directory", type=Path)
    make.add_argument("--profile", default=DEFAULT_PROFILE)
    make.add_argument("--samples", type=int, default=16)
    check = steps.add_parser("run", help="check the provider and time it (GPU machine)")
    check.add_argument("directory", type=Path)
    check.add_argument("--batch", type=int, default=64)
    check.add_argument("--runs", type=int, default=200)
    check.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.directory, args.profile, args.samples)
        return
    result = run(args.directory, args.batch, args.runs)
    for key, value in result.items():
        print(f"{key:16} {value:.4g}" if isinstance(value, float) else f"{key:16} {value}")
    print(
        f"GPU vs CPU: batch 1 {result['cpu_ms_batch1'] / result['gpu_ms_batch1']:.1f}x faster, "
        f"batch {result['batch']} {result['cpu_ms_batchN'] / result['gpu_ms_batchN']:.1f}x faster"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if result["cosine_min"] < 0.99:
        raise SystemExit(
            f"gpu_check: GPU outputs disagree with fp32 (cosine {result['cosine_min']:.4f})"
        )


if __name__ == "__main__":
    main()
