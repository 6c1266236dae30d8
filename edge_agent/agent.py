"""The agent: wires the runtime, local API, outbox, delivery, telemetry, MQTT and updater.

Start order matters for a device that restarts while offline: the last active model is
restored and the local API serves it before anything touches the network. The MQTT broker
address comes from ``--mqtt`` or, without it, from the fleet server's ``/api/v1/info``,
retried with back-off while the server is not up.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.api import DEFAULT_MAX_BODY, LocalApi, PredictionService
from edge_agent.delivery import Delivery
from edge_agent.health import HealthMonitor
from edge_agent.memory import release_free_memory
from edge_agent.mqtt import MqttLink
from edge_agent.outbox import Outbox, OutboxConfig
from edge_agent.runtime import backend_for
from edge_agent.serving import ModelSlot, ServedModel
from edge_agent.shadow import ShadowRunner
from edge_agent.telemetry import ActiveInfo, Metrics, TelemetryLoop
from edge_agent.update import StateStore, Updater, UpdaterConfig
from edge_agent.update.reports import OutcomeReports
from edgefleet import __version__
from edgefleet.bundle import VerifyKey
from edgefleet.protocol import topics
from edgefleet.protocol.messages import (
    Ack,
    DesiredState,
    DeviceState,
    PredictionBatch,
    Report,
    ShadowStats,
    Status,
    Telemetry,
)
from edgefleet.protocol.topics import Channel
from hardware_profiles.schema import HardwareProfile

log = logging.getLogger(__name__)

ADDR_FILE = "agent.addr"
OUTBOX_FILE = "outbox.sqlite"


@dataclass(frozen=True)
class AgentConfig:
    server_url: str
    device_id: str
    token: str
    profile: HardwareProfile
    data_dir: Path
    trusted_keys: tuple[VerifyKey, ...]
    mqtt_url: str | None = None
    listen: tuple[str, int] = ("127.0.0.1", 8470)
    socket: Path | None = None
    """Serve the local API on this Unix domain socket instead of ``listen``."""
    telemetry_interval: float = 10.0
    ack_timeout: float = 5.0
    max_body: int = DEFAULT_MAX_BODY
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    input_sample_rate: float = 0.0
    micro_batch: int = 0
    micro_batch_wait_ms: float = 2.0


def discover_mqtt_url(
    server_url: str, stop: threading.Event, *, initial: float = 0.5, maximum: float = 10.0
) -> str | None:
    """GET {server}/api/v1/info until it answers; None when ``stop`` is set first."""
    url = server_url.rstrip("/") + "/api/v1/info"
    delay = initial
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                info = json.loads(response.read())
            mqtt_url = info["mqtt_url"]
            if not isinstance(mqtt_url, str):
                raise TypeError("mqtt_url is not a string")
            log.info("fleet server %s: MQTT broker at %s", server_url, mqtt_url)
            return mqtt_url
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("fleet server %s not answering (%s); retrying in %.1fs", url, exc, delay)
        stop.wait(delay)
        delay = min(delay * 2, maximum)
    return None


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        topics.validate_device_id(config.device_id)
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.slot = ModelSlot()
        self.metrics = Metrics()
        self.outbox = Outbox(config.data_dir / OUTBOX_FILE, config.outbox)
        self.backend = backend_for(config.profile)
        self.health = HealthMonitor()
        self.updater = Updater(
            config=UpdaterConfig(
                server_url=config.server_url,
                token=config.token,
                profile=config.profile,
                data_dir=config.data_dir,
                trusted_keys=config.trusted_keys,
            ),
            backend=self.backend,
            slot=self.slot,
            store=StateStore(config.data_dir),
            report=self._publish_report,
            on_activated=self._activated,
            health=self.health,
            on_shadow=self._shadow_changed,
        )
        self.reports = OutcomeReports(
            config.data_dir, failure=self.updater.last_failure, send=self._send_report
        )
        self.delivery = Delivery(
            outbox=self.outbox,
            publish=self._publish_batch,
            connected=self._connected,
            ack_timeout=config.ack_timeout,
        )
        self.service = PredictionService(
            slot=self.slot,
            outbox=self.outbox,
            metrics=self.metrics,
            on_recorded=self.delivery.wake,
            monitor=self.health,
            device_id=config.device_id,
            input_sample_rate=config.input_sample_rate,
            micro_batch=config.micro_batch,
            micro_batch_wait_ms=config.micro_batch_wait_ms,
            mqtt_state=self._mqtt_state,
        )
        host, port = config.listen
        self.api = LocalApi(
            self.service, host, port, max_body=config.max_body, socket_path=config.socket
        )
        self.telemetry = TelemetryLoop(
            metrics=self.metrics,
            interval=config.telemetry_interval,
            data_dir=config.data_dir,
            outbox_depth=self.outbox.depth,
            active=self._active_info,
            connected=self._connected,
            publish=self._publish_telemetry,
            outbox_dropped=lambda: self.outbox.stats().dropped,
            shadow=self._shadow_stats,
        )
        self.link: MqttLink | None = None
        self._stop = threading.Event()
        self._connector = threading.Thread(
            target=self._connect, name="edgefleet-connect", daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.updater.restore()
        release_free_memory()  # what loading and checking the model freed
        self.api.start()
        self._write_addr()
        self.delivery.start()
        self.telemetry.start()
        self.updater.start()
        self._connector.start()

    def stop(self) -> None:
        log.info("stopping")
        self._stop.set()
        self.updater.stop()
        self.telemetry.stop()
        self.delivery.stop()
        if self._connector.is_alive():
            self._connector.join(timeout=5)
        if self.link is not None:
            self.link.stop()
        self.api.stop()
        if not self.service.close(timeout=5.0):
            log.warning("predictions still running after 5s; closing the outbox anyway")
        self.outbox.close()
        log.info("stopped")

    @property
    def address(self) -> tuple[str, int]:
        return self.api.address

    def _write_addr(self) -> None:
        endpoint = self.api.endpoint
        path = self.config.data_dir / ADDR_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{endpoint}\n")
        tmp.replace(path)
        log.info("address %s written to %s", endpoint, path)

    def _connect(self) -> None:
        url = self.config.mqtt_url or discover_mqtt_url(self.config.server_url, self._stop)
        if url is None or self._stop.is_set():
            return
        link = MqttLink(
            url,
            self.config.device_id,
            status=self._status,
            on_desired=self._desired,
            on_ack=self._ack,
            on_connected=self._on_connected,
            on_published=self.reports.acknowledged,
        )
        self.link = link
        link.start()

    # -- callbacks -------------------------------------------------------------------------

    def _status(self) -> Status:
        current = self.slot.current()
        return Status(
            state=DeviceState.ONLINE,
            profile=self.config.profile.tag,
            active_version=current.version if current else None,
            agent_version=__version__,
        )

    def _active_info(self) -> ActiveInfo:
        current = self.slot.current()
        return ActiveInfo(
            model=current.name if current else None,
            version=current.version if current else None,
        )

    def _connected(self) -> bool:
        return self.link is not None and self.link.connected

    def _mqtt_state(self) -> dict[str, object]:
        link = self.link
        return {
            "connected": link is not None and link.connected,
            "protocol": link.protocol.value if link is not None else None,
        }

    def _on_connected(self) -> None:
        self.delivery.reset()
        self.reports.connected()

    def _desired(self, desired: DesiredState) -> None:
        self.updater.submit(desired)

    def _ack(self, ack: Ack) -> None:
        self.delivery.handle_ack(ack)

    def _activated(self, served: ServedModel | None) -> None:
        if served is None:
            log.warning("serving no model (rolled back to none)")
        else:
            log.info("serving %s %s on %s", served.name, served.version, served.provider)
        release_free_memory()  # the previous model and what the update freed
        if self.link is not None:
            self.link.publish_status()

    def _shadow_changed(self, runner: ShadowRunner | None) -> None:
        self.service.shadow = runner

    def _shadow_stats(self) -> ShadowStats | None:
        runner = self.service.shadow
        return runner.take() if runner is not None else None

    def _publish_report(self, report: Report) -> None:
        self.reports.publish(report)

    def _send_report(self, report: Report) -> int | None:
        link = self.link
        return None if link is None else link.send(Channel.REPORT, report)

    def _publish_batch(self, batch: PredictionBatch) -> bool:
        return self.link is not None and self.link.publish(Channel.PREDICTIONS, batch, qos=1)

    def _publish_telemetry(self, telemetry: Telemetry) -> bool:
        return self.link is not None and self.link.publish(Channel.TELEMETRY, telemetry, qos=1)
