"""Topic build/parse round trips and the acknowledgement ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.codec import from_json
from edgefleet.protocol import topics
from edgefleet.protocol.messages import Ack, DesiredState, Status

device_ids = st.from_regex(topics.DEVICE_ID_PATTERN, fullmatch=True)


@given(device_ids, st.sampled_from(list(topics.Channel)))
def test_topic_round_trip(device_id: str, channel: topics.Channel) -> None:
    parsed = topics.parse(topics.topic(device_id, channel))
    assert (parsed.device_id, parsed.channel) == (device_id, channel)


@pytest.mark.parametrize(
    "name",
    ["edgefleet/v2/dev/status", "edgefleet/v1/dev/unknown", "edgefleet/v1/status", "x/v1/d/ack"],
)
def test_foreign_topics_are_refused(name: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.parse(name)


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "-lead", "x" * 65])
def test_bad_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(topics.TopicError, match="device id"):
        topics.topic(device_id, topics.Channel.STATUS)


def test_shared_subscription() -> None:
    assert topics.subscription(topics.Channel.TELEMETRY) == "edgefleet/v1/+/telemetry"
    assert (
        topics.subscription(topics.Channel.PREDICTIONS, shared=True)
        == "$share/fleet/edgefleet/v1/+/predictions"
    )


@given(st.sets(st.integers(min_value=1, max_value=10_000), max_size=300))
def test_ack_ranges_cover_exactly_the_seqs(seqs: set[int]) -> None:
    ack = Ack.of(seqs)
    assert list(ack.seqs()) == sorted(seqs)
    assert from_json(Ack, ack.to_bytes()) == ack
    for (_, last), (first, _) in zip(ack.ranges, ack.ranges[1:], strict=False):
        assert first > last + 1  # ranges are maximal: never adjacent


def test_messages_round_trip_as_json() -> None:
    desired = DesiredState(
        deployment_id="d1", model="m", version="1.0.0", artifact_url="/a/1", sha256="0" * 64, size=1
    )
    assert from_json(DesiredState, desired.to_bytes()) == desired
    status = from_json(Status, b'{"state": "offline", "unknown_field": 1}')
    assert status.state == "offline"
