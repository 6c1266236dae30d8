"""A small CNN trained on scikit-learn's 8x8 digits: the demo model of ``edgefleet compile``.

    python -m compiler.examples.digits --out data/
    edgefleet compile compiler.examples.digits:trained_cnn --profile x86-64/avx512-vnni \\
        --calibration data/calibration.npy --eval data/eval.npz --out bundles \\
        --key keys/edgefleet.key --name digits --version 1.0.0

Images are ``N x 1 x 8 x 8`` float32 in ``[0, 1]`` (pixel / 16). The split is
``train_test_split(test_size=0.25, random_state=0, stratify=y)``; training is deterministic
(fixed seeds, a fixed number of one-cycle Adam epochs) and takes a few seconds on one core.
The network has ~94k parameters so that weights dominate the file and int8 shrinks it.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch
    from torch import nn

SEED = 0
EPOCHS = 8
BATCH = 32
MAX_LR = 5e-3
PREPROCESSING = "8x8 grayscale digit, pixel values / 16 -> float32 in [0, 1], shape N x 1 x 8 x 8"


def load_split() -> tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    """``(x_train, x_test, y_train, y_test)`` of the digits data set, as the model sees it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, x_test, y_train, y_test


def build_cnn() -> nn.Module:
    """Three 3x3 convolutions (32, 64, 128 channels) at 8x8, 4x4 and 2x2, global average
    pooling and a linear head: ~94k parameters, ~0.6M multiply-adds per image."""
    return _conv_net((32, 64, 128))


def _conv_net(widths: tuple[int, ...]) -> nn.Module:
    """3x3 convolutions of the given widths, each after the first at half the resolution,
    then global average pooling and a linear head over the ten digits."""
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            channels = 1
            for index, width in enumerate(widths):
                if index:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(channels, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # mean over H, W rather than flatten: keeps the batch axis dynamic for every exporter.
            out: torch.Tensor = self.head(self.features(x).mean(dim=(2, 3)))
            return out

    return DigitsCNN()


@functools.cache
def _trained_state() -> dict[str, torch.Tensor]:
    """Train once per process (deterministically) and keep the weights."""
    import torch

    threads = torch.get_num_threads()
    # One thread: as fast on a tiny model, and far steadier on a busy machine.
    torch.set_num_threads(1)
    try:
        return _train()
    finally:
        torch.set_num_threads(threads)


def _train() -> dict[str, torch.Tensor]:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    x_train, _, y_train, _ = load_split()
    model = build_cnn()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    steps_per_epoch = (len(x) + BATCH - 1) // BATCH
    optimizer = torch.optim.Adam(model.parameters(), lr=MAX_LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=MAX_LR, total_steps=EPOCHS * steps_per_epoch
    )
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        permutation = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), BATCH):
            index = permutation[start : start + BATCH]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def small_cnn() -> nn.Module:
    """A distillation student for the digits CNN (``--distill-student
    compiler.examples.digits:small_cnn``): 24 and 48 channels, ~11k parameters (~12%)."""
    import torch

    torch.manual_seed(SEED)
    return _conv_net((24, 48))


def write_training_set(path: Path) -> Path:
    """``x`` and ``y`` of the training split as one .npz (``--train-data`` for distillation)."""
    x_train, _, y_train, _ = load_split()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x_train, y=y_train)
    return path


def fine_tune(model: nn.Module, epochs: int) -> None:
    """The digits training hook (``--train-step compiler.examples.digits:fine_tune``): train
    ``model`` in place for ``epochs`` epochs on the training split (Adam, lr 1e-3)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster and steadier
    try:
        _fine_tune(model, epochs)
    finally:
        torch.set_num_threads(threads)


def _fine_tune(model: nn.Module, epochs: int) -> None:
    import torch
    from torch import nn

    x_train, _, y_train, _ = load_split()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), BATCH):
            index = permutation[start : start + BATCH]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()


def trained_cnn() -> tuple[nn.Module, torch.Tensor]:
    """A freshly built, trained digits CNN in eval mode, and an example input (2 test images)."""
    import torch

    model = build_cnn()
    model.load_state_dict({name: t.clone() for name, t in _trained_state().items()})
    _, x_test, _, _ = load_split()
    return model.eval(), torch.from_numpy(x_test[:2].copy())


def write_datasets(out_dir: Path) -> tuple[Path, Path]:
    """Write ``calibration.npy`` (training images) and ``eval.npz`` (x: test images, y: labels)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, x_test, _, y_test = load_split()
    calibration, evaluation = out_dir / "calibration.npy", out_dir / "eval.npz"
    np.save(calibration, x_train)
    np.savez(evaluation, x=x_test, y=y_test)
    return calibration, evaluation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m compiler.examples.digits",
        description="Write the digits calibration and eval data sets.",
    )
    parser.add_argument("--out", type=Path, required=True, help="Output directory.")
    args = parser.parse_args(argv)
    calibration, evaluation = write_datasets(args.out)
    print(f"calibration data  {calibration}")  # noqa: T201
    print(f"eval data         {evaluation}")  # noqa: T201


if __name__ == "__main__":
    main()
