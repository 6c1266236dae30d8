"""The demo model and its data sets, as ``python -m compiler.examples.digits`` writes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler.examples.digits import load_split, trained_cnn


def test_module_writes_calibration_and_eval_sets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "compiler.examples.digits", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    calibration = np.load(tmp_path / "calibration.npy")
    with np.load(tmp_path / "eval.npz") as evaluation:
        x, y = evaluation["x"], evaluation["y"]
    assert calibration.shape == (1347, 1, 8, 8) and calibration.dtype == np.float32
    assert x.shape == (450, 1, 8, 8) and y.shape == (450,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert sorted(set(y.tolist())) == list(range(10))


@pytest.mark.integration
def test_trained_cnn_is_accurate_and_weight_heavy() -> None:
    model, example = trained_cnn()
    assert tuple(example.shape[1:]) == (1, 8, 8)
    assert sum(p.numel() for p in model.parameters()) >= 40_000
    _, x_test, _, y_test = load_split()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    assert float(np.mean(predicted == y_test)) >= 0.95
    assert not model.training
