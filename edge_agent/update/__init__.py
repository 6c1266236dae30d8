"""Updates: the desired-state reconciler and the update state machine (one transition table).

See :mod:`edge_agent.update.states` for the table and :mod:`edge_agent.update.machine` for the
function that runs in each state.
"""

from edge_agent.update.golden import run_golden
from edge_agent.update.machine import Updater, UpdaterConfig
from edge_agent.update.states import TRANSITIONS, Event, State, next_state
from edge_agent.update.store import ActiveModel, AgentState, Deployment, StateStore

__all__ = [
    "TRANSITIONS",
    "ActiveModel",
    "AgentState",
    "Deployment",
    "Event",
    "State",
    "StateStore",
    "Updater",
    "UpdaterConfig",
    "next_state",
    "run_golden",
]
