"""Structured pruning, lottery tickets and distillation on the digits CNN: real torch,
real torch-pruning, real onnxruntime. The acceptance: pruning half of the channels shrinks the
ONNX file at least 1.8x and loses at most 2 points after fine-tuning; a student with at most
25% of the teacher's parameters reaches at least 95% of its accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefleet.bundle import verify_bundle
from tests.compiler.conftest import DIGITS, DigitsData, Keys

pytestmark = pytest.mark.integration

CPU = "x86-64/avx512-vnni"
FINE_TUNE = "compiler.examples.digits:fine_tune"


@pytest.fixture
def one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train faster and steadier on one thread
    yield
    torch.set_num_threads(threads)


def _accuracy(model: Path, data: DigitsData) -> float:
    from compiler.runner import HostModel

    with np.load(data.evaluation) as loaded:
        x, y = loaded["x"], loaded["y"]
    return float(np.mean(HostModel(model).run(x).argmax(axis=1) == y))


def test_pruning_half_the_channels_shrinks_the_file_and_keeps_accuracy(
    digits_data: DigitsData, keys: Keys, float_onnx: Path, tmp_path: Path
) -> None:
    from edgefleet.cli import app

    args = ["compile", DIGITS, "--profile", CPU, "--quantization", "none"]
    args += ["--prune", "0.5", "--train-step", FINE_TUNE, "--fine-tune-epochs", "2"]
    args += ["--calibration", str(digits_data.calibration), "--eval", str(digits_data.evaluation)]
    args += ["--out", str(tmp_path), "--key", str(keys.private), "--name", "pruned"]
    result = CliRunner().invoke(app, [*args, "--version", "1.0.0"])
    assert result.exit_code == 0, (result.output, result.exception)
    bundle = verify_bundle(tmp_path / "pruned-1.0.0-x86-64_avx512-vnni", [keys.verify])
    manifest = bundle.manifest
    assert [p.name for p in manifest.lineage.passes] == [
        "prune_channels",
        "export_onnx",
        "cleanup_onnx",
    ]
    config = manifest.lineage.passes[0].config
    assert (config["ratio"], config["train_step"], config["fine_tune_epochs"]) == (
        0.5,
        FINE_TUNE,
        2,
    )
    shrink = float_onnx.stat().st_size / bundle.model_path.stat().st_size
    assert shrink >= 1.8, shrink
    drop = _accuracy(float_onnx, digits_data) - _accuracy(bundle.model_path, digits_data)
    assert drop <= 0.02, drop


def test_lottery_ticket_rewinds_and_reaches_the_sparsity(
    tmp_path: Path, digits_data: DigitsData, one_thread: None
) -> None:
    import torch

    from compiler.examples.digits import trained_cnn
    from compiler.passes import Artifact, Format, PassContext
    from compiler.passes.lottery_ticket import LotteryConfig, LotteryTicket
    from compiler.sources import TorchModel
    from compiler.torch_state import load_module

    module, example = trained_cnn()
    context = PassContext(workdir=tmp_path, torch_model=TorchModel(module, example))
    config = LotteryConfig(sparsity=0.6, rounds=2, epochs=1, train_step=FINE_TUNE)
    LotteryTicket(config).run(Artifact(Format.TORCH, "digits"), tmp_path / "t", context)
    ticket = load_module(tmp_path / "t", module)
    weights = [
        m.weight for m in ticket.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert 0.58 <= zeros <= 0.62
    assert all(int((m.weight == 0).sum()) == 0 for m in module.modules() if hasattr(m, "weight"))
    with np.load(digits_data.evaluation) as loaded:
        x, y = torch.from_numpy(loaded["x"]), loaded["y"]
    with torch.no_grad():
        accuracy = float(np.mean(ticket(x).argmax(1).numpy() == y))
        original = float(np.mean(module(x).argmax(1).numpy() == y))
    assert accuracy >= original - 0.03


def test_distilled_student_is_small_and_accurate(
    digits_data: DigitsData, keys: Keys, tmp_path: Path, one_thread: None
) -> None:
    from compiler.examples.digits import write_training_set
    from compiler.pipeline import CompileRequest, compile_model

    train = write_training_set(tmp_path / "train.npz")
    request = CompileRequest(
        model=DIGITS,
        profiles=[CPU],
        calibration=digits_data.calibration,
        eval_data=digits_data.evaluation,
        out=tmp_path / "out",
        key=keys.private,
        name="student",
        version="1.0.0",
        quantization="none",
        distill_student="compiler.examples.digits:small_cnn",
        train_data=train,
    )
    (built,) = compile_model(request).bundles
    bundle = verify_bundle(built.bundle.directory, [keys.verify])
    passes = bundle.manifest.lineage.passes
    assert [p.name for p in passes] == ["distill", "export_onnx", "cleanup_onnx"]
    config = passes[0].config
    assert (config["temperature"], config["alpha"], config["epochs"]) == (4.0, 0.7, 12)
    assert len(config["train_data_sha256"]) == 64
    import torch

    from compiler.examples.digits import small_cnn, trained_cnn
    from compiler.torch_state import count_parameters

    teacher, _ = trained_cnn()
    assert count_parameters(small_cnn()) <= 0.25 * count_parameters(teacher)
    with np.load(digits_data.evaluation) as loaded:
        x, y = loaded["x"], loaded["y"]
    with torch.no_grad():
        teacher_accuracy = float(np.mean(teacher(torch.from_numpy(x)).argmax(1).numpy() == y))
    student_accuracy = _accuracy(bundle.model_path, digits_data)
    assert student_accuracy >= 0.95 * teacher_accuracy, (student_accuracy, teacher_accuracy)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prune", "1.5"], "ratio: Input should be less than 1"),
        (["--lottery-sparsity", "0.5"], "--lottery-sparsity needs --train-step"),
        (["--distill-student", "compiler.examples.digits:small_cnn"], "needs --train-data"),
        (["--prune", "0.5", "--train-step", "nowhere.at_all:fn"], "cannot import module"),
    ],
)
def test_bad_compression_options_fail_with_one_line(
    digits_data: DigitsData, keys: Keys, tmp_path: Path, extra: list[str], message: str
) -> None:
    from compiler.errors import CompileError
    from compiler.pipeline import CompileRequest, compile_model

    fields: dict[str, object] = {}
    flags = dict(zip(extra[::2], extra[1::2], strict=True))
    if "--prune" in flags:
        fields["prune"] = float(flags["--prune"])
    if "--lottery-sparsity" in flags:
        fields["lottery_sparsity"] = float(flags["--lottery-sparsity"])
    if "--distill-student" in flags:
        fields["distill_student"] = flags["--distill-student"]
    if "--train-step" in flags:
        fields["train_step"] = flags["--train-step"]
    request = CompileRequest(
        model=DIGITS,
        profiles=[CPU],
        calibration=digits_data.calibration,
        out=tmp_path / "out",
        key=keys.private,
        name="bad",
        version="1.0.0",
        **fields,  # type: ignore[arg-type]
    )
    with pytest.raises(CompileError, match=message) as caught:
        compile_model(request)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_pruning_an_onnx_file_is_refused(
    float_onnx: Path, digits_data: DigitsData, keys: Keys, tmp_path: Path
) -> None:
    from compiler.errors import CompileError
    from compiler.pipeline import CompileRequest, compile_model

    request = CompileRequest(
        model=str(float_onnx),
        profiles=[CPU],
        calibration=digits_data.calibration,
        out=tmp_path,
        key=keys.private,
        name="x",
        version="1.0.0",
        prune=0.5,
    )
    with pytest.raises(CompileError, match=r"--prune needs a PyTorch model"):
        compile_model(request)
