"""The update state machine as one table: state x event -> next state.

Read it like a spreadsheet (after Mender's ``state_machine.cpp``)::

    state          DONE          ERROR         RESTARTED      LOOPING
    -------------  ------------  ------------  -------------  ------------
    IDLE           DOWNLOADING   -             -              -
    DOWNLOADING    VERIFYING     FAILED        DOWNLOADING    FAILED
    VERIFYING      STAGING       FAILED        VERIFYING      FAILED
    STAGING        ACTIVATING    FAILED        STAGING        FAILED
    ACTIVATING     VALIDATING    ROLLING_BACK  ROLLING_BACK   ROLLING_BACK
    VALIDATING     COMMITTED     ROLLING_BACK  ROLLING_BACK   ROLLING_BACK
    ROLLING_BACK   ROLLED_BACK   FAILED        ROLLING_BACK   FAILED
    COMMITTED      (terminal)
    ROLLED_BACK    (terminal)
    FAILED         (terminal)

``RESTARTED`` is the event the agent raises for a state it finds persisted at start (it
crashed or lost power in that state): before the swap the step is simply run again (a
download resumes where it stopped); from the swap on, the new model is suspect and the device
rolls back. ``LOOPING`` fires when a state has been entered more than
:data:`MAX_ENTRIES` times in one deployment (a crash loop), and gives up safely.
"""

from __future__ import annotations

from enum import StrEnum

from edge_agent.errors import UpdateError
from edgefleet.protocol.messages import DeploymentPhase

MAX_ENTRIES = 3


class State(StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGING = "staging"
    ACTIVATING = "activating"
    VALIDATING = "validating"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def phase(self) -> DeploymentPhase:
        """The phase reported to the server when this state is entered."""
        return DeploymentPhase(self.value)


class Event(StrEnum):
    DONE = "done"
    ERROR = "error"
    RESTARTED = "restarted"
    LOOPING = "looping"


S, E = State, Event

TRANSITIONS: dict[State, dict[Event, State]] = {
    S.IDLE:         {E.DONE: S.DOWNLOADING},
    S.DOWNLOADING:  {E.DONE: S.VERIFYING,   E.ERROR: S.FAILED,       E.RESTARTED: S.DOWNLOADING,  E.LOOPING: S.FAILED},  # noqa: E501
    S.VERIFYING:    {E.DONE: S.STAGING,     E.ERROR: S.FAILED,       E.RESTARTED: S.VERIFYING,    E.LOOPING: S.FAILED},  # noqa: E501
    S.STAGING:      {E.DONE: S.ACTIVATING,  E.ERROR: S.FAILED,       E.RESTARTED: S.STAGING,      E.LOOPING: S.FAILED},  # noqa: E501
    S.ACTIVATING:   {E.DONE: S.VALIDATING,  E.ERROR: S.ROLLING_BACK, E.RESTARTED: S.ROLLING_BACK, E.LOOPING: S.ROLLING_BACK},  # noqa: E501
    S.VALIDATING:   {E.DONE: S.COMMITTED,   E.ERROR: S.ROLLING_BACK, E.RESTARTED: S.ROLLING_BACK, E.LOOPING: S.ROLLING_BACK},  # noqa: E501
    S.ROLLING_BACK: {E.DONE: S.ROLLED_BACK, E.ERROR: S.FAILED,       E.RESTARTED: S.ROLLING_BACK, E.LOOPING: S.FAILED},  # noqa: E501
    S.COMMITTED:    {},
    S.ROLLED_BACK:  {},
    S.FAILED:       {},
}  # fmt: skip

TERMINAL = frozenset(state for state, exits in TRANSITIONS.items() if not exits)
ROLLS_BACK_ON_RESTART = frozenset(
    state for state, exits in TRANSITIONS.items() if exits.get(Event.RESTARTED) is S.ROLLING_BACK
)


class IllegalTransitionError(UpdateError):
    """An event that the table does not allow in the current state."""


def next_state(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; raises naming both when the table has none."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        allowed = ", ".join(TRANSITIONS[state]) or "none (terminal)"
        raise IllegalTransitionError(
            f"update state {state.value}: event {event.value!r} is not allowed (allowed: {allowed})"
        ) from None
