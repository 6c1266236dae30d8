"""Models with several named inputs and outputs: data bound to the inputs by name (clear errors
when names or shapes do not match), every output compared, golden samples per name. The model
is built in code: ``a`` (batch, 4) float, ``b`` (batch, 4) float, ``state`` (2, 1, 3) float fed
whole per sample, outputs ``sum`` = a @ W + b and ``scaled`` = 2 * a."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.data import bind, load_dataset
from compiler.errors import CompileError
from compiler.metrics import Metric, max_abs_error, score
from compiler.pipeline import CompileRequest, compile_model
from compiler.runner import HostModel
from edgefleet.bundle import GOLDEN_INPUTS, GOLDEN_OUTPUTS, TensorSpec, golden_key
from tests.compiler.conftest import Keys

SPECS = (
    TensorSpec(name="a", dtype="float32", shape=("batch", 4)),
    TensorSpec(name="ids", dtype="int64", shape=("batch", 4)),
    TensorSpec(name="state", dtype="float32", shape=(2, 1, 3)),
)


def _save(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def test_bind_matches_names_casts_dtypes_and_tells_batch_axes(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "d.npz",
        state=np.zeros((5, 2, 1, 3)),
        ids=np.arange(20.0).reshape(5, 4),
        a=np.ones((5, 4)),
    )
    bound = bind(load_dataset(path, "calibration"), SPECS)
    samples = bound.samples
    assert samples is not None and len(samples) == 5
    assert samples.names == ("a", "ids", "state")
    assert samples.arrays["ids"].dtype == np.int64 and samples.arrays["a"].dtype == np.float32
    assert dict(samples.batched) == {"a": True, "ids": True, "state": False}
    assert not samples.dynamic  # 'state' has no batch axis: one sample per run
    one = samples.one(2)
    assert one["a"].shape == (1, 4) and one["state"].shape == (2, 1, 3)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"a": np.ones((5, 4)), "state": np.zeros((5, 2, 1, 3))},
            r"has arrays 'a', 'state' but the model inputs are 'a', 'ids', 'state' "
            r"\(missing: 'ids'\)",
        ),
        (
            {"a": np.ones((5, 3)), "ids": np.ones((5, 4)), "state": np.zeros((5, 2, 1, 3))},
            r"shape \(5, 3\), but the model input 'a' expects \(N, 4\)",
        ),
        (
            {"a": np.ones((5, 4)), "ids": np.ones((5, 4)), "state": np.zeros((5, 2, 3))},
            r"model input 'state' expects",
        ),
    ],
)
def test_names_and_shapes_that_do_not_match_fail_naming_them(
    tmp_path: Path, arrays: dict[str, Any], match: str
) -> None:
    path = _save(tmp_path / "d.npz", **arrays)
    with pytest.raises(CompileError, match=match) as caught:
        bind(load_dataset(path, "eval"), SPECS)
    assert str(path) in str(caught.value)


def test_npy_for_a_multi_input_model_asks_for_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.ones((5, 4)))
    with pytest.raises(CompileError, match="one array per input name"):
        bind(load_dataset(path, "calibration"), SPECS)


def test_arrays_with_different_sample_counts_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", a=np.ones((5, 4)), ids=np.ones((4, 4)))
    with pytest.raises(CompileError, match=r"different sample counts \('a': 5, 'ids': 4\)"):
        load_dataset(path, "calibration")


def test_single_input_models_take_any_single_array_name(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", images=np.ones((3, 4)))
    spec = (TensorSpec(name="pixels", dtype="float32", shape=("batch", 4)),)
    samples = bind(load_dataset(path, "calibration"), spec).samples
    assert samples is not None and samples.names == ("pixels",) and samples.dynamic


def test_score_reads_every_output_or_the_chosen_one() -> None:
    reference = {"p": np.zeros((2, 3), np.float32), "q": np.zeros((2, 3), np.float32)}
    outputs = {"p": np.full((2, 3), 0.1, np.float32), "q": np.full((2, 3), 0.5, np.float32)}
    metric = Metric("max_abs_error", max_abs_error, higher_is_better=False)
    assert score(metric, reference, outputs, None) == pytest.approx(0.5)
    assert score(metric, reference, outputs, None, "p") == pytest.approx(0.1)


def _two_in_two_out(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["aw"], name="matmul"),
        helper.make_node("Add", ["aw", "b"], ["sum"], name="add"),
        helper.make_node("Mul", ["a", "two"], ["scaled"], name="scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_in_two_out",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 4]),
        ],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32([2.0]), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.integration
def test_a_two_input_two_output_model_compiles_with_named_golden_samples(
    tmp_path: Path, keys: Keys
) -> None:
    model = _two_in_two_out(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    data = _save(
        tmp_path / "d.npz",
        a=rng.standard_normal((32, 4)).astype(np.float32),
        b=rng.standard_normal((32, 4)).astype(np.float32),
    )
    request = CompileRequest(
        model=str(model),
        profiles=["x86-64/avx512-vnni"],
        calibration=data,
        out=tmp_path / "out",
        key=keys.private,
        name="two",
        version="1.0.0",
        metric="max_abs_error",
        max_drop=0.1,
        speed_check=False,
        speed_batch=4,
    )
    (built,) = compile_model(request).bundles
    manifest = built.bundle.manifest
    assert [s.name for s in manifest.interface.inputs] == ["a", "b"]
    assert [s.name for s in manifest.interface.outputs] == ["sum", "scaled"]
    with np.load(built.bundle.directory / manifest.golden.file) as golden:
        arrays = {key: golden[key] for key in golden.files}
    assert set(arrays) == {
        golden_key(GOLDEN_INPUTS, "a"),
        golden_key(GOLDEN_INPUTS, "b"),
        golden_key(GOLDEN_OUTPUTS, "sum"),
        golden_key(GOLDEN_OUTPUTS, "scaled"),
    }
    artifact = HostModel(built.bundle.directory / manifest.model_file)
    feed = {"a": arrays["inputs/a"], "b": arrays["inputs/b"]}
    got = artifact.run_feed(feed)
    for name in ("sum", "scaled"):
        np.testing.assert_allclose(got[name], arrays[f"outputs/{name}"], atol=1e-6)
    expected = 2 * arrays["inputs/a"]
    assert (
        np.max(np.abs(arrays["outputs/scaled"] - expected))
        <= manifest.evidence.max_abs_error + 1e-6
    )


def test_an_unknown_output_name_is_one_clear_error(tmp_path: Path, keys: Keys) -> None:
    model = _two_in_two_out(tmp_path / "m.onnx")
    data = _save(tmp_path / "d.npz", a=np.ones((4, 4), np.float32), b=np.ones((4, 4), np.float32))
    request = CompileRequest(
        model=str(model),
        profiles=["x86-64/avx512-vnni"],
        calibration=data,
        out=tmp_path / "out",
        key=keys.private,
        name="two",
        version="1.0.0",
        output="logits",
    )
    with pytest.raises(CompileError, match=r"--output-name 'logits': .*it has 'sum', 'scaled'"):
        compile_model(request)
