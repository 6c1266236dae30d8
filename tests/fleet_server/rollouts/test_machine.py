"""The three state machines: walk every table, and illegal moves name the current state."""

from __future__ import annotations

from enum import StrEnum

import pytest

from fleet_server.rollouts.machine import (
    DEPLOYMENT_TABLE,
    ROLLOUT_TABLE,
    WAVE_TABLE,
    DeploymentEvent,
    DeploymentStatus,
    IllegalTransitionError,
    RolloutEvent,
    RolloutStatus,
    WaveEvent,
    WaveStatus,
    advance,
)

MACHINES = [
    (
        "rollout",
        ROLLOUT_TABLE,
        RolloutStatus,
        RolloutEvent,
        RolloutStatus.AWAITING_APPROVAL,
        {RolloutStatus.ABORTED, RolloutStatus.ROLLED_BACK},
    ),
    (
        "wave",
        WAVE_TABLE,
        WaveStatus,
        WaveEvent,
        WaveStatus.PENDING,
        {WaveStatus.SUCCEEDED, WaveStatus.FAILED, WaveStatus.CANCELLED},
    ),
    (
        "deployment",
        DEPLOYMENT_TABLE,
        DeploymentStatus,
        DeploymentEvent,
        DeploymentStatus.SENT,
        {DeploymentStatus.NO_ARTIFACT, DeploymentStatus.ROLLED_BACK, DeploymentStatus.SUPERSEDED},
    ),
]


@pytest.mark.parametrize(("name", "table", "states", "events", "start", "terminal"), MACHINES)
def test_every_move_of_the_table_and_only_those(
    name: str,
    table: dict[StrEnum, dict[StrEnum, StrEnum]],
    states: type[StrEnum],
    events: type[StrEnum],
    start: StrEnum,
    terminal: set[StrEnum],
) -> None:
    for state in states:
        for event in events:
            if event in table.get(state, {}):
                assert advance(name, table, state, event) is table[state][event]
            else:
                with pytest.raises(IllegalTransitionError, match=f"{name} is {state.value}"):
                    advance(name, table, state, event)
    # terminal states have no exit; every other state has one
    assert {s for s in states if not table.get(s)} == terminal
    # every state is reachable from the start
    seen, todo = {start}, [start]
    while todo:
        for target in table.get(todo.pop(), {}).values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen | ({DeploymentStatus.NO_ARTIFACT} if name == "deployment" else set()) == set(states)


def test_an_illegal_move_names_the_current_state_and_what_is_allowed() -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        advance("rollout", ROLLOUT_TABLE, RolloutStatus.PAUSED, RolloutEvent.PAUSE)
    assert str(caught.value) == (
        "rollout is paused: cannot pause (allowed: abort, resume, roll_back)"
    )
    with pytest.raises(IllegalTransitionError, match="none: it is final"):
        advance("rollout", ROLLOUT_TABLE, RolloutStatus.ROLLED_BACK, RolloutEvent.ROLL_BACK)
    # a succeeded rollout can still be rolled back, and only that
    assert ROLLOUT_TABLE[RolloutStatus.SUCCEEDED] == {
        RolloutEvent.ROLL_BACK: RolloutStatus.ROLLING_BACK
    }
