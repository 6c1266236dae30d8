"""TFLite profiles in a compile: the float ``.tflite`` a profile's candidates start from, and
the fp32 baseline the search measures them against.

The baseline is the float ``.tflite`` in LiteRT (converted once per profile batch, or the
user's own file), so latencies compare LiteRT with LiteRT and sizes are ratios to the float
``.tflite``; accuracy is still scored against the float model's outputs (the float ONNX
model's, or the user's ``.tflite``'s), so a conversion error counts against the candidate.
"""

from __future__ import annotations

from compiler.litert_host import LiteRtModel
from compiler.passes.base import Artifact, Format, PassContext
from compiler.passes.cache import PassCache
from compiler.recipes import Recipe
from compiler.search import FloatReference


def tflite_baseline(
    recipe: Recipe,
    sources: dict[Format, Artifact],
    reference: FloatReference,
    context: PassContext,
    cache: PassCache,
) -> tuple[dict[Format, Artifact], FloatReference]:
    """The sources with the profile's float ``.tflite`` added, and the reference to search
    against. A recipe without a float pipeline starts from the user's ``.tflite``, which is
    already the reference."""
    if recipe.float_pipeline is None:
        return sources, reference
    start = sources[recipe.float_pipeline.source]
    artifact = recipe.float_pipeline.run(start, context, cache)
    host = LiteRtModel(artifact.file, reference.host.input_names, reference.host.output_names)
    baseline = FloatReference(artifact, host, reference.x, reference.y, reference.outputs)
    return {**sources, Format.TFLITE: artifact}, baseline
