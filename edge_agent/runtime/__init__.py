"""Runtime backends, chosen by the profile's ``runtime``; each is imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from edge_agent.errors import AgentError
from edge_agent.runtime.base import Array, Backend, PreparedModel
from hardware_profiles.schema import HardwareProfile, Runtime

# runtime -> "module:factory"; the factory takes the profile and returns a Backend.
BACKENDS: dict[Runtime, str] = {
    Runtime.ONNXRUNTIME: "edge_agent.runtime.ort:OnnxRuntimeBackend",
    Runtime.LITERT: "edge_agent.runtime.litert:LiteRtBackend",
}


def backend_for(profile: HardwareProfile) -> Backend:
    """The backend for ``profile.runtime``; a clear error when this agent has none for it."""
    target = BACKENDS.get(profile.runtime)
    if target is None:
        known = ", ".join(sorted(runtime.value for runtime in BACKENDS))
        raise AgentError(
            f"profile {profile.tag}: runtime {profile.runtime.value!r} is not supported by this "
            f"agent yet (supported: {known})"
        )
    module_name, factory_name = target.split(":")
    factory = cast(
        Callable[[HardwareProfile], Backend],
        getattr(importlib.import_module(module_name), factory_name),
    )
    return factory(profile)


__all__ = ["BACKENDS", "Array", "Backend", "PreparedModel", "backend_for"]
