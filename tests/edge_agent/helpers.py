"""Tiny ONNX models, signed bundles and a loopback artifact server for the agent's tests."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bundle import (
    Evidence,
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    SigningKey,
    TensorSpec,
    pack_bundle,
    seal_bundle,
)
from edgefleet.codec import from_json
from edgefleet.protocol.messages import DesiredState, HealthPolicy

PROFILE = "x86-64/avx512-vnni"
IN_FEATURES, OUT_FEATURES = 4, 3


def weights(version: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic weights that differ per version, so outputs tell versions apart."""
    rng = np.random.default_rng(version)
    w = rng.normal(size=(IN_FEATURES, OUT_FEATURES)).astype(np.float32)
    b = np.full((OUT_FEATURES,), float(version), dtype=np.float32)
    return w, b


def expected(x: np.ndarray, version: int) -> np.ndarray:
    w, b = weights(version)
    result: np.ndarray = (x.astype(np.float32) @ w + b).astype(np.float32)
    return result


def write_tiny_onnx(
    path: Path, version: int = 1, batch: str | int = "batch", trap: str | None = None
) -> Path:
    """y = x @ W + b with x: float32 [batch, 4] and y: float32 [batch, 3].

    ``trap="nan"``: the same, but NaN for any example with a negative feature (adds
    0 * sum(sqrt(x))). ``trap="error"``: onnxruntime raises for an example whose first
    feature is 2 or more (a Gather index out of range). Inputs in [0, 1) behave normally.
    """
    from onnx import TensorProto, helper, numpy_helper

    w, b = weights(version)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"])]
    init = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if trap is not None:
        init.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
    if trap == "nan":
        init.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes += [
            helper.make_node("Sqrt", ["x"], ["root"]),
            helper.make_node("ReduceSum", ["root", "axis1"], ["rsum"], keepdims=1),
            helper.make_node("Mul", ["rsum", "zero"], ["poison"]),
        ]
    elif trap == "error":
        init.append(numpy_helper.from_array(np.array([0], np.int64), "first"))
        init.append(numpy_helper.from_array(np.zeros((2,), np.float32), "table"))
        nodes += [
            helper.make_node("Gather", ["x", "first"], ["x0"], axis=1),
            helper.make_node("Cast", ["x0"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
            helper.make_node("Mul", ["picked", "zero"], ["poison"]),
        ]
    if trap is None:
        nodes.append(helper.make_node("Add", ["xw", "B"], ["y"]))
    else:
        nodes += [
            helper.make_node("Add", ["xw", "B"], ["clean"]),
            helper.make_node("Add", ["clean", "poison"], ["y"]),
        ]
    return save_x_to_y(path, "tiny", nodes, init, batch=batch)


def save_x_to_y(
    path: Path,
    name: str,
    nodes: list[Any],
    init: list[Any],
    *,
    batch: int | str = "batch",
) -> Path:
    """Save a checked ONNX graph with the tiny model's interface: float32 ``x`` [batch, 4] ->
    ``y`` [batch, 3] (opset 17, IR 8, which the pinned onnxruntime reads)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, IN_FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, OUT_FEATURES])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def write_tiny_tflite(path: Path, version: int = 1, batch: int = -1) -> Path:
    """The same y = x @ W + b as :func:`write_tiny_onnx`, as a real TFLite flatbuffer: one
    FULLY_CONNECTED op, float32 x [batch, 4] -> y [batch, 3]. ``batch=-1``: dynamic batch
    axis (shape_signature -1); ``batch=1``: a static batch of one, as Edge TPU models have.
    Written with the TFLite schema bindings that ``ai_edge_litert`` ships."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    w, b = weights(version)

    def buffer(array: np.ndarray | None = None) -> Any:
        entry = tfl.BufferT()
        entry.data = None if array is None else list(np.ascontiguousarray(array).tobytes())
        return entry

    def tensor(name: str, shape: list[int], signature: list[int], index: int) -> Any:
        entry = tfl.TensorT()
        entry.name, entry.shape, entry.shapeSignature = name, shape, signature
        entry.type, entry.buffer = tfl.TensorType.FLOAT32, index
        return entry

    code = tfl.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    options = tfl.FullyConnectedOptionsT()
    op = tfl.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = tfl.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = options
    rows = 1 if batch == -1 else batch
    graph = tfl.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("x", [rows, IN_FEATURES], [batch, IN_FEATURES], 1),
        tensor("W", [OUT_FEATURES, IN_FEATURES], [OUT_FEATURES, IN_FEATURES], 2),
        tensor("B", [OUT_FEATURES], [OUT_FEATURES], 3),
        tensor("y", [rows, OUT_FEATURES], [batch, OUT_FEATURES], 4),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    model = tfl.ModelT()
    model.version, model.description = 3, "tiny"
    model.operatorCodes, model.subgraphs = [code], [graph]
    model.buffers = [buffer(), buffer(), buffer(w.T), buffer(b), buffer()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def manifest_for(
    name: str = "tiny", version: str = "1.0.0", profile: str = PROFILE, count: int = 4
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        profile=profile,
        format="onnx",
        precision="fp32",
        model_file="model.onnx",
        interface=ModelInterface(
            inputs=(TensorSpec(name="x", dtype="float32", shape=("batch", IN_FEATURES)),),
            outputs=(TensorSpec(name="y", dtype="float32", shape=("batch", OUT_FEATURES)),),
        ),
        lineage=Lineage(source_model_sha256="0" * 64, compiler_version="test"),
        evidence=Evidence(size_bytes=0),
        golden=GoldenSamples(count=count, atol=1e-4, rtol=1e-4),
    )


@dataclass(frozen=True)
class BuiltBundle:
    tar: Path
    sha256: str
    size: int
    manifest: Manifest


def build_bundle(
    workdir: Path,
    key: SigningKey,
    *,
    name: str = "tiny",
    version: str = "1.0.0",
    weights_version: int = 1,
    profile: str = PROFILE,
    golden_offset: float = 0.0,
    flip_model_byte: bool = False,
    trap: str | None = None,
) -> BuiltBundle:
    """A signed bundle tar; ``golden.npz`` holds arrays 'inputs' and 'outputs'."""
    directory = workdir / f"{name}-{version}-{weights_version}-{profile.replace('/', '_')}"
    directory.mkdir(parents=True)
    write_tiny_onnx(directory / "model.onnx", weights_version, trap=trap)
    rng = np.random.default_rng(7)
    if trap is None:
        inputs = rng.normal(size=(4, IN_FEATURES)).astype(np.float32)
    else:
        inputs = rng.uniform(0, 1, size=(4, IN_FEATURES)).astype(np.float32)
    outputs = expected(inputs, weights_version) + np.float32(golden_offset)
    np.savez(directory / "golden.npz", inputs=inputs, outputs=outputs)
    manifest = seal_bundle(directory, manifest_for(name, version, profile), key)
    if flip_model_byte:
        model = directory / "model.onnx"
        flipped = bytearray(model.read_bytes())
        flipped[len(flipped) // 2] ^= 0xFF
        model.write_bytes(bytes(flipped))
    tar = pack_bundle(directory, workdir / f"{directory.name}.tar")
    data = tar.read_bytes()
    return BuiltBundle(tar, hashlib.sha256(data).hexdigest(), len(data), manifest)


def desired_for(
    bundle: BuiltBundle,
    artifact_id: int,
    deployment_id: str,
    *,
    health: HealthPolicy | None = None,
    rollback: bool = False,
) -> DesiredState:
    """Desired state for ``bundle``; the health window defaults to 0 s (commit at once)."""
    return DesiredState(
        deployment_id=deployment_id,
        model=bundle.manifest.name,
        version=bundle.manifest.version,
        artifact_url=f"/api/v1/artifacts/{artifact_id}",
        sha256=bundle.sha256,
        size=bundle.size,
        rollback=rollback,
        health=health or HealthPolicy(window_s=0),
    )


@dataclass
class ArtifactServer:
    """The two fleet-server endpoints the agent calls, on a real loopback HTTP server."""

    token: str
    mqtt_url: str = "mqtt://127.0.0.1:1"
    artifacts: dict[int, bytes] = field(default_factory=dict)
    status_override: dict[int, int] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    url: str = ""

    def add(self, artifact_id: int, bundle: BuiltBundle) -> None:
        self.artifacts[artifact_id] = bundle.tar.read_bytes()


@contextmanager
def serve_artifacts(server: ArtifactServer) -> Iterator[ArtifactServer]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Authorization")))
            if self.path == "/api/v1/info":
                self._send(200, json.dumps({"version": "test", "mqtt_url": server.mqtt_url}))
                return
            prefix = "/api/v1/artifacts/"
            if not self.path.startswith(prefix):
                self._send(404, '{"detail": "not found"}')
                return
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                self._send(401, '{"detail": "bad token"}')
                return
            artifact_id = int(self.path[len(prefix) :])
            if artifact_id in server.status_override:
                self._send(server.status_override[artifact_id], '{"detail": "unavailable"}')
                return
            data = server.artifacts.get(artifact_id)
            if data is None:
                self._send(404, '{"detail": "no such artifact"}')
                return
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
                server.ranges.append(wanted)
                start = int(wanted[len("bytes=") : -1])
                extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                self._send(206, data[start:], "application/x-tar", extra)
                return
            self._send(200, data, "application/x-tar")

        def _send(
            self,
            status: int,
            body: str | bytes,
            kind: str = "application/json",
            extra: dict[str, str] | None = None,
        ) -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or condition}")
        time.sleep(0.02)


class FleetSide:
    """A test-side MQTT client that plays the fleet server: collects what a device publishes
    and acknowledges prediction batches (``auto_ack``) like the server's ingest does."""

    def __init__(self, url: str, device_id: str, *, auto_ack: bool = True) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edgefleet.protocol.topics import Channel, topic

        self.device_id = device_id
        self.auto_ack = auto_ack
        self.lock = threading.Lock()
        self.messages: dict[str, list[Any]] = {c.value: [] for c in Channel}
        self.retained: list[bool] = []
        self.received_seqs: list[int] = []
        self.connected = threading.Event()
        self._channel = Channel
        self._make_topic = topic
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-fleet-{device_id}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        # Connected is not enough: a device's publish that reaches the broker before the
        # SUBACK finds no subscriber and is dropped, so ``connected`` waits for the SUBACK.
        self.client.on_subscribe = lambda *args: self.connected.set()
        self.client.on_message = self._on_message
        self.client.connect_async(host, int(port), 10)

    def __enter__(self) -> FleetSide:
        self.client.loop_start()
        assert self.connected.wait(10), "test client could not connect to the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        channels = (
            self._channel.STATUS,
            self._channel.REPORT,
            self._channel.TELEMETRY,
            self._channel.PREDICTIONS,
        )
        client.subscribe([(self._topic(channel), 1) for channel in channels])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        from edgefleet.protocol import messages as m
        from edgefleet.protocol.topics import parse

        if not message.payload:
            return
        channel = parse(message.topic).channel
        kinds: dict[str, Any] = {
            "status": m.Status,
            "report": m.Report,
            "telemetry": m.Telemetry,
            "predictions": m.PredictionBatch,
        }
        parsed = from_json(kinds[channel.value], message.payload)
        with self.lock:
            self.messages[channel.value].append(parsed)
            if channel.value == "status":
                self.retained.append(bool(message.retain))
            if channel.value == "predictions":
                self.received_seqs.extend(record.seq for record in parsed.records)
        if channel.value == "predictions" and self.auto_ack:
            self.ack(record.seq for record in parsed.records)

    def _topic(self, channel: Any) -> str:
        return self._make_topic(self.device_id, channel)

    def ack(self, seqs: Any) -> None:
        from edgefleet.protocol.messages import Ack

        payload = Ack.of(seqs).to_bytes()
        self.client.publish(self._topic(self._channel.ACK), payload, qos=1)

    def publish_desired(self, desired: DesiredState) -> None:
        info = self.client.publish(
            self._topic(self._channel.DESIRED), desired.to_bytes(), qos=1, retain=True
        )
        info.wait_for_publish(5)

    def clear_retained(self) -> None:
        for channel in (self._channel.DESIRED, self._channel.STATUS):
            self.client.publish(self._topic(channel), b"", qos=1, retain=True).wait_for_publish(5)

    def of(self, channel: str) -> list[Any]:
        with self.lock:
            return list(self.messages[channel])

    def seqs(self) -> list[int]:
        with self.lock:
            return list(self.received_seqs)
