"""The MQTT bridge: ingest what devices publish, publish desired state and acks.

One paho-mqtt 2.x client. With a broker that speaks MQTT 5 (Mosquitto) and ``shared=True``,
reports, telemetry and predictions are taken through shared subscriptions
(``$share/fleet/edgefleet/v1/+/...``), so several server processes split the ingest; status
stays a plain subscription (low volume, idempotent, and retained messages are not delivered to
shared subscriptions). With MQTT 3.1.1 (the embedded amqtt broker) every subscription is plain.
Subscriptions are made inside ``on_connect`` so they survive reconnects. Messages are handed
from paho's network thread to one worker thread, which applies them in batches
(:func:`fleet_server.ingest.service.apply_batch`: up to ``BATCH_MAX`` messages per transaction,
bulk inserts, one update and one row lock per device; a batch that meets a busy database is
retried whole with back-off, one that fails otherwise is retried one message at a time),
commits, and only then publishes the :class:`Ack` for prediction batches. A device row whose
only change is ``last_seen``/``last_telemetry`` is written at most every ``activity_interval_s``
(:class:`~fleet_server.ingest.activity.ActivityBuffer`); when no message comes, the worker
flushes what is due by itself, and on stop it writes everything still held back.
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
from dataclasses import dataclass
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.codec import DecodeError, from_json
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
from fleet_server.ingest.activity import DEFAULT_INTERVAL_S, ActivityBuffer
from fleet_server.mqtt.url import parse_mqtt_url

log = logging.getLogger(__name__)

QOS = 1
KEEPALIVE_S = 30
BATCH_MAX = 500
BUSY_RETRIES = 3  # a batch that meets a busy database is retried whole this many times
BUSY_BACKOFF_S = 0.5
_STOP = object()


@dataclass(frozen=True)
class _Incoming:
    topic: str
    payload: bytes
    received_at: float


def speaks_mqtt5(url: str, *, timeout_s: float = 3.0) -> bool:
    """Whether the broker at ``url`` accepts an MQTT 5 connection."""
    address = parse_mqtt_url(url)
    accepted = threading.Event()
    answered = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edgefleet-probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)

    def on_connect(*args: Any) -> None:
        if not args[3].is_failure:
            accepted.set()
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: answered.set()
    try:
        client.connect(address.host, address.port, keepalive=5)
    except OSError:
        return False
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted.is_set()


_PAYLOADS: dict[Channel, type[ingest.DeviceMessage]] = {
    Channel.STATUS: Status,
    Channel.REPORT: Report,
    Channel.TELEMETRY: Telemetry,
    Channel.PREDICTIONS: PredictionBatch,
}


class MqttBridge:
    """Connects in the background and reconnects by itself; implements ``Publisher``."""

    def __init__(
        self,
        *,
        url: str,
        sessions: sessionmaker[Session],
        client_id: str | None = None,
        shared: bool = False,
        activity_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.address = parse_mqtt_url(url)
        self.shared = shared
        self.ingested = 0
        self._sessions = sessions
        self._activity = ActivityBuffer(activity_interval_s)
        self.client_id = client_id or f"edgefleet-server-{uuid.uuid4().hex[:12]}"
        self.ready = threading.Event()  # connected and every subscription acknowledged
        self._subscribe_mid: int | None = None
        # Held while a desired state is read and published: a republish after a reconnect reads
        # every device's state inside it, so an executor's newer state, committed meanwhile,
        # is published after it and is what the broker retains.
        self._desired_lock = threading.Lock()
        self._jobs: queue.Queue[_Incoming | Callable[[], None] | object] = queue.Queue()
        self._worker = threading.Thread(
            target=self._work, name="edgefleet-mqtt-ingest", daemon=True
        )
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if shared else mqtt.MQTTv311,
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
        with self._desired_lock:
            self._publish_desired(device_id, desired)

    def _publish_desired(self, device_id: str, desired: DesiredState) -> None:
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
            [
                (
                    topics.subscription(channel, shared=self.shared and channel != Channel.STATUS),
                    QOS,
                )
                for channel in DEVICE_TO_SERVER
            ]
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
        self._jobs.put(_Incoming(message.topic, bytes(message.payload), time.time()))

    # -- worker thread -----------------------------------------------------------------------

    def _next_job(self) -> _Incoming | Callable[[], None] | object | None:
        """The next job; ``None`` when none came for a while and held activity is due."""
        while True:
            try:
                return self._jobs.get(timeout=max(self._activity.interval_s / 2, 0.1))
            except queue.Empty:
                if self._activity.has_due():
                    return None

    def _work(self) -> None:
        while (job := self._next_job()) is not _STOP:
            if job is None:
                self._guarded(partial(self._ingest_batch, []))  # write the held activity
                continue
            if not isinstance(job, _Incoming):
                assert callable(job)
                self._guarded(job)
                continue
            batch = [job]
            while len(batch) < BATCH_MAX:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, _Incoming):
                    self._jobs.put(item)  # run it after this batch
                    if item is _STOP:
                        break
                    continue
                batch.append(item)
            self._guarded(partial(self._ingest_batch, batch))
        self._drain_after_stop()

    def _drain_after_stop(self) -> None:
        pending = []
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Incoming):
                pending.append(item)
        self._activity.interval_s = 0.0  # stopping: write everything held back
        self._guarded(partial(self._ingest_batch, pending))

    @staticmethod
    def _guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except SQLAlchemyError:
            log.exception("database error in the MQTT bridge; the message was not stored")
        except Exception:  # the worker must outlive any one bad message
            log.exception("unexpected error in the MQTT bridge; the message was dropped")

    def _ingest_batch(self, batch: list[_Incoming]) -> None:
        """Apply ``batch`` in one transaction. A busy database (SQLite locked past its busy
        timeout, a PostgreSQL deadlock) is retried whole, with back-off; any other database
        error, one message at a time, so one bad message does not lose the others."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                self._apply_all(batch)
                return
            except OperationalError as exc:
                if attempt == BUSY_RETRIES:
                    break
                log.warning(
                    "database busy (%s); retrying a batch of %d messages",
                    str(exc.orig).strip(),
                    len(batch),
                )
                time.sleep(BUSY_BACKOFF_S * 2**attempt)
            except SQLAlchemyError:
                break
        if len(batch) > 1:
            log.warning("a batch of %d messages failed; retrying one at a time", len(batch))
        for item in batch:  # a message that fails again is logged with its error and dropped
            self._guarded(partial(self._apply_all, [item]))

    def _apply_all(self, batch: list[_Incoming]) -> None:
        incoming = [
            ingest.Incoming(device_id, message, item.received_at, item.payload)
            for item in batch
            if (parsed := self._parse(item)) is not None
            for device_id, message in [parsed]
        ]
        with self._sessions() as session:
            applied = ingest.apply_batch(session, incoming, activity=self._activity)
            session.commit()
        if applied.activity is not None:
            self._activity.committed(applied.activity)
        self.ingested += len(batch)
        for item in applied.unknown:
            log.warning(
                "dropped a %s message from unregistered device %r",
                type(item.message).__name__,
                item.device_id,
            )
        for device_id, seqs in applied.acks:
            self.publish_ack(device_id, Ack.of(seqs))

    def _parse(self, item: _Incoming) -> tuple[str, ingest.DeviceMessage] | None:
        try:
            parsed = topics.parse(item.topic)
        except TopicError as exc:
            log.warning("dropped a message: %s", exc)
            return None
        model = _PAYLOADS.get(parsed.channel)
        if model is None or not item.payload:  # an empty payload clears a retained message
            return None
        try:
            return parsed.device_id, from_json(model, item.payload)
        except DecodeError as exc:
            log.warning(
                "dropped a malformed %s message from %r: %s",
                parsed.channel,
                parsed.device_id,
                exc,
            )
            return None

    def _republish_desired(self) -> None:
        with self._desired_lock:
            with self._sessions() as session:
                states = all_desired_states(session)
            for device_id, desired in states:
                self._publish_desired(device_id, desired)
        if states:
            log.info("republished the desired state of %d device(s)", len(states))
