"""Run an ONNX model on the host with onnxruntime's CPU provider, as the compiler measures it.

Sessions use one intra-op thread so host latencies are repeatable and comparable between the
float reference and each artifact.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compiler.data import FloatArray

if TYPE_CHECKING:
    import onnxruntime

HOST_THREADS = 1
CHUNK = 256


class HostModel:
    """A prepared single-input, single-output ONNX model on the host CPU."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = HOST_THREADS
        options.inter_op_num_threads = 1
        self.path = path
        self._session: onnxruntime.InferenceSession = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        first = self._session.get_inputs()[0]
        self.input_name: str = first.name
        batch = first.shape[0] if first.shape else None
        self._chunk = batch if isinstance(batch, int) and batch > 0 else CHUNK

    def run(self, x: FloatArray) -> FloatArray:
        """Outputs for every sample of ``x``, in chunks the model's batch axis accepts."""
        parts = [self._run(x[i : i + self._chunk]) for i in range(0, len(x), self._chunk)]
        return np.concatenate(parts)

    def run_each(self, x: FloatArray) -> FloatArray:
        """Outputs computed one sample at a time (batch 1), stacked."""
        return np.concatenate([self._run(x[i : i + 1]) for i in range(len(x))])

    def latency_ms(self, sample: FloatArray, *, warmup: int = 10, runs: int = 50) -> float:
        """Median wall time of one batch-1 run, in milliseconds, after ``warmup`` runs."""
        one = sample[:1]
        for _ in range(warmup):
            self._run(one)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._run(one)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0

    def run_batch(self, x: FloatArray) -> FloatArray:
        """Outputs of one run on ``x`` as one batch (no chunking): what latency measures."""
        return self._run(x)

    def _run(self, x: FloatArray) -> FloatArray:
        (out,) = self._session.run(None, {self.input_name: np.ascontiguousarray(x)})[:1]
        return np.asarray(out, dtype=np.float32)


def paired_latency(
    first: HostModel, second: HostModel, x: FloatArray, *, batch: int = 1, runs: int = 40
) -> tuple[float, float]:
    """Median milliseconds per run of ``first`` and ``second`` on the same batch, measured
    interleaved (first, second, first, ...) so that machine noise hits both alike."""
    sample = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])).astype(np.float32))
    for _ in range(3):
        first._run(sample)
        second._run(sample)
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        first._run(sample)
        middle = time.perf_counter()
        second._run(sample)
        a.append(middle - start)
        b.append(time.perf_counter() - middle)
    return statistics.median(a) * 1000.0, statistics.median(b) * 1000.0
