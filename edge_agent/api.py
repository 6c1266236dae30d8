"""The local HTTP API for applications on the device: loopback TCP or a Unix domain socket.

Both serve the same stdlib HTTP handler; a Unix socket (``--socket PATH``) replaces the TCP
listener, and its file mode (0660) decides who may call the agent (see
:mod:`edge_agent.unix_socket` for how a stale or live socket file is handled).

::

    POST /v1/predict  {"input": [...]}         -> {"output", "model", "version", "record_id",
                                                   "latency_ms"}
                      {"inputs": [[...], ...]}  -> {"outputs": [...], "model", "version",
                                                   "record_ids": [...], "latency_ms"}
                      {"inputs": {"a": [...], "b": [...]}}  one example of a model with
                                                   several inputs (also ``{"input": {...}}``);
                                                   a batch of them is ``{"inputs": [{...}, ...]}``

An output is a nested list for a one-output model and ``{output name: nested list}`` for a
model with several. Input errors name the input: ``inputs[2]['b'] has shape ...``.
    GET  /v1/health   200 {"status": "ok", "model", "version", "mqtt": {"connected",
                      "protocol"}}; 503 while no model is active
    GET  /v1/model    the active manifest's interface, the provider in use, the artifact hash
    GET  /metrics     Prometheus text format (see :mod:`edge_agent.prometheus`)

Errors are JSON ``{"error": "..."}`` naming the problem: 400 for bad JSON, a wrong shape or
dtype, NaN; 413 for an oversized body; 404 for an unknown path; 503 while no model is active.
Every prediction is written to the outbox; in durable mode it is committed before the
response is sent, and ``"logged": false`` says the outbox dropped it (full, by its policy):
serving never fails because of the log. In fast mode ``"logged"`` is null.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edge_agent.errors import AgentError, InputError, RuntimeBackendError
from edge_agent.health import HealthMonitor
from edge_agent.microbatch import Arrival, MicroBatcher
from edge_agent.outbox import Outbox
from edge_agent.recording import Recorder, RecordIds
from edge_agent.serving import Example, ModelSlot, ServedModel
from edge_agent.shadow import ShadowRunner
from edge_agent.telemetry import Metrics
from edgefleet.codec import encode
from edgefleet.errors import EdgefleetError

if TYPE_CHECKING:
    from edge_agent.unix_socket import BoundSocket

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 16 << 20
MAX_BATCH = 10_000


class ApiError(EdgefleetError):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.http_status = int(status)


@dataclass
class PredictionService:
    """What the HTTP layer calls; usable without HTTP too."""

    slot: ModelSlot
    outbox: Outbox
    metrics: Metrics
    on_recorded: Callable[[], None] = lambda: None
    monitor: HealthMonitor = field(default_factory=HealthMonitor)
    device_id: str = ""
    input_sample_rate: float = 0.0
    shadow: ShadowRunner | None = None
    micro_batch: int = 0
    """Stream mode: when >= 2, concurrent single-example requests share runs of up to this
    many examples (see :mod:`edge_agent.microbatch`)."""
    micro_batch_wait_ms: float = 2.0
    mqtt_state: Callable[[], dict[str, Any]] = lambda: {"connected": False, "protocol": None}
    """What ``/v1/health`` says about the MQTT link (the agent wires its link in)."""
    _inflight: deque[None] = field(default_factory=deque, init=False, repr=False)
    """One entry per request in flight. Appending and popping are atomic, so the serving
    path takes no lock; a request appends before it reads ``_closed`` and :meth:`close`
    sets ``_closed`` before it reads the deque, so none slips past a close."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _cond: threading.Condition = field(init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _ids: RecordIds = field(default_factory=RecordIds, init=False, repr=False)
    recorder: Recorder = field(init=False, repr=False)
    batcher: MicroBatcher | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._cond = threading.Condition(self._lock)
        self.recorder = Recorder(
            outbox=self.outbox,
            metrics=self.metrics,
            monitor=self.monitor,
            device_id=self.device_id,
            input_sample_rate=self.input_sample_rate,
            on_recorded=lambda: self.on_recorded(),
        )
        if self.micro_batch >= 2:
            self.batcher = MicroBatcher(
                self._run,
                max_batch=self.micro_batch,
                max_wait=self.micro_batch_wait_ms / 1000.0,
            )

    def predict(self, body: Any) -> dict[str, Any]:
        """Validate, run, log to the outbox (committed), and answer."""
        self._enter()
        try:
            batcher = self.batcher
            if batcher is None or _is_batch(body):
                return self._predict(body)
            with batcher.arrival() as arrival:
                return self._predict(body, arrival)
        finally:
            self._leave()

    def _enter(self) -> None:
        self._inflight.append(None)
        if self._closed:
            self._leave()
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "the agent is stopping")

    def _leave(self) -> None:
        self._inflight.pop()
        if self._closed:  # only close() waits
            with self._lock:
                self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> bool:
        """Refuse new predictions and wait for those running; True when all finished."""
        with self._lock:
            self._closed = True
            finished = self._cond.wait_for(lambda: not self._inflight, timeout)
        if self.batcher is not None:
            self.batcher.close()
        self.recorder.close()
        return finished

    def _predict(self, body: Any, arrival: Arrival | None = None) -> dict[str, Any]:
        model = self.slot.current()
        if model is None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "no model is active yet")
        if not isinstance(body, dict):
            raise InputError('request body must be a JSON object with "input" or "inputs"')
        keys = {"input", "inputs"} & body.keys()
        if len(keys) != 1:
            raise InputError('request body must have exactly one of "input" or "inputs"')
        batch = _is_batch(body)
        if batch:
            raw = body["inputs"]
            if not raw:
                raise InputError('"inputs" must be a non-empty list of examples')
            if len(raw) > MAX_BATCH:
                raise InputError(f'"inputs" holds {len(raw)} examples; the limit is {MAX_BATCH}')
            examples = [
                model.coerce(value, where=f"inputs[{index}]") for index, value in enumerate(raw)
            ]
        else:
            key = "input" if "input" in body else "inputs"
            if not isinstance(body[key], dict) and key == "inputs":
                raise InputError(
                    '"inputs" must be a list of examples or an object {input name: value}'
                )
            examples = [model.coerce(body[key], where=key)]
        if batch:
            answer = self._run(model, examples)
            answer["outputs"] = [model.to_json(outputs) for outputs in answer["outputs"]]
            return answer
        if arrival is not None and model.batch_axis == "dynamic":
            answer = arrival.submit(model, examples[0])
        else:
            answer = self._run(model, examples)
        return {
            "output": model.to_json(answer.pop("outputs")[0]),
            "record_id": answer.pop("record_ids")[0],
            **answer,
        }

    def predict_examples(self, examples: list[Example]) -> dict[str, Any]:
        """The in-process path for arrays already of the model's dtype and example shape:
        run, log, count. Returns ``{"outputs", "record_ids", "model", "version", ...}`` where
        ``outputs`` holds, per example, its output arrays in manifest order (the HTTP layer
        turns them into JSON; an in-process caller has no use for nested lists)."""
        self._enter()
        try:
            model = self.slot.current()
            if model is None:
                raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "no model is active yet")
            return self._run(model, examples)
        finally:
            self._leave()

    def _run(self, model: ServedModel, examples: list[Example]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            results = model.run_examples(examples)
        except RuntimeBackendError:
            self.monitor.record(model.artifact_sha256, None, error=True)
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        if self.shadow is not None:
            self.shadow.offer(examples, results)
        record_ids = self._ids.take(len(examples))
        logged = self.recorder.record(model, examples, results, record_ids, latency_ms, time.time())
        return {
            "outputs": results,
            "record_ids": record_ids,
            "model": model.name,
            "version": model.version,
            "latency_ms": latency_ms,
            "logged": logged,
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        model = self.slot.current()
        mqtt = self.mqtt_state()
        if model is None:
            return 503, {"status": "no model", "model": None, "version": None, "mqtt": mqtt}
        return 200, {"status": "ok", "model": model.name, "version": model.version, "mqtt": mqtt}

    def metrics_text(self) -> str:
        """The Prometheus exposition of the cumulative counters."""
        from edge_agent import prometheus

        shadow = self.shadow
        return prometheus.render(
            totals=self.metrics.totals(),
            outbox_depth=self.outbox.depth(),
            outbox_bytes=self.outbox.bytes,
            outbox=self.outbox.stats(),
            model=self.slot.current(),
            shadow=shadow.totals() if shadow is not None else None,
        )

    def describe(self) -> dict[str, Any]:
        model = self.slot.current()
        if model is None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "no model is active yet")
        manifest = model.manifest
        return {
            "model": manifest.name,
            "version": manifest.version,
            "profile": manifest.profile,
            "format": manifest.format,
            "precision": manifest.precision,
            "artifact_sha256": model.artifact_sha256,
            "deployment_id": model.deployment_id,
            "provider": model.provider,
            "batch_axis": model.batch_axis,
            "example_shape": list(model.example_shape),
            "example_shapes": {name: list(shape) for name, shape in model.example_shapes.items()},
            "interface": encode(manifest.interface),
        }


def _is_batch(body: Any) -> bool:
    """``{"inputs": [...]}``: a list of examples (``{"inputs": {name: ...}}`` is one)."""
    return isinstance(body, dict) and isinstance(body.get("inputs"), list)


class _ApiServer:
    service: PredictionService
    max_body: int
    # socketserver's listen backlog is 5: a burst of clients connecting at once (a camera
    # pipeline's workers starting together) got connection resets instead of waiting.
    request_queue_size = 128


class _TcpServer(_ApiServer, ThreadingHTTPServer):
    daemon_threads = True


class _UnixServer(_ApiServer, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, bound: BoundSocket) -> None:
        super().__init__(str(bound.path), _UnixHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = bound.sock
        self.server_activate()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edgefleet-agent"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (~40 ms per keep-alive request).
    disable_nagle_algorithm = True

    @property
    def _service(self) -> PredictionService:
        return cast(_ApiServer, self.server).service

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if self.path == "/v1/health":
            status, body = self._service.health()
            self._json(status, body)
        elif self.path == "/v1/model":
            self._guarded(self._service.describe)
        elif self.path == "/metrics":
            from edge_agent.prometheus import CONTENT_TYPE

            self._send(200, self._service.metrics_text().encode(), CONTENT_TYPE)
        else:
            self._json(404, {"error": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/v1/predict":
            self.close_connection = True
            self._json(404, {"error": f"no such endpoint: POST {self.path}"})
            return
        self._guarded(lambda: self._service.predict(self._read_json()))

    def _guarded(self, action: Callable[[], dict[str, Any]]) -> None:
        try:
            body = action()
        except EdgefleetError as exc:
            if exc.http_status != 503:
                self._service.metrics.record_error()
            self._json(exc.http_status, {"error": str(exc)})
            return
        self._json(200, body)

    def _read_json(self) -> Any:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number") from None
        limit = cast(_ApiServer, self.server).max_body
        if length > limit:
            self._discard(length, limit)
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes exceeds the limit of {limit} bytes",
            )
        data = self.rfile.read(length)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"request body is not valid JSON ({exc})") from exc

    def _discard(self, length: int, limit: int) -> None:
        """Drain a moderately oversized body so the client reads the 413 instead of a reset."""
        if length > max(4 * limit, 1 << 20):
            self.close_connection = True
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class _UnixHandler(_Handler):
    disable_nagle_algorithm = False  # TCP_NODELAY is a TCP option

    def address_string(self) -> str:
        return "unix"


class LocalApi:
    """The HTTP server on its own thread. ``port=0`` picks a free port; ``socket_path``
    serves on that Unix domain socket instead of ``host:port``."""

    def __init__(
        self,
        service: PredictionService,
        host: str = "127.0.0.1",
        port: int = 8470,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        socket_path: Path | None = None,
    ) -> None:
        self.service = service
        self._bound: BoundSocket | None = None
        self._server: _TcpServer | _UnixServer
        if socket_path is not None:
            from edge_agent.unix_socket import bind_unix_socket

            self._bound = bind_unix_socket(socket_path)
            self._server = _UnixServer(self._bound)
        else:
            try:
                self._server = _TcpServer((host, port), _Handler)
            except OSError as exc:
                raise AgentError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc
        self._server.service = service
        self._server.max_body = max_body
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="edgefleet-api", daemon=True
        )

    @property
    def socket_path(self) -> Path | None:
        return self._bound.path if self._bound is not None else None

    @property
    def address(self) -> tuple[str, int]:
        """The TCP address; an AgentError when serving on a Unix socket."""
        if not isinstance(self._server, _TcpServer):
            raise AgentError(f"the local API serves on the Unix socket {self.socket_path}")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` or ``unix:PATH``: what the agent writes to ``agent.addr``."""
        if self._bound is not None:
            return f"unix:{self._bound.path}"
        host, port = self.address
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}" if self._bound is None else self.endpoint

    def start(self) -> None:
        self._thread.start()
        log.info("local API listening on %s", self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._bound is not None:
            self._bound.remove()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
