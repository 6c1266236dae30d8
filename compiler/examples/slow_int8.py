"""A model whose int8 build is slower than fp32 on a CPU: the speed rule must reject it.

Depthwise 3x3 convolutions, each followed by ``tanh``: onnxruntime has no int8 kernel for
``tanh``, so static QDQ leaves a DequantizeLinear / QuantizeLinear pair around every one,
and int8 depthwise convolutions gain nothing over fp32 ones. On an x86 host with VNNI the
int8 model runs about 2-3x slower than fp32 at batch 32; its accuracy is fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

SEED = 0
CHANNELS = 32
SIDE = 16
BLOCKS = 4
CLASSES = 10


def build_depthwise_tanh() -> nn.Module:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    blocks = [
        nn.Sequential(nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, groups=CHANNELS), nn.Tanh())
        for _ in range(BLOCKS)
    ]

    class DepthwiseTanh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*blocks)
            self.head = nn.Linear(CHANNELS, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.features(x).mean(dim=(2, 3)))
            return out

    return DepthwiseTanh().eval()


def depthwise_tanh() -> tuple[nn.Module, torch.Tensor]:
    import torch

    return build_depthwise_tanh(), torch.from_numpy(samples(2, seed=1))


def samples(count: int, *, seed: int) -> np.ndarray:
    shape = (count, CHANNELS, SIDE, SIDE)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def write_datasets(out_dir: Path, *, count: int = 64) -> tuple[Path, Path]:
    """``calibration.npy`` and ``eval.npz`` (x only) of random images."""
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration, evaluation = out_dir / "calibration.npy", out_dir / "eval.npz"
    np.save(calibration, samples(count, seed=2))
    np.savez(evaluation, x=samples(count, seed=3))
    return calibration, evaluation
