"""Static QDQ int8 with onnxruntime, calibrated on the user's data (min-max, entropy or
percentile), per-channel weights, and nodes that must stay in float (``nodes_to_exclude``).

``qnn=True`` builds the QDQ flavour the QNN execution provider (Hexagon HTP) wants, with
``get_qnn_qdq_config``: uint8 activations, symmetric weights, QNN's op rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from compiler.data import FloatArray, Samples
from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.fusion_names import rename_generated_initializers
from compiler.passes.onnx_tools import (
    calibration_reader,
    first_line,
    input_name,
    model_errors,
    subset_samples,
)

CalibrationMethodName = Literal["minmax", "entropy", "percentile"]


PER_CHANNEL_OPSET = 13


class StaticQdqConfig(PassConfig):
    per_channel: bool = True
    activations: Literal["int8", "uint8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    calibrate_method: CalibrationMethodName = "minmax"
    max_calibration_samples: int = 256
    seed: int = 0
    nodes_to_exclude: tuple[str, ...] = ()
    qnn: bool = False


class QuantizationError(CompileError):
    """The quantizer could not produce a loadable int8 model; the caller falls back."""


class QuantizeStatic(Pass[StaticQdqConfig]):
    name: ClassVar[str] = "quantize_static_qdq"
    version: ClassVar[int] = 2  # 2: ORT-generated names renamed (fusion_names)
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.ONNX_QDQ
    required_features: ClassVar[frozenset[str]] = frozenset({"precision:int8", "format:onnx"})
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("onnxruntime", "pip install onnxruntime"),
    )
    uses_calibration: ClassVar[bool] = True

    def run(self, source: Artifact, out: Path, context: PassContext) -> StaticQdqConfig:
        if context.calibration is None:
            raise CompileError("quantize_static_qdq needs calibration data (--calibration)")
        samples = context.calibration.samples or Samples.single(
            input_name(source.file), context.calibration.x
        )
        quantize_static_qdq(source.file, out, samples, self.config)
        return self.config


def quantize_static_qdq(
    source: Path, out: Path, calibration: Samples | FloatArray, config: StaticQdqConfig
) -> None:
    """Write the int8 QDQ model to ``out``; raise :class:`QuantizationError` when it fails."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        StaticQuantConfig,
        quantize,
    )

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if not isinstance(calibration, Samples):
        calibration = Samples.single(input_name(source), calibration)
    samples = subset_samples(calibration, config.max_calibration_samples, config.seed)
    errors = model_errors()
    try:
        if config.per_channel:
            source = at_least_opset(source, out.with_name("opset13.onnx"), PER_CHANNEL_OPSET)
        reader = calibration_reader(samples)
        if config.qnn:
            from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

            quant_config = get_qnn_qdq_config(
                str(source),
                reader,
                calibrate_method=methods[config.calibrate_method],
                activation_type=types[config.activations],
                weight_type=types[config.weights],
                per_channel=config.per_channel,
                weight_symmetric=True,
                nodes_to_exclude=list(config.nodes_to_exclude),
            )
        else:
            quant_config = StaticQuantConfig(
                reader,
                calibrate_method=methods[config.calibrate_method],
                quant_format=QuantFormat.QDQ,
                activation_type=types[config.activations],
                weight_type=types[config.weights],
                per_channel=config.per_channel,
                nodes_to_exclude=list(config.nodes_to_exclude),
            )
        quantize(str(source), str(out), quant_config)
        if config.nodes_to_exclude:
            float_inputs(out, set(config.nodes_to_exclude))
        rename_generated_initializers(out)
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    except errors as exc:
        raise QuantizationError(f"static QDQ quantization failed: {first_line(exc)}") from exc


def at_least_opset(source: Path, out: Path, opset: int) -> Path:
    """``source``, or its conversion to ``opset`` written to ``out`` when it is older: per-channel
    QDQ needs DequantizeLinear's ``axis`` (opset 13), and real models ship older (PP-OCRv4: 12)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return source
    onnx.save(version_converter.convert_version(model, opset), str(out))
    return out


def float_inputs(path: Path, excluded: set[str]) -> int:
    """Feed nodes kept in float their inputs unquantized: remove each activation
    QuantizeLinear -> DequantizeLinear pair whose consumers are all kept in float (the quantizer
    adds one after a quantized producer's output even when its consumer is excluded)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    producer = {t: n for n in graph.node for t in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in graph.output}
    removed: list[onnx.NodeProto] = []
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        users = consumers.get(dq.output[0], [])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in initializers:
            continue
        if not users or dq.output[0] in outputs or any(u.name not in excluded for u in users):
            continue
        for user in users:
            for index, tensor in enumerate(user.input):
                if tensor == dq.output[0]:
                    user.input[index] = q.input[0]
        removed.append(dq)
        if all(c is dq for c in consumers.get(q.output[0], [])):
            removed.append(q)
    for node in removed:
        graph.node.remove(node)
    if removed:
        onnx.save(model, str(path))
    return len(removed)
