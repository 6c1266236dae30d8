"""Run an ONNX model on the host with onnxruntime's CPU provider, as the compiler measures it.

Sessions use one intra-op thread so host latencies are repeatable and comparable between the
float reference and each artifact. A model may have several named inputs and outputs: inputs
come as :class:`~compiler.data.Samples`, outputs as a dict by output name, each ``(N, ...)``
(samples stacked when the model has no batch axis to run them as one batch).
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from compiler.data import Feed, FloatArray, Samples
from compiler.host_cpu import saturating_int8

if TYPE_CHECKING:
    import onnxruntime

HOST_THREADS = 1
CHUNK = 256

Outputs = dict[str, FloatArray]


class Runner(ABC):
    """An artifact run on the host, as the search, the golden samples and packaging call it:
    :class:`HostModel` (ONNX, onnxruntime) and :class:`compiler.litert_host.LiteRtModel`
    (TFLite, LiteRT). Subclasses run one feed and all samples; the rest is shared."""

    runtime: ClassVar[str]
    """The interpreter, as reports name it: ``onnxruntime CPU``, ``LiteRT CPU``."""
    path: Path
    input_name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_batch: bool

    @abstractmethod
    def run_feed(self, feed: Feed) -> Outputs:
        """Every output for one feed (one array per input name)."""

    @abstractmethod
    def run_all(self, x: FloatArray | Samples) -> Outputs:
        """Every output for every sample."""

    def time_feed(self, feed: Feed) -> None:
        """One run of ``feed`` as timing measures it (:class:`HostModel` may time a session
        that differs from the one whose outputs it reports)."""
        self.run_feed(feed)

    def samples(self, x: FloatArray | Samples) -> Samples:
        """``x`` itself, or a bare array as the samples of the first input."""
        if isinstance(x, Samples):
            return x
        return Samples.single(self.input_name, x, dynamic=self.dynamic_batch)

    def run_each_all(self, x: FloatArray | Samples) -> Outputs:
        """Every output computed one sample at a time (batch 1): concatenated along the batch
        axis when every input has one, else stacked on a new sample axis."""
        samples = self.samples(x)
        parts = [self.run_feed(samples.one(i)) for i in range(len(samples))]
        join = np.concatenate if all(samples.batched.values()) else np.stack
        return {name: join([p[name] for p in parts]) for name in self.output_names}

    def run(self, x: FloatArray | Samples) -> FloatArray:
        """The first output for every sample of ``x``."""
        return self.run_all(x)[self.output_names[0]]

    def run_each(self, x: FloatArray | Samples) -> FloatArray:
        """The first output computed one sample at a time (batch 1), stacked."""
        return self.run_each_all(x)[self.output_names[0]]

    def latency_ms(self, x: FloatArray | Samples, *, warmup: int = 10, runs: int = 50) -> float:
        """Median wall time of one batch-1 run, in milliseconds, after ``warmup`` runs."""
        one = self.samples(x).one(0)
        for _ in range(warmup):
            self.time_feed(one)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.time_feed(one)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0


def host_for(path: Path, like: Runner | None = None) -> Runner:
    """The host runner for an artifact file: LiteRT for ``.tflite``, onnxruntime otherwise.
    ``like`` (the float reference) lends its input and output names to a TFLite model, whose
    tensors are matched to them in order, so outputs compare name by name."""
    if path.suffix == ".tflite":
        from compiler.litert_host import LiteRtModel

        if like is None:
            return LiteRtModel(path)
        return LiteRtModel(path, like.input_names, like.output_names)
    return HostModel(path)


class HostModel(Runner):
    """A prepared ONNX model on the host CPU."""

    runtime = "onnxruntime CPU"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session = _session(path, exact_int8=True)
        self._timing: onnxruntime.InferenceSession | None = None
        first = self._session.get_inputs()[0]
        self.input_name: str = first.name
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in self._session.get_outputs())
        self.dynamic_batch = bool(first.shape) and not isinstance(first.shape[0], int)

    def run_all(self, x: FloatArray | Samples) -> Outputs:
        """Every output for every sample, in batches when the model allows, else one by one."""
        samples = self.samples(x)
        if samples.dynamic:
            parts = [
                self.run_feed(samples.chunk(i, i + CHUNK)) for i in range(0, len(samples), CHUNK)
            ]
            return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}
        return self.run_each_all(samples)

    def run_batch(self, x: FloatArray | Feed) -> Outputs:
        """One run on ``x`` as one batch (no chunking): what latency measures."""
        feed = x if isinstance(x, dict) else {self.input_name: x}
        return self.run_feed(feed)

    def time_feed(self, feed: Feed) -> None:
        """Timed without the exact int8 sums where they cost speed (x86 without VNNI): as
        fast as this host runs int8, which is what the speed rule compares."""
        if self._timing is None:
            exact = not saturating_int8()  # then the exact session is as fast: time it
            self._timing = self._session if exact else _session(self.path, exact_int8=False)
        self._timing.run(None, feed)

    def run_feed(self, feed: Feed) -> Outputs:
        values = self._session.run(None, feed)
        return {
            name: np.asarray(value, dtype=np.float32)
            for name, value in zip(self.output_names, values, strict=True)
        }


def _session(path: Path, *, exact_int8: bool) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for ``path``. ``exact_int8``: without VNNI, int8 weights
    outside [-64, 63] go through u8u8 kernels instead of u8s8 ones whose 16-bit sums
    saturate, so outputs are what a VNNI target computes, and what the agent computes
    (:mod:`edge_agent.runtime.ort` sets the same); no effect with VNNI, nor off x86."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = HOST_THREADS
    options.inter_op_num_threads = 1
    if exact_int8:
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def paired_latency(
    first: Runner, second: Runner, x: FloatArray | Samples, *, batch: int = 1, runs: int = 40
) -> tuple[float, float]:
    """Median milliseconds per run of ``first`` and ``second`` on the same batch, measured
    interleaved (first, second, first, ...) so that machine noise hits both alike."""
    sample = first.samples(x).repeat(batch)
    for _ in range(3):
        first.time_feed(sample)
        second.time_feed(sample)
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        first.time_feed(sample)
        middle = time.perf_counter()
        second.time_feed(sample)
        a.append(middle - start)
        b.append(time.perf_counter() - middle)
    return statistics.median(a) * 1000.0, statistics.median(b) * 1000.0
