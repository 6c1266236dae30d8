"""What the HTTP side may publish. The bridge implements it; tests may record instead."""

from __future__ import annotations

from typing import Protocol

from edgefleet.protocol.messages import Ack, DesiredState


class Publisher(Protocol):
    def publish_desired(self, device_id: str, desired: DesiredState) -> None:
        """Publish ``desired`` retained, QoS 1, on ``edgefleet/v1/{device_id}/desired``."""

    def publish_ack(self, device_id: str, ack: Ack) -> None:
        """Publish ``ack`` QoS 1 on ``edgefleet/v1/{device_id}/ack``."""
