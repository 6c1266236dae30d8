"""Lightweight simulated devices for scenario tests and the benchmark.

Each :class:`SimDevice` is a real paho MQTT client speaking the agent's protocol: client id
``edgefleet-agent-{id}``, Last Will ``offline`` (retained), ``online`` status on connect,
subscribes to its retained desired state, reports every deployment phase (with
``active_version``) and publishes telemetry with error counts, latency, NaN outputs, input and
output sketches (with histograms, as the agent sends them) and shadow statistics. How each model
version behaves is given by :class:`Behaviour`.

One :class:`Scheduler` runs every device on one thread: an asyncio event loop drives the paho
clients through paho's external-loop API (each socket is registered with the loop; no
``loop_start`` thread per client) and runs the timed installs and telemetry. A thousand devices
cost one thread and a few percent of a core, so a benchmark measures the server, not the
simulator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.codec import from_json
from edgefleet.protocol.messages import (
    DeploymentPhase,
    DesiredState,
    DeviceState,
    FeatureSketch,
    Histogram,
    LatencySummary,
    Report,
    ShadowStats,
    Status,
    Telemetry,
)
from edgefleet.protocol.topics import Channel, topic
from fleet_server.mqtt.url import parse_mqtt_url

INSTALL_PHASES = (
    DeploymentPhase.DOWNLOADING,
    DeploymentPhase.VERIFYING,
    DeploymentPhase.STAGING,
    DeploymentPhase.ACTIVATING,
    DeploymentPhase.ACTIVE,
    DeploymentPhase.VALIDATING,
)
# The agent's default sketch histogram bounds (edge_agent/sketches.py DEFAULT_BOUNDS; the
# server may not import the agent, and reads the bounds from each message anyway).
SKETCH_BOUNDS: tuple[float, ...] = (-10.0, -3.0, -1.0, -0.3, 0.0, 0.3, 1.0, 3.0, 10.0)
MISC_S = 1.0  # how often each client's keepalive and reconnect are looked after
T = TypeVar("T")


@dataclass(frozen=True)
class VersionBehaviour:
    error_rate: float = 0.0
    nan_rate: float = 0.0
    p95_ms: float = 2.0
    agreement: float = 1.0  # top-1 agreement with the active model when shadowed
    output_mean: float = 0.5
    output_std: float = 0.1
    input_mean: float = 0.0  # what the device's inputs look like while this version runs
    input_std: float = 1.0
    fails_install: bool = False


@dataclass(frozen=True)
class Behaviour:
    versions: dict[str, VersionBehaviour] = field(default_factory=dict)
    install_s: float = 0.05
    telemetry_s: float = 0.1
    requests_per_window: int = 20

    def of(self, version: str | None) -> VersionBehaviour:
        return self.versions.get(version or "", VersionBehaviour())


def normal_sketch(index: int, count: int, mean: float, std: float) -> FeatureSketch:
    """The sketch an agent would send for ``count`` values of N(mean, std): moments, range and
    the histogram over :data:`SKETCH_BOUNDS` (expected counts, rounded)."""
    cdf = [0.0, *(_normal_cdf(b, mean, std) for b in SKETCH_BOUNDS), 1.0]
    counts = [round(count * (hi - lo)) for lo, hi in itertools.pairwise(cdf)]
    return FeatureSketch(
        index=index,
        count=count,
        mean=mean,
        m2=std * std * count,
        min=mean - 3 * std,
        max=mean + 3 * std,
        histogram=Histogram(bounds=SKETCH_BOUNDS, counts=tuple(counts)),
    )


def _normal_cdf(x: float, mean: float, std: float) -> float:
    if std <= 0:
        return 1.0 if x >= mean else 0.0
    return 0.5 * (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0))))


class Scheduler:
    """One thread with an asyncio event loop that runs every simulated device: the sockets of
    their paho clients and their timed jobs. Its methods may be called from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._devices: set[SimDevice] = set()
        self._thread = threading.Thread(target=self._run, name="sim-devices", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._misc)
        self.loop.run_forever()

    def _on_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def later(self, delay: float, job: Callable[[], None]) -> None:
        if self._on_loop():
            self.loop.call_later(delay, job)
        else:
            self.loop.call_soon_threadsafe(self.loop.call_later, delay, job)

    def call(self, job: Callable[[], T], *, timeout: float = 10.0) -> T:
        """Run ``job`` on the loop thread and return its result."""
        if self._on_loop():
            return job()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(job())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    # -- paho's external-loop API ----------------------------------------------------------

    def attach(self, device: SimDevice, client: mqtt.Client) -> None:
        """Let the loop drive ``client``'s socket (loop thread only)."""
        loop = self.loop
        client.on_socket_open = lambda c, _u, sock: loop.add_reader(sock, c.loop_read)
        client.on_socket_close = lambda _c, _u, sock: _forget(loop, sock)
        client.on_socket_register_write = lambda c, _u, sock: loop.add_writer(sock, c.loop_write)
        client.on_socket_unregister_write = lambda _c, _u, sock: _stop_writing(loop, sock)
        self._devices.add(device)

    def detach(self, device: SimDevice) -> None:
        self._devices.discard(device)

    def _misc(self) -> None:
        for device in list(self._devices):
            device.look_after()
        self.loop.call_later(MISC_S, self._misc)


def _stop_writing(loop: asyncio.AbstractEventLoop, sock: Any) -> None:
    loop.remove_writer(sock)


def _forget(loop: asyncio.AbstractEventLoop, sock: Any) -> None:
    loop.remove_reader(sock)
    loop.remove_writer(sock)


@dataclass
class Received:
    deployment_id: str
    version: str
    rollback: bool
    shadow_version: str | None
    at: float


class SimDevice:
    """One simulated device. ``start``/``stop`` may be called from any thread; everything
    else runs on the scheduler's loop thread."""

    def __init__(
        self,
        device_id: str,
        *,
        url: str,
        scheduler: Scheduler,
        behaviour: Behaviour,
        profile: str = "x86-64/avx512-vnni",
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.profile = profile
        self.behaviour = behaviour
        self.model, self.version = model, version
        self.shadow: tuple[str, str] | None = None
        self.received: list[Received] = []
        self.published = 0
        self._scheduler = scheduler
        self._address = parse_mqtt_url(url)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._online = False
        self._generation = 0
        self._client: mqtt.Client | None = None
        self._next_connect = 0.0

    # -- connection --------------------------------------------------------------------------

    def start(self) -> None:
        """Come online: connect (in the background, retrying) and start telemetry."""
        with self._lock:
            self._online = True
            self._generation += 1
            generation = self._generation
        self._scheduler.call(lambda: self._start(generation))

    def _start(self, generation: int) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-agent-{self.device_id}",
            protocol=mqtt.MQTTv311,
        )
        client.will_set(
            topic(self.device_id, Channel.STATUS),
            Status(state=DeviceState.OFFLINE).to_bytes(),
            qos=1,
            retain=True,
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        self._scheduler.attach(self, client)
        self._connect()
        self._scheduler.later(self.behaviour.telemetry_s, lambda: self._telemetry(generation))

    def _connect(self) -> None:
        client = self._client
        if client is None:
            return
        self._next_connect = time.monotonic() + MISC_S
        with contextlib.suppress(OSError):  # the broker is not there (yet): look_after() retries
            client.connect(self._address.host, self._address.port, keepalive=30)

    def look_after(self) -> None:
        """Keepalive pings, and a reconnect after the broker went away (loop thread)."""
        client = self._client
        if client is None:
            return
        if client.loop_misc() == mqtt.MQTT_ERR_NO_CONN and time.monotonic() >= self._next_connect:
            self._connect()

    def stop(self, *, graceful: bool = True) -> None:
        """Go offline; ``graceful`` first publishes ``offline`` (as the Last Will would)."""
        with self._lock:
            self._online = False
        self._scheduler.call(lambda: self._stop(graceful))

    def _stop(self, graceful: bool) -> None:
        client, self._client = self._client, None
        self._scheduler.detach(self)
        if client is None:
            return
        if graceful and client.is_connected():
            # Written before DISCONNECT on the same connection: the broker stores it first.
            client.publish(
                topic(self.device_id, Channel.STATUS),
                Status(state=DeviceState.OFFLINE).to_bytes(),
                qos=1,
                retain=True,
            )
        if client.disconnect() != mqtt.MQTT_ERR_SUCCESS:
            sock = client.socket()
            if sock is not None:
                _forget(self._scheduler.loop, sock)
                sock.close()

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        self._publish(
            Channel.STATUS,
            Status(state=DeviceState.ONLINE, profile=self.profile, active_version=self.version),
            retain=True,
        )
        client.subscribe(topic(self.device_id, Channel.DESIRED), qos=1)

    def _publish(self, channel: Channel, message: Any, *, retain: bool = False) -> None:
        client = self._client
        if client is None:
            return
        client.publish(topic(self.device_id, channel), message.to_bytes(), qos=1, retain=retain)
        self.published += 1

    # -- desired state -----------------------------------------------------------------------

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return
        desired = from_json(DesiredState, message.payload)
        with self._lock:
            self.received.append(
                Received(
                    desired.deployment_id,
                    desired.version,
                    desired.rollback,
                    desired.shadow.artifact.version if desired.shadow else None,
                    time.time(),
                )
            )
            if desired.deployment_id in self._seen:
                return
            self._seen.add(desired.deployment_id)
        steps = iter(INSTALL_PHASES)
        pause = self.behaviour.install_s / len(INSTALL_PHASES)

        def step() -> None:
            if not self._online:
                return
            phase = next(steps, None)
            if phase is None:
                self._finish(desired)
                return
            if phase is DeploymentPhase.ACTIVE and self.behaviour.of(desired.version).fails_install:
                self._report(desired, DeploymentPhase.FAILED, "activation failed: simulated")
                return
            self._report(desired, phase)
            self._scheduler.later(pause, step)

        self._scheduler.later(pause, step)

    def _finish(self, desired: DesiredState) -> None:
        with self._lock:
            self.model, self.version = desired.model, desired.version
            self.shadow = (
                (desired.shadow.artifact.model, desired.shadow.artifact.version)
                if desired.shadow
                else None
            )
        self._report(desired, DeploymentPhase.COMMITTED)

    def _report(self, desired: DesiredState, phase: DeploymentPhase, detail: str = "") -> None:
        self._publish(
            Channel.REPORT,
            Report(
                deployment_id=desired.deployment_id,
                model=desired.model,
                version=desired.version,
                phase=phase,
                detail=detail,
                active_model=self.model,
                active_version=self.version,
            ),
        )

    # -- telemetry ---------------------------------------------------------------------------

    def _telemetry(self, generation: int) -> None:
        with self._lock:
            if not self._online or generation != self._generation:
                return
            version, model, shadow = self.version, self.model, self.shadow
        if version is not None:
            self._publish(Channel.TELEMETRY, self.telemetry(model, version, shadow))
        self._scheduler.later(self.behaviour.telemetry_s, lambda: self._telemetry(generation))

    def telemetry(
        self, model: str | None, version: str, shadow: tuple[str, str] | None
    ) -> Telemetry:
        b = self.behaviour
        vb = b.of(version)
        n = b.requests_per_window
        shadow_stats = None
        if shadow is not None:
            sb = b.of(shadow[1])
            shadow_stats = ShadowStats(
                model=shadow[0],
                version=shadow[1],
                compared=n,
                top1_agreement=sb.agreement,
                mean_abs_diff=1.0 - sb.agreement,
                latency_p50_ms=sb.p95_ms / 2,
                latency_p95_ms=sb.p95_ms,
            )
        return Telemetry(
            window_s=b.telemetry_s,
            requests=n,
            errors=round(n * vb.error_rate),
            nan_outputs=round(n * vb.nan_rate),
            latency=LatencySummary(
                count=n, p50_ms=vb.p95_ms / 2, p95_ms=vb.p95_ms, max_ms=vb.p95_ms
            ),
            outbox_depth=0,
            active_model=model,
            active_version=version,
            shadow=shadow_stats,
            input_sketches=(normal_sketch(0, n, vb.input_mean, vb.input_std),),
            output_sketches=(normal_sketch(0, n, vb.output_mean, vb.output_std),),
        )
