"""Compiler passes: one per module, each with a typed static config, declared input and
output formats, required profile features and optional dependencies (see
:mod:`compiler.passes.base` for the contract and a complete example of adding a pass).

Importing this package imports no heavy dependency; :mod:`compiler.passes.registry` lists
every pass and says which ones cannot run here and why.
"""

from compiler.passes.base import (
    Artifact,
    Format,
    Pass,
    PassConfig,
    PassContext,
    Requirement,
    record,
)
from compiler.passes.cache import PassCache, default_cache_dir
from compiler.passes.pipeline import Pipeline, PipelineError

__all__ = [
    "Artifact",
    "Format",
    "Pass",
    "PassCache",
    "PassConfig",
    "PassContext",
    "Pipeline",
    "PipelineError",
    "Requirement",
    "default_cache_dir",
    "record",
]
