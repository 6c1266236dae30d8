"""The three state machines of a rollout, each one table you can read like a spreadsheet.

``TABLE[state][event] -> next state``. A move that is not in the table raises
:class:`IllegalTransitionError` naming the machine, the current state and the event. Terminal
states have no row (no exit); every other state has at least one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from fleet_server.errors import ConflictError


class IllegalTransitionError(ConflictError):
    """A state machine was asked for a move its table does not have (HTTP 409)."""


# -- rollout ---------------------------------------------------------------------------------


class RolloutStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


class RolloutEvent(StrEnum):
    APPROVE = "approve"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLL_BACK = "roll_back"
    COMPLETE = "complete"
    REVERTED = "reverted"


ROLLOUT_TABLE: dict[RolloutStatus, dict[RolloutEvent, RolloutStatus]] = {
    RolloutStatus.AWAITING_APPROVAL: {
        RolloutEvent.APPROVE: RolloutStatus.RUNNING,
        RolloutEvent.ABORT: RolloutStatus.ABORTED,
    },
    RolloutStatus.RUNNING: {
        RolloutEvent.PAUSE: RolloutStatus.PAUSED,
        RolloutEvent.ABORT: RolloutStatus.ABORTED,
        RolloutEvent.ROLL_BACK: RolloutStatus.ROLLING_BACK,
        RolloutEvent.COMPLETE: RolloutStatus.SUCCEEDED,
    },
    RolloutStatus.PAUSED: {
        RolloutEvent.RESUME: RolloutStatus.RUNNING,
        RolloutEvent.ABORT: RolloutStatus.ABORTED,
        RolloutEvent.ROLL_BACK: RolloutStatus.ROLLING_BACK,
    },
    RolloutStatus.ROLLING_BACK: {RolloutEvent.REVERTED: RolloutStatus.ROLLED_BACK},
    # A finished rollout can still be taken back (the cohort's latest one only: see
    # ``service.act``); its devices go back to the previous version.
    RolloutStatus.SUCCEEDED: {RolloutEvent.ROLL_BACK: RolloutStatus.ROLLING_BACK},
}

# -- wave ------------------------------------------------------------------------------------


class WaveStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # desired state sent, devices installing
    BAKING = "baking"  # every device settled (or timed out); watching the metrics
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gates not met, or an abort condition fired
    CANCELLED = "cancelled"  # the rollout was aborted or rolled back before it ran


class WaveEvent(StrEnum):
    START = "start"
    SETTLE = "settle"
    PASS = "pass"
    FAIL = "fail"
    CANCEL = "cancel"


WAVE_TABLE: dict[WaveStatus, dict[WaveEvent, WaveStatus]] = {
    WaveStatus.PENDING: {
        WaveEvent.START: WaveStatus.RUNNING,
        WaveEvent.CANCEL: WaveStatus.CANCELLED,
    },
    WaveStatus.RUNNING: {
        WaveEvent.SETTLE: WaveStatus.BAKING,
        WaveEvent.FAIL: WaveStatus.FAILED,
        WaveEvent.CANCEL: WaveStatus.CANCELLED,
    },
    WaveStatus.BAKING: {
        WaveEvent.PASS: WaveStatus.SUCCEEDED,
        WaveEvent.FAIL: WaveStatus.FAILED,
        WaveEvent.CANCEL: WaveStatus.CANCELLED,
    },
}

# -- device deployment -----------------------------------------------------------------------


class DeploymentStatus(StrEnum):
    NO_ARTIFACT = "no_artifact"  # no artifact for the device's profile: reported, not sent
    SENT = "sent"  # desired state published, waiting for the device
    SUCCEEDED = "succeeded"  # the device committed the new version
    FAILED = "failed"  # the device reported failed or rolled back by itself
    TIMED_OUT = "timed_out"  # no outcome within the wave timeout; converges when it returns
    ROLLING_BACK = "rolling_back"  # rollback desired state sent
    ROLLED_BACK = "rolled_back"  # the device runs the previous version again
    SUPERSEDED = "superseded"  # a later wave of the same rollout took the device over


class DeploymentEvent(StrEnum):
    COMMIT = "commit"
    FAIL = "fail"
    TIMEOUT = "timeout"
    ROLL_BACK = "roll_back"
    REVERTED = "reverted"
    SUPERSEDE = "supersede"


DEPLOYMENT_TABLE: dict[DeploymentStatus, dict[DeploymentEvent, DeploymentStatus]] = {
    DeploymentStatus.SENT: {
        DeploymentEvent.COMMIT: DeploymentStatus.SUCCEEDED,
        DeploymentEvent.FAIL: DeploymentStatus.FAILED,
        DeploymentEvent.TIMEOUT: DeploymentStatus.TIMED_OUT,
        DeploymentEvent.ROLL_BACK: DeploymentStatus.ROLLING_BACK,
    },
    DeploymentStatus.TIMED_OUT: {
        DeploymentEvent.COMMIT: DeploymentStatus.SUCCEEDED,
        DeploymentEvent.FAIL: DeploymentStatus.FAILED,
        DeploymentEvent.ROLL_BACK: DeploymentStatus.ROLLING_BACK,
        DeploymentEvent.SUPERSEDE: DeploymentStatus.SUPERSEDED,
    },
    DeploymentStatus.SUCCEEDED: {
        DeploymentEvent.ROLL_BACK: DeploymentStatus.ROLLING_BACK,
        DeploymentEvent.SUPERSEDE: DeploymentStatus.SUPERSEDED,
    },
    DeploymentStatus.FAILED: {
        DeploymentEvent.ROLL_BACK: DeploymentStatus.ROLLING_BACK,
        DeploymentEvent.SUPERSEDE: DeploymentStatus.SUPERSEDED,
    },
    DeploymentStatus.ROLLING_BACK: {
        DeploymentEvent.REVERTED: DeploymentStatus.ROLLED_BACK,
        DeploymentEvent.FAIL: DeploymentStatus.FAILED,
    },
}

# Deployments that count as "settled" for a wave: the device gave an outcome or timed out.
SETTLED = frozenset(
    {
        DeploymentStatus.NO_ARTIFACT,
        DeploymentStatus.SUCCEEDED,
        DeploymentStatus.FAILED,
        DeploymentStatus.TIMED_OUT,
    }
)

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


def advance(machine: str, table: dict[S, dict[E, S]], state: S, event: E) -> S:
    """The state after ``event``; raises IllegalTransitionError naming the current state."""
    row = table.get(state, {})
    if event not in row:
        allowed = ", ".join(sorted(str(e) for e in row)) or "none: it is final"
        raise IllegalTransitionError(
            f"{machine} is {state.value}: cannot {event.value} (allowed: {allowed})"
        )
    return row[event]


def can(table: dict[S, dict[E, S]], state: S, event: E) -> bool:
    return event in table.get(state, {})


def rollout_next(state: RolloutStatus, event: RolloutEvent) -> RolloutStatus:
    return advance("rollout", ROLLOUT_TABLE, state, event)


def wave_next(state: WaveStatus, event: WaveEvent) -> WaveStatus:
    return advance("wave", WAVE_TABLE, state, event)


def deployment_next(state: DeploymentStatus, event: DeploymentEvent) -> DeploymentStatus:
    return advance("deployment", DEPLOYMENT_TABLE, state, event)


ROLLOUT_TERMINAL = frozenset(s for s in RolloutStatus if s not in ROLLOUT_TABLE)
"""Aborted and rolled back: no way out. (Succeeded is final for the executor, which only
ticks :data:`ACTIVE_ROLLOUT`, but an operator may still roll it back.)"""
ACTIVE_ROLLOUT = frozenset(
    {
        RolloutStatus.AWAITING_APPROVAL,
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
        RolloutStatus.ROLLING_BACK,
    }
)
