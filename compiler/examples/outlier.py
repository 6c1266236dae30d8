"""A model built to break naive int8: one layer whose input has a channel ~1000x the others.

``outlier_mlp`` is an MLP (256 -> 512 -> 512 -> 10, ReLU) whose second layer emits channel 0
about 1000x larger than the rest (from its bias: its weights quantize
well), while the head barely uses that channel. Calibrated 8-bit
activations over the head's input range (~0..3000) round every ordinary channel (~0..3) to a
handful of levels, and the predictions fall apart. Keeping the head in float fixes it; the
rest quantizes fine.

    python -m compiler.examples.outlier --out data/
    edgefleet compile compiler.examples.outlier:outlier_mlp -p x86-64/avx512-vnni \\
        --calibration data/calibration.npy --eval data/eval.npz --metric top1_agreement ...
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

SEED = 0
FEATURES = 256
HIDDEN = 512
CLASSES = 10
OUTLIER_SCALE = 1000.0


def build_outlier_mlp() -> nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    body = nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()
    )
    head = nn.Linear(HIDDEN, CLASSES)
    with torch.no_grad():
        layer = body[2]
        assert isinstance(layer, nn.Linear)
        layer.bias[0] = 3 * OUTLIER_SCALE  # channel 0 sits near 3000, the others near 0..3
        head.weight[:, 0].mul_(1.0 / OUTLIER_SCALE**2)
    return nn.Sequential(body, head).eval()


def outlier_mlp() -> tuple[nn.Module, torch.Tensor]:
    import torch

    return build_outlier_mlp(), torch.from_numpy(samples(2, seed=1))


def samples(count: int, *, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)


def write_datasets(
    out_dir: Path, *, calibration: int = 128, evaluation: int = 256
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    calib, evalset = out_dir / "calibration.npy", out_dir / "eval.npz"
    np.save(calib, samples(calibration, seed=2))
    np.savez(evalset, x=samples(evaluation, seed=3))
    return calib, evalset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m compiler.examples.outlier")
    parser.add_argument("--out", type=Path, required=True, help="Output directory.")
    args = parser.parse_args(argv)
    for path in write_datasets(args.out):
        print(path)  # noqa: T201


if __name__ == "__main__":
    main()
