"""glibc malloc settings for a long-running agent (no-ops where the C library is not glibc).

Every thread that allocates gets its own malloc arena by default (up to 8 per core), and
each arena keeps the memory its thread freed. The agent runs a dozen threads that allocate
little (HTTP handlers, outbox writer, delivery, telemetry, MQTT), so two arenas serve them
all; and the memory freed after a model load (the parsed model file, the bundle check) is
handed back to the system instead of staying resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(count: int = 2) -> bool:
    """Cap the number of malloc arenas (call before threads start); True when applied."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Return freed heap memory to the system (``malloc_trim(0)``); True when some was."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
