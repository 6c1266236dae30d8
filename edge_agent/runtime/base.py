"""The runtime ``Backend`` protocol: prepare once, run many.

A backend turns a verified bundle's model file into a :class:`PreparedModel` that the agent
runs for every request. ``supports`` is a cheap check on the manifest before anything loads.
An accelerator (execution provider, delegate) that fails to load falls back to the CPU and
says so: :attr:`PreparedModel.provider` names what actually runs the model.

Adding a backend, a complete example (a LiteRT backend would look the same)::

    from pathlib import Path
    from collections.abc import Mapping

    import numpy as np

    from edgefleet.bundle import Manifest
    from edge_agent.runtime.base import Array

    class EchoModel:
        provider = "echo"

        def run(self, feeds: Mapping[str, Array]) -> list[Array]:
            return [np.asarray(next(iter(feeds.values())))]

    class EchoBackend:
        name = "echo"

        def supports(self, manifest: Manifest) -> bool:
            return manifest.format == "onnx"

        def prepare(self, model_path: Path, manifest: Manifest) -> EchoModel:
            return EchoModel()

Register it in :data:`edge_agent.runtime.BACKENDS` under the profile's ``runtime`` value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy.typing as npt

from edgefleet.bundle import Manifest

Array = npt.NDArray[Any]


class PreparedModel(Protocol):
    """A loaded model. ``run`` may be called from several threads at once."""

    @property
    def provider(self) -> str:
        """The execution provider or delegate that actually runs the model."""
        ...

    def run(self, feeds: Mapping[str, Array]) -> list[Array]:
        """Run once; returns the outputs in the order of ``manifest.interface.outputs``."""
        ...


class Backend(Protocol):
    """Loads models of one runtime for one hardware profile."""

    @property
    def name(self) -> str: ...

    def supports(self, manifest: Manifest) -> bool:
        """Cheap check, before loading, that this backend can run the bundle at all."""
        ...

    def prepare(self, model_path: Path, manifest: Manifest) -> PreparedModel:
        """Load the model once. Raises :class:`~edge_agent.errors.RuntimeBackendError`."""
        ...
