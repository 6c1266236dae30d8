"""Microcontroller budgets: the tensor arena estimate (peak live activations over the execution
order) on hand-built graphs, and the flash / arena checks against the Cortex-M7 profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import budget
from compiler.budget import Graph, MemoryEstimate, Step
from compiler.errors import CompileError
from hardware_profiles import load_profile


def _chain(*sizes: int) -> Graph:
    """input -> op0 -> t1 -> op1 -> t2 ...: tensor i has sizes[i] bytes."""
    steps = tuple(Step(f"OP{i}", (i,), (i + 1,)) for i in range(len(sizes) - 1))
    return Graph(dict(enumerate(sizes)), steps, (0,), (len(sizes) - 1,))


def test_a_chain_peaks_at_the_largest_input_plus_output() -> None:
    arena, where = budget.peak_live_bytes(_chain(64, 2048, 512, 16))
    assert (arena, where) == (2048 + 512, "#1 OP1")


def test_a_skip_connection_stays_alive_until_its_last_reader() -> None:
    # t0 -> conv -> t1 -> conv -> t2 ; add(t0, t2) -> t3: t0 is alive through all three ops
    steps = (Step("CONV", (0,), (1,)), Step("CONV", (1,), (2,)), Step("ADD", (0, 2), (3,)))
    graph = Graph({0: 1000, 1: 1000, 2: 1000, 3: 1000}, steps, (0,), (3,))
    arena, _ = budget.peak_live_bytes(graph)
    assert arena == 3 * 1008  # three tensors of 1000 bytes, each aligned to 16


def test_sizes_are_aligned_to_sixteen_bytes() -> None:
    assert [budget.aligned(n) for n in (1, 16, 17, 40)] == [16, 16, 32, 48]


def test_model_outputs_live_to_the_end() -> None:
    # the first op's output is a model output: still alive when the last op runs
    steps = (Step("A", (0,), (1,)), Step("B", (0,), (2,)))
    graph = Graph({0: 16, 1: 4096, 2: 16}, steps, (0,), (1, 2))
    assert budget.peak_live_bytes(graph) == (16 + 4096 + 16, "#1 B")


def test_cortex_m7_limits_are_the_tighter_of_budget_and_hardware() -> None:
    m7 = load_profile("arm/cortex-m7")
    assert budget.limits(m7) == (1048576, 262144)  # budgets below flash_kb / ram_kb
    assert budget.is_microcontroller(m7)
    assert not budget.is_microcontroller(load_profile("raspberry-pi/4b"))


def test_over_budget_names_the_profile_the_estimate_and_the_limit() -> None:
    m7 = load_profile("arm/cortex-m7")
    fits = MemoryEstimate(arena_bytes=200_000, flash_bytes=900_000, peak_op="#3 CONV_2D")
    assert budget.problems(m7, fits) == []
    over = MemoryEstimate(arena_bytes=300_000, flash_bytes=2_000_000, peak_op="#3 CONV_2D")
    found = budget.problems(m7, over)
    assert found == [
        "model 2000000 bytes, over the flash budget of 1048576",
        "tensor arena estimate 300000 bytes (peak at op #3 CONV_2D), over the budget of 262144",
    ]


def test_check_fails_the_compile_with_one_line(tmp_path: Path) -> None:
    """A real .tflite whose activations cannot fit 256 KiB: a float 1x3x224x224 -> 32 ch conv
    built with the LiteRT flatbuffer schema."""
    model = _conv_tflite(tmp_path / "big.tflite", channels=32, side=224)
    with pytest.raises(CompileError) as caught:
        budget.check(load_profile("arm/cortex-m7"), model)
    message = str(caught.value)
    assert message.startswith("arm/cortex-m7: tensor arena estimate ")
    assert "peak at op #0 CONV_2D" in message and "\n" not in message
    # the same file is not checked for a profile that is not a microcontroller
    assert budget.check(load_profile("google/coral-edgetpu"), model) is None


def test_estimate_reads_a_real_tflite_file(tmp_path: Path) -> None:
    model = _conv_tflite(tmp_path / "small.tflite", channels=4, side=8)
    estimate = budget.estimate_tflite(model)
    # float32 input 1x8x8x3 (768 B) and output 1x8x8x4 (1024 B), both alive at the only op
    assert estimate.arena_bytes == 768 + 1024
    assert estimate.flash_bytes == model.stat().st_size


def _conv_tflite(path: Path, *, channels: int, side: int) -> Path:
    """One CONV_2D (NHWC float32 input 1 x side x side x 3) written with the schema objects."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils as fb

    schema = fb.schema_fb
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CONV_2D
    model.operatorCodes = [code]
    empty = schema.BufferT()
    weights = schema.BufferT()
    weights.data = np.zeros((channels, 1, 1, 3), np.float32).tobytes()
    model.buffers = [empty, empty, weights, empty]

    def tensor(name: str, shape: list[int], buffer: int) -> object:
        item = schema.TensorT()
        item.name, item.shape, item.type, item.buffer = (
            name,
            shape,
            schema.TensorType.FLOAT32,
            buffer,
        )
        return item

    graph = schema.SubGraphT()
    graph.tensors = [
        tensor("input", [1, side, side, 3], 1),
        tensor("weights", [channels, 1, 1, 3], 2),
        tensor("output", [1, side, side, channels], 3),
    ]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    op.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
    op.builtinOptions = schema.Conv2DOptionsT()
    op.builtinOptions.strideW = op.builtinOptions.strideH = 1
    graph.operators, graph.inputs, graph.outputs = [op], [0], [2]
    model.subgraphs = [graph]
    path.write_bytes(bytes(fb.convert_object_to_bytearray(model)))
    return path
