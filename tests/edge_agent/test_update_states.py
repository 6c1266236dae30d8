"""The update transition table, walked whole: reachability, exits, and illegal moves."""

from __future__ import annotations

import pytest

from edge_agent.errors import UpdateError
from edge_agent.update.states import TERMINAL, TRANSITIONS, Event, State, next_state
from edgefleet.protocol.messages import DeploymentPhase


def test_every_state_is_in_the_table_and_reports_a_phase() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in State:
        if state is not State.IDLE:
            assert state.phase is DeploymentPhase(state.value)


def test_terminal_states_have_no_exit_and_the_others_have_one() -> None:
    assert {State.COMMITTED, State.ROLLED_BACK, State.FAILED} == TERMINAL
    for state, exits in TRANSITIONS.items():
        if state in TERMINAL:
            assert exits == {}, state
        else:
            assert Event.DONE in exits, state
            if state is not State.IDLE:
                # Every running state handles an error, a restart and a crash loop.
                assert set(exits) == set(Event), state


def test_every_state_is_reachable_and_every_path_ends_in_a_terminal_state() -> None:
    seen = {State.IDLE}
    frontier = [State.IDLE]
    while frontier:
        state = frontier.pop()
        for target in TRANSITIONS[state].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State)

    # Without restarts (DONE, ERROR, LOOPING) the graph has no cycle, so every path ends
    # in a terminal state.
    def walk(state: State, path: tuple[State, ...]) -> None:
        assert state not in path, f"cycle: {[*path, state]}"
        for event in (Event.DONE, Event.ERROR, Event.LOOPING):
            target = TRANSITIONS[state].get(event)
            if target is not None:
                walk(target, (*path, state))
        if not TRANSITIONS[state]:
            assert state in TERMINAL

    for start in State:
        walk(start, ())


def test_a_crash_after_the_swap_rolls_back_and_before_it_resumes() -> None:
    for state in (State.DOWNLOADING, State.VERIFYING, State.STAGING):
        assert next_state(state, Event.RESTARTED) is state
        assert next_state(state, Event.LOOPING) is State.FAILED
    for state in (State.ACTIVATING, State.VALIDATING):
        assert next_state(state, Event.RESTARTED) is State.ROLLING_BACK
        assert next_state(state, Event.ERROR) is State.ROLLING_BACK
    assert next_state(State.ROLLING_BACK, Event.LOOPING) is State.FAILED


def test_an_illegal_event_names_the_state() -> None:
    with pytest.raises(UpdateError, match="update state committed: event 'done' is not allowed"):
        next_state(State.COMMITTED, Event.DONE)
    with pytest.raises(UpdateError, match="update state idle: event 'error'"):
        next_state(State.IDLE, Event.ERROR)
