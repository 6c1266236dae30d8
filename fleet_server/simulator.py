"""Lightweight simulated devices for scenario tests and the benchmark.

Each :class:`SimDevice` is a real paho MQTT client speaking the agent's protocol: client id
``edgefleet-agent-{id}``, Last Will ``offline`` (retained), ``online`` status on connect,
subscribes to its retained desired state, reports every deployment phase (with
``active_version``) and publishes telemetry with error counts, latency, NaN outputs, output
sketches and shadow statistics. How each model version behaves is given by :class:`Behaviour`.
One :class:`Scheduler` thread drives installs and telemetry of every device.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.protocol.messages import (
    DeploymentPhase,
    DesiredState,
    DeviceState,
    FeatureSketch,
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


@dataclass(frozen=True)
class VersionBehaviour:
    error_rate: float = 0.0
    nan_rate: float = 0.0
    p95_ms: float = 2.0
    agreement: float = 1.0  # top-1 agreement with the active model when shadowed
    output_mean: float = 0.5
    fails_install: bool = False


@dataclass(frozen=True)
class Behaviour:
    versions: dict[str, VersionBehaviour] = field(default_factory=dict)
    install_s: float = 0.05
    telemetry_s: float = 0.1
    requests_per_window: int = 20

    def of(self, version: str | None) -> VersionBehaviour:
        return self.versions.get(version or "", VersionBehaviour())


class Scheduler:
    """One thread that runs timed callbacks for many devices."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sim-scheduler", daemon=True)
        self._thread.start()

    def at(self, when: float, job: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (when, next(self._counter), job))
            self._cv.notify()

    def later(self, delay: float, job: Callable[[], None]) -> None:
        self.at(time.monotonic() + delay, job)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
            job()


@dataclass
class Received:
    deployment_id: str
    version: str
    rollback: bool
    shadow_version: str | None
    at: float


class SimDevice:
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

    # -- connection --------------------------------------------------------------------------

    def start(self) -> None:
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
        client.connect_async(self._address.host, self._address.port, keepalive=30)
        client.loop_start()
        self._client = client
        with self._lock:
            self._online = True
            self._generation += 1
            generation = self._generation
        self._scheduler.later(self.behaviour.telemetry_s, lambda: self._telemetry(generation))

    def stop(self, *, graceful: bool = True) -> None:
        """Go offline: publish ``offline`` (as the Last Will would) and disconnect."""
        with self._lock:
            self._online = False
        client, self._client = self._client, None
        if client is None:
            return
        if graceful:
            info = client.publish(
                topic(self.device_id, Channel.STATUS),
                Status(state=DeviceState.OFFLINE).to_bytes(),
                qos=1,
                retain=True,
            )
            info.wait_for_publish(timeout=5)
        client.disconnect()
        client.loop_stop()

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
        desired = DesiredState.model_validate_json(message.payload)
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
            output_sketches=(
                FeatureSketch(
                    index=0,
                    count=n,
                    mean=vb.output_mean,
                    m2=0.01 * n,
                    min=vb.output_mean - 0.3,
                    max=vb.output_mean + 0.3,
                ),
            ),
        )
