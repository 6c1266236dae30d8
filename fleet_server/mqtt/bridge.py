"""The MQTT bridge: ingest what devices publish, publish desired state and acks.

One paho-mqtt 2.x client (MQTT 3.1.1, so it works with Mosquitto and the embedded amqtt).
Subscriptions are made inside ``on_connect`` so they survive reconnects. Messages are handed
from paho's network thread to one worker thread, which parses them, applies them in one
transaction each, commits, and only then publishes the :class:`Ack` for prediction batches.
A message from an unregistered device, or one that does not parse, is logged and dropped.
After every (re)connect the worker republishes each device's desired state (retained), so a
broker that lost its retained messages converges again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.protocol import topics
from edgefleet.protocol.messages import (
    Ack,
    DesiredState,
    PredictionBatch,
    Report,
    Status,
    Telemetry,
)
from edgefleet.protocol.topics import DEVICE_TO_SERVER, Channel, TopicError
from fleet_server.devices.service import all_desired_states
from fleet_server.ingest import service as ingest
from fleet_server.mqtt.url import parse_mqtt_url

log = logging.getLogger(__name__)

QOS = 1
KEEPALIVE_S = 30
_STOP = object()

_PAYLOADS: dict[Channel, type[BaseModel]] = {
    Channel.STATUS: Status,
    Channel.REPORT: Report,
    Channel.TELEMETRY: Telemetry,
    Channel.PREDICTIONS: PredictionBatch,
}


class MqttBridge:
    """Connects in the background and reconnects by itself; implements ``Publisher``."""

    def __init__(
        self, *, url: str, sessions: sessionmaker[Session], client_id: str | None = None
    ) -> None:
        self.address = parse_mqtt_url(url)
        self._sessions = sessions
        self.client_id = client_id or f"edgefleet-server-{uuid.uuid4().hex[:12]}"
        self.ready = threading.Event()  # connected and every subscription acknowledged
        self._subscribe_mid: int | None = None
        self._jobs: queue.Queue[Callable[[], None] | object] = queue.Queue()
        self._worker = threading.Thread(
            target=self._work, name="edgefleet-mqtt-ingest", daemon=True
        )
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311
        )
        if self.address.username is not None:
            self._client.username_pw_set(self.address.username, self.address.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait_s: float = 10.0) -> bool:
        """Start connecting; wait up to ``wait_s`` for the subscriptions. False if not ready."""
        self._worker.start()
        self._client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        if not self.ready.wait(wait_s):
            log.warning(
                "MQTT broker %s not reachable yet; the bridge keeps retrying in the background",
                self.address.url,
            )
            return False
        return True

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._jobs.put(_STOP)
        if self._worker.is_alive():
            self._worker.join(timeout=10)

    # -- Publisher ---------------------------------------------------------------------------

    def publish_desired(self, device_id: str, desired: DesiredState) -> None:
        self._publish(topics.topic(device_id, Channel.DESIRED), desired.to_bytes(), retain=True)

    def publish_ack(self, device_id: str, ack: Ack) -> None:
        self._publish(topics.topic(device_id, Channel.ACK), ack.to_bytes(), retain=False)

    def _publish(self, name: str, payload: bytes, *, retain: bool) -> None:
        info = self._client.publish(name, payload, qos=QOS, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning(
                "publish on %s queued, broker not connected (%s)", name, mqtt.error_string(info.rc)
            )

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.address.url, reason)
            return
        log.info("MQTT bridge connected to %s as %s", self.address.url, self.client_id)
        _, mid = client.subscribe(
            [(topics.subscription(channel), QOS) for channel in DEVICE_TO_SERVER]
        )
        self._subscribe_mid = mid
        self._jobs.put(self._republish_desired)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: Any, _properties: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [str(code) for code in reasons if code.is_failure]
        if failed:
            log.error("MQTT broker refused subscriptions: %s", ", ".join(failed))
            return
        self.ready.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        self.ready.clear()
        if reason.is_failure:
            log.warning(
                "MQTT bridge lost the broker %s (%s); reconnecting", self.address.url, reason
            )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._jobs.put(partial(self._ingest, message.topic, bytes(message.payload), time.time()))

    # -- worker thread -----------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            assert callable(job)
            try:
                job()
            except SQLAlchemyError:
                log.exception("database error in the MQTT bridge; the message was not stored")
            except Exception:  # the worker must outlive any one bad message
                log.exception("unexpected error in the MQTT bridge; the message was dropped")

    def _ingest(self, name: str, payload: bytes, received_at: float) -> None:
        try:
            parsed = topics.parse(name)
        except TopicError as exc:
            log.warning("dropped a message: %s", exc)
            return
        model = _PAYLOADS.get(parsed.channel)
        if model is None or not payload:  # an empty payload clears a retained message
            return
        device_id = parsed.device_id
        try:
            message = model.model_validate_json(payload)
        except ValidationError as exc:
            log.warning(
                "dropped a malformed %s message from %r: %s", parsed.channel, device_id, _first(exc)
            )
            return
        with self._sessions() as session:
            stored = self._apply(session, device_id, message, received_at)
            if stored is None:
                session.rollback()
                log.warning(
                    "dropped a %s message from unregistered device %r", parsed.channel, device_id
                )
                return
            session.commit()
        if isinstance(stored, list):
            self.publish_ack(device_id, Ack.of(stored))

    @staticmethod
    def _apply(
        session: Session, device_id: str, message: BaseModel, received_at: float
    ) -> bool | list[int] | None:
        """Apply one message; ``None`` if the device is unknown, the stored seqs for predictions."""
        known: bool
        if isinstance(message, PredictionBatch):
            return ingest.store_predictions(
                session, device_id=device_id, batch=message, received_at=received_at
            )
        if isinstance(message, Status):
            known = ingest.apply_status(
                session, device_id=device_id, status=message, received_at=received_at
            )
        elif isinstance(message, Report):
            known = ingest.apply_report(
                session, device_id=device_id, report=message, received_at=received_at
            )
        elif isinstance(message, Telemetry):
            known = ingest.apply_telemetry(
                session, device_id=device_id, telemetry=message, received_at=received_at
            )
        else:
            raise TypeError(f"no handler for {type(message).__name__}")
        return True if known else None

    def _republish_desired(self) -> None:
        with self._sessions() as session:
            states = all_desired_states(session)
        for device_id, desired in states:
            self.publish_desired(device_id, desired)
        if states:
            log.info("republished the desired state of %d device(s)", len(states))


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(root)"
    return f"field {where}: {error['msg']}"
