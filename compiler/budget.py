"""Memory budgets of microcontroller profiles: flash (the model file, which TFLite Micro runs
in place) and the tensor arena (SRAM for activations), estimated before anything ships.

The arena estimate is the peak, over the graph's execution order, of the bytes of every
activation tensor alive at that step: a tensor is alive from the op that writes it (the start,
for a model input) to the last op that reads it (the end, for a model output), each rounded up
to TFLite Micro's 16-byte alignment. That is what an ideal planner needs; TFLite Micro's greedy
planner reaches it on chains like CNNs, and adds per-op scratch buffers (CMSIS-NN im2col) and a
few KiB of interpreter state on top, so the estimate is a lower bound: a model over budget by
this estimate cannot fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import CompileError
from hardware_profiles.schema import Accelerator, HardwareProfile

ALIGNMENT = 16

# TFLite TensorType -> bytes per element (schema.fbs)
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 12: 8, 13: 4}


@dataclass(frozen=True)
class Step:
    """One op in execution order: its name and the activation tensors it reads and writes."""

    op: str
    reads: tuple[int, ...]
    writes: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """What the arena estimate needs: activation tensor sizes (bytes), the ops in order, and
    the model's inputs and outputs."""

    sizes: dict[int, int]
    steps: tuple[Step, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class MemoryEstimate:
    arena_bytes: int
    flash_bytes: int
    peak_op: str  # the op at which the arena peaks


def aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def peak_live_bytes(graph: Graph) -> tuple[int, str]:
    """The arena bytes at the busiest step and that step's op."""
    last = len(graph.steps)
    born: dict[int, int] = {t: 0 for t in graph.inputs}
    dies: dict[int, int] = {}
    for index, step in enumerate(graph.steps):
        for tensor in step.writes:
            born.setdefault(tensor, index)
        for tensor in (*step.reads, *step.writes):
            dies[tensor] = max(dies.get(tensor, index), index)
    for tensor in graph.outputs:
        dies[tensor] = last
    best, where = 0, ""
    for index, step in enumerate(graph.steps):
        live = sum(
            aligned(graph.sizes[t])
            for t in born
            if t in graph.sizes and born[t] <= index <= dies.get(t, index)
        )
        if live > best:
            best, where = live, f"#{index} {step.op}"
    return best, where


def read_tflite(path: Path) -> Graph:
    """The activation tensors and op order of a ``.tflite`` file's main subgraph (tensors
    backed by a constant buffer are weights, in flash, and not counted)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model: Any = flatbuffer_utils.read_model(str(path))
    graph: Any = model.subgraphs[0]
    codes = [flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))]

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return bool((buffer.data is not None and len(buffer.data)) or getattr(buffer, "size", 0))

    sizes: dict[int, int] = {}
    for index, tensor in enumerate(graph.tensors):
        if constant(index):
            continue
        count = 1
        for dim in tensor.shape if tensor.shape is not None else ():
            count *= max(int(dim), 1)
        sizes[index] = count * _ELEMENT_BYTES.get(int(tensor.type), 4)

    def live(indices: Any) -> tuple[int, ...]:
        return tuple(
            int(i) for i in (indices if indices is not None else ()) if i >= 0 and i in sizes
        )

    steps = tuple(
        Step(str(codes[op.opcodeIndex]), live(op.inputs), live(op.outputs))
        for op in graph.operators
    )
    return Graph(sizes, steps, live(graph.inputs), live(graph.outputs))


def estimate_tflite(path: Path) -> MemoryEstimate:
    arena, where = peak_live_bytes(read_tflite(path))
    return MemoryEstimate(arena_bytes=arena, flash_bytes=path.stat().st_size, peak_op=where)


def is_microcontroller(profile: HardwareProfile) -> bool:
    return profile.accelerator is Accelerator.MCU or profile.budgets.max_arena_bytes is not None


def limits(profile: HardwareProfile) -> tuple[int | None, int | None]:
    """``(flash, arena)`` byte limits: the tighter of the budget and the hardware fact."""
    facts, budgets = profile.hardware, profile.budgets
    flash = _tightest(budgets.max_model_bytes, facts.flash_kb * 1024 if facts.flash_kb else None)
    arena = _tightest(budgets.max_arena_bytes, facts.ram_kb * 1024 if facts.ram_kb else None)
    return flash, arena


def problems(profile: HardwareProfile, estimate: MemoryEstimate) -> list[str]:
    """Why ``estimate`` does not fit ``profile`` (empty when it fits)."""
    flash, arena = limits(profile)
    found: list[str] = []
    if flash is not None and estimate.flash_bytes > flash:
        found.append(f"model {estimate.flash_bytes} bytes, over the flash budget of {flash}")
    if arena is not None and estimate.arena_bytes > arena:
        found.append(
            f"tensor arena estimate {estimate.arena_bytes} bytes (peak at op "
            f"{estimate.peak_op}), over the budget of {arena}"
        )
    return found


def check(profile: HardwareProfile, path: Path) -> MemoryEstimate | None:
    """The estimate for a microcontroller profile's ``.tflite`` artifact (``None`` for other
    profiles); raise :class:`CompileError` naming the profile when it does not fit."""
    if not is_microcontroller(profile) or path.suffix != ".tflite":
        return None
    estimate = estimate_tflite(path)
    found = problems(profile, estimate)
    if found:
        raise CompileError(f"{profile.tag}: {'; '.join(found)}")
    return estimate


def _tightest(*values: int | None) -> int | None:
    known: Sequence[int] = [v for v in values if v is not None]
    return min(known) if known else None
