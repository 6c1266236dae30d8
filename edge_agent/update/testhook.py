"""A pause point for fault tests, and nothing else.

When the environment variable ``EDGEFLEET_AGENT_TEST_PAUSE_IN`` is ``STATE`` or
``STATE@VERSION`` (e.g. ``validating@2.0.0``), the updater stops right after it has persisted
and reported that state, writes ``data_dir/paused-in-STATE`` and waits until the agent stops.
A test then kills the process (SIGKILL) there and checks what a restart makes of it. Unset
(always, outside tests) it costs one dictionary lookup per state.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PAUSE_ENV = "EDGEFLEET_AGENT_TEST_PAUSE_IN"


def pause_point(state: str, version: str, data_dir: Path, stop: threading.Event) -> None:
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    name, _, only_version = wanted.partition("@")
    if name != state or (only_version and only_version != version):
        return
    marker = data_dir / f"paused-in-{state}"
    marker.write_text(f"{os.getpid()} {version}\n")
    stop.wait()
