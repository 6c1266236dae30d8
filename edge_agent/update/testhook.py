"""A pause point for fault tests, and nothing else.

When the environment variable ``EDGEFLEET_AGENT_TEST_PAUSE_IN`` is ``STATE`` or
``STATE@VERSION`` (e.g. ``validating@2.0.0``), the updater stops in that state, writes
``data_dir/paused-in-STATE`` and waits until the agent stops or the test deletes that file
(then it goes on). A non-terminal state pauses right after it has been persisted and
reported; a terminal one (``failed``, ``rolled_back``, ``committed``) after it has been
persisted and *before* it is reported: the window in which a crash used to lose the outcome.
A test kills the process (SIGKILL) there, or cuts the network and lets it go on, and checks
what comes of it. Unset (always, outside tests) it costs one dictionary lookup per state.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PAUSE_ENV = "EDGEFLEET_AGENT_TEST_PAUSE_IN"
POLL_S = 0.05


def pause_point(state: str, version: str, data_dir: Path, stop: threading.Event) -> None:
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    name, _, only_version = wanted.partition("@")
    if name != state or (only_version and only_version != version):
        return
    marker = data_dir / f"paused-in-{state}"
    marker.write_text(f"{os.getpid()} {version}\n")
    while marker.exists() and not stop.wait(POLL_S):
        pass
