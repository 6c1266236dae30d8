"""Keep a quantized model loadable after onnxruntime has optimised its float parent.

The clean-up pass runs onnxruntime's optimiser, whose ``MatMulAddFusion`` turns a 3-D
MatMul + Add into Reshape -> Gemm -> Reshape and names the new shape initializers
``gemm_input_shape``, ``gemm_output_shape``, then ``..._token_N``. It picks those names so that
no *node* has them, not no initializer. When a quantizer then leaves a MatMul + Add in float
(a node kept in float by the search), the session that loads the quantized model fuses it
again, generates ``gemm_input_shape`` once more, and fails with "Attempt to replace the
existing tensor". Renaming the earlier initializers out of the way avoids the clash; the graph
is otherwise unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

# Names onnxruntime's graph optimisers generate for initializers they add (MatMulAddFusion).
_GENERATED = re.compile(r"^gemm_(input|output)_shape(_token_\d+)?$")


def rename_generated_initializers(path: Path) -> int:
    """Rename, in place, the initializers of ``path`` that onnxruntime's fusions could generate
    again when the model loads; return how many were renamed."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    taken = {i.name for i in graph.initializer} | {t for n in graph.node for t in n.output}
    renamed: dict[str, str] = {}
    for initializer in graph.initializer:
        if not _GENERATED.match(initializer.name):
            continue
        new = f"fused/{initializer.name}"
        while new in taken:
            new += "_"
        taken.add(new)
        renamed[initializer.name] = new
        initializer.name = new
    if not renamed:
        return 0
    for node in graph.node:
        for index, tensor in enumerate(node.input):
            if tensor in renamed:
                node.input[index] = renamed[tensor]
    for value in (*graph.input, *graph.value_info):
        if value.name in renamed:
            value.name = renamed[value.name]
    onnx.save(model, str(path))
    return len(renamed)
