"""The onnxruntime backend: the profile's execution providers in fallback order, CPU last.

onnxruntime only warns when a requested provider is missing from the installed build and then
runs on the CPU, so the provider actually used is read back from ``session.get_providers()``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import RuntimeBackendError
from edge_agent.runtime.base import Array
from edgefleet.bundle import Manifest
from edgefleet.errors import MissingDependencyError
from hardware_profiles.schema import HardwareProfile

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "agent") from exc
    return onnxruntime


def _ort_errors() -> tuple[type[BaseException], ...]:
    _ort()
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = (
        "Fail",
        "InvalidArgument",
        "InvalidGraph",
        "InvalidProtobuf",
        "NoSuchFile",
        "NoModel",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
    )
    found = tuple(getattr(state, name) for name in names if hasattr(state, name))
    return (*found, RuntimeError, ValueError)


class OnnxRuntimeModel:
    """An ``InferenceSession``; its ``run`` is safe to call from several threads at once."""

    def __init__(
        self, session: Any, output_names: list[str], errors: tuple[type[BaseException], ...]
    ) -> None:
        self._session = session
        self._output_names = output_names
        self._errors = errors
        self._provider = str(session.get_providers()[0])
        wanted = set(output_names)
        self._tensors = all(
            str(node.type).startswith("tensor(")
            for node in session.get_outputs()
            if node.name in wanted
        )

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def threads(self) -> int:
        return int(self._session.get_session_options().intra_op_num_threads)

    def run(self, feeds: Mapping[str, Array]) -> list[Array]:
        try:
            outputs = self._session.run(
                self._output_names, feeds if type(feeds) is dict else dict(feeds)
            )
        except self._errors as exc:
            raise RuntimeBackendError(f"onnxruntime run failed: {exc}") from exc
        if self._tensors:  # every output a tensor: onnxruntime returned ndarrays already
            return outputs  # type: ignore[no-any-return]
        return [np.asarray(output) for output in outputs]


class OnnxRuntimeBackend:
    """Prepare ONNX models with the providers that ``profile.execution`` lists."""

    name = "onnxruntime"

    def __init__(self, profile: HardwareProfile) -> None:
        self._profile = profile

    def supports(self, manifest: Manifest) -> bool:
        return manifest.format == "onnx"

    def providers(self) -> list[str]:
        """The profile's providers that this onnxruntime build has, in order, CPU last."""
        available = set(_ort().get_available_providers())
        wanted = list(self._profile.execution.providers) or [CPU]
        chosen = [provider for provider in wanted if provider in available]
        missing = [provider for provider in wanted if provider not in available]
        if missing:
            log.warning(
                "execution providers %s (profile %s) are not in this onnxruntime build",
                ", ".join(missing),
                self._profile.tag,
            )
        if CPU not in chosen and self._profile.execution.allow_cpu_fallback:
            chosen.append(CPU)
        if not chosen:
            raise RuntimeBackendError(
                f"profile {self._profile.tag}: none of the execution providers "
                f"{', '.join(wanted)} is available and CPU fallback is not allowed"
            )
        return chosen

    def threads(self) -> int:
        """``profile.defaults.threads``, capped at the CPUs this machine has."""
        return max(1, min(self._profile.defaults.threads, os.cpu_count() or 1))

    def prepare(self, model_path: Path, manifest: Manifest) -> OnnxRuntimeModel:
        ort = _ort()
        errors = _ort_errors()
        providers = self.providers()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Spinning intra-op workers burn a core after every run; on a device they steal it
        # from the agent's own threads (and from the battery) for no latency gain.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Exact int8 sums on every x86 CPU: without VNNI, onnxruntime's u8s8 kernels sum in
        # 16 bits and saturate; this runs such weights through u8u8 kernels instead, so the
        # device computes what the compiler measured and recorded as golden outputs (no
        # effect with VNNI, nor off x86).
        options.add_session_config_entry("session.x64quantprecision", "1")
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=providers
            )
        except errors as exc:
            raise RuntimeBackendError(
                f"{model_path.name}: onnxruntime cannot load the model ({exc})"
            ) from exc
        _check_names(model_path.name, session, manifest)
        model = OnnxRuntimeModel(
            session, [spec.name for spec in manifest.interface.outputs], errors
        )
        preferred = (self._profile.execution.providers or (CPU,))[0]
        if model.provider != preferred:
            log.warning(
                "model %s runs on %s, not on the profile's preferred %s (fallback)",
                manifest.name,
                model.provider,
                preferred,
            )
        return model


def _check_names(file: str, session: Any, manifest: Manifest) -> None:
    for kind, declared, actual in (
        ("inputs", manifest.interface.inputs, session.get_inputs()),
        ("outputs", manifest.interface.outputs, session.get_outputs()),
    ):
        names = {node.name for node in actual}
        missing = [spec.name for spec in declared if spec.name not in names]
        if missing:
            raise RuntimeBackendError(
                f"{file}: the manifest names {kind} {missing} that the model does not have "
                f"(model {kind}: {sorted(names)})"
            )
