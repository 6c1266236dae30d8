"""The agent's MQTT link: paho-mqtt 2.x, MQTT 5 or 3.1.1, Last Will, automatic reconnects.

The link speaks MQTT 5 where the broker does and falls back to 3.1.1 otherwise: a CONNACK
"unsupported protocol version" (0x84, or 3.1.1's return code 1), or a broker that closes the
connection twice in a row before any CONNACK, switches the link to 3.1.1 for the rest of the
process and logs it; :attr:`MqttLink.protocol` says which one is in use (the local API's
``/v1/health`` shows it).

QoS 1 messages published while disconnected wait in paho's memory and go out on reconnect;
they are lost with the process. :meth:`MqttLink.send` returns the message id and
``on_published`` is called with it when the broker acknowledges it (PUBACK), except when an
MQTT 5 broker says that nobody is subscribed (reason 0x10: the server is not listening), so
that a caller can publish again what matters (see :mod:`edge_agent.update.reports`).

On every connect the link publishes ``Status(online)`` retained and subscribes (inside
``on_connect``, so subscriptions survive reconnects) to ``desired`` and ``ack``. The Last Will
publishes ``Status(offline)`` retained when the connection drops without a clean disconnect;
:meth:`MqttLink.stop` publishes it itself before disconnecting. The paho network thread
(``loop_start``) reconnects by itself with a 0.5-10 s back-off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import AgentError
from edgefleet.codec import DecodeError, Record, from_json, to_json
from edgefleet.protocol import broker, topics
from edgefleet.protocol.broker import BrokerAddress, BrokerUrlError
from edgefleet.protocol.messages import Ack, DesiredState, DeviceState, Status
from edgefleet.protocol.topics import Channel

log = logging.getLogger(__name__)


def parse_mqtt_url(url: str) -> BrokerAddress:
    """The shared broker URL parser; a bad URL stops the agent with an :class:`AgentError`."""
    try:
        return broker.parse_mqtt_url(url)
    except BrokerUrlError as exc:
        raise AgentError(str(exc)) from exc


UNSUPPORTED_PROTOCOL_VERSION = 0x84
NO_MATCHING_SUBSCRIBERS = 0x10
CLOSES_BEFORE_FALLBACK = 2


class MqttProtocol(StrEnum):
    MQTT5 = "5"
    MQTT311 = "3.1.1"


_PAHO_PROTOCOL = {MqttProtocol.MQTT5: mqtt.MQTTv5, MqttProtocol.MQTT311: mqtt.MQTTv311}


def _nothing() -> None:
    return None


def _ignore(mid: int) -> None:
    return None


class MqttLink:
    """One MQTT connection for one device; every method is thread-safe."""

    def __init__(
        self,
        url: str,
        device_id: str,
        *,
        status: Callable[[], Status],
        on_desired: Callable[[DesiredState], None],
        on_ack: Callable[[Ack], None],
        on_connected: Callable[[], None] = _nothing,
        on_published: Callable[[int], None] = _ignore,
        keepalive: int = 15,
    ) -> None:
        self.address = parse_mqtt_url(url)
        self.device_id = topics.validate_device_id(device_id)
        self._status = status
        self._on_desired = on_desired
        self._on_ack = on_ack
        self._on_connected = on_connected
        self._on_published = on_published
        self._keepalive = keepalive
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._ever_connected = False
        self._failures = 0
        self._awaiting_connack = False
        self._closes_before_connack = 0
        self._protocol = MqttProtocol.MQTT5
        self._client = self._make_client(self._protocol)

    def _topic(self, channel: Channel) -> str:
        return topics.topic(self.device_id, channel)

    def _make_client(self, protocol: MqttProtocol) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgefleet-agent-{self.device_id}",
            protocol=_PAHO_PROTOCOL[protocol],
            # MQTT 5 has no clean_session; clean_start=True in connect_async says the same.
            clean_session=True if protocol is MqttProtocol.MQTT311 else None,
        )
        client.enable_logger(logging.getLogger("edge_agent.mqtt.paho"))
        client.suppress_exceptions = True
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        offline = replace(self._status(), state=DeviceState.OFFLINE)
        client.will_set(self._topic(Channel.STATUS), offline.to_bytes(), qos=1, retain=True)
        # paho annotates the delays as int; it sleeps on them, so a float works.
        client.reconnect_delay_set(0.5, 10)  # type: ignore[arg-type]
        client.on_pre_connect = self._handle_pre_connect
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol(self) -> MqttProtocol:
        """The MQTT version in use: 5 until the broker refuses it, then 3.1.1."""
        return self._protocol

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; the network thread keeps reconnecting until stop()."""
        log.info(
            "connecting to MQTT broker %s:%d (MQTT %s)",
            self.address.host,
            self.address.port,
            self._protocol,
        )
        with self._lock:
            self._launch(self._client)

    def _launch(self, client: mqtt.Client) -> None:
        if self._protocol is MqttProtocol.MQTT5:
            client.connect_async(
                self.address.host, self.address.port, self._keepalive, clean_start=True
            )
        else:
            client.connect_async(self.address.host, self.address.port, self._keepalive)
        client.loop_start()

    def _fall_back(self, why: str) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (called on the old client's thread)."""
        with self._lock:
            if self._stopping or self._protocol is MqttProtocol.MQTT311:
                return
            log.warning(
                "MQTT broker %s:%d does not speak MQTT 5 (%s); falling back to MQTT 3.1.1",
                self.address.host,
                self.address.port,
                why,
            )
            old = self._client
            old.loop_stop()  # on its own thread: ends the loop after this callback returns
            self._protocol = MqttProtocol.MQTT311
            self._client = self._make_client(self._protocol)
            self._launch(self._client)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish offline status, disconnect cleanly, stop the network thread."""
        with self._lock:
            self._stopping = True
        if self.connected:
            offline = replace(self._status(), state=DeviceState.OFFLINE)
            info = self._client.publish(
                self._topic(Channel.STATUS), offline.to_bytes(), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not confirmed by the broker: %s", exc)
        if self._ever_connected:
            self._client.disconnect()
        self._client.disable_logger()  # paho logs a spurious error when a retry loop ends
        self._client.loop_stop()
        self._connected.clear()

    def publish(
        self, channel: Channel, message: Record, *, qos: int = 1, retain: bool = False
    ) -> bool:
        """Publish a message. QoS 1 messages are queued while disconnected and sent on reconnect.

        Returns True when the message went out on a live connection.
        """
        return self._publish(channel, message, qos=qos, retain=retain).rc == mqtt.MQTT_ERR_SUCCESS

    def send(self, channel: Channel, message: Record) -> int:
        """Publish with QoS 1 (queued while disconnected); returns the message id that
        ``on_published`` is called with on the broker's PUBACK."""
        return self._publish(channel, message, qos=1, retain=False).mid

    def _publish(
        self, channel: Channel, message: Record, *, qos: int, retain: bool
    ) -> mqtt.MQTTMessageInfo:
        return self._client.publish(
            self._topic(channel), to_json(message).encode(), qos=qos, retain=retain
        )

    def publish_status(self) -> bool:
        return self.publish(Channel.STATUS, self._status(), qos=1, retain=True)

    def _handle_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._awaiting_connack = True

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._awaiting_connack = False
        self._closes_before_connack = 0
        if reason.is_failure:
            if reason.value == UNSUPPORTED_PROTOCOL_VERSION and client is self._client:
                self._fall_back(f"CONNACK: {reason}")
                return
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        again = "re" if self._ever_connected else ""
        self._failures = 0
        self._ever_connected = True
        log.info(
            "%sconnected to MQTT broker %s:%d (MQTT %s)",
            again,
            self.address.host,
            self.address.port,
            self._protocol,
        )
        self.publish_status()
        client.subscribe([(self._topic(Channel.DESIRED), 1), (self._topic(Channel.ACK), 1)])
        self._connected.set()
        self._on_connected()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._awaiting_connack = False
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "cannot reach MQTT broker %s:%d (attempt %d); retrying with back-off",
            self.address.host,
            self.address.port,
            self._failures,
        )

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return
        self._connected.clear()
        if self._awaiting_connack and self._protocol is MqttProtocol.MQTT5:
            self._awaiting_connack = False
            self._closes_before_connack += 1
            if self._closes_before_connack >= CLOSES_BEFORE_FALLBACK:
                self._fall_back(
                    f"closed the connection {self._closes_before_connack} times before a CONNACK"
                )
                return
        if not self._stopping:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        if client is not self._client or reason.is_failure:
            return
        if reason.value == NO_MATCHING_SUBSCRIBERS:
            log.debug("message %d reached the broker, but no subscriber", mid)
            return
        self._on_published(mid)

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        if not message.payload:
            return
        try:
            channel = topics.parse(message.topic).channel
            if channel is Channel.DESIRED:
                desired = from_json(DesiredState, message.payload)
                log.info(
                    "desired state received: %s %s (deployment %s)",
                    desired.model,
                    desired.version,
                    desired.deployment_id,
                )
                self._on_desired(desired)
            elif channel is Channel.ACK:
                self._on_ack(from_json(Ack, message.payload))
        except (DecodeError, topics.TopicError) as exc:
            log.warning("ignoring a malformed message on %s: %s", message.topic, exc)
