"""Pass results cached by content digest, so a re-run with the same inputs is near-instant.

The key of a pass run is the sha256 of: the input artifact's digest, the pass name, the config
digest and, for passes that calibrate, the calibration data digest. An entry is a directory
``<root>/<key[:2]>/<key>/`` holding the output file and ``meta.json`` (the effective config and
the output digest); it is written into a temporary directory and renamed, so a crash never
leaves half an entry. The root is ``--cache-dir``, else ``$EDGEFLEET_CACHE_DIR``, else
``~/.cache/edgefleet/compiler``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.bundle import sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEFLEET_CACHE_DIR"
_META = "meta.json"


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "edgefleet" / "compiler"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    digest: str
    config: dict[str, Any]


class PassCache:
    """A directory of pass outputs; ``PassCache(None)`` caches nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def get(self, key: str) -> CacheEntry | None:
        if self.root is None:
            return None
        entry = self.root / key[:2] / key
        try:
            meta = json.loads((entry / _META).read_text(encoding="utf-8"))
            path = entry / str(meta["file"])
            if not path.is_file():
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self.hits += 1
        return CacheEntry(path=path, digest=str(meta["digest"]), config=dict(meta["config"]))

    def put(self, key: str, produced: Path, config: dict[str, Any]) -> CacheEntry:
        """Store ``produced`` (moved into the cache) and return the entry."""
        self.misses += 1
        digest = sha256_file(produced)
        if self.root is None:
            return CacheEntry(path=produced, digest=digest, config=config)
        final = self.root / key[:2] / key
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        shutil.copyfile(produced, staging / produced.name)
        meta = {"file": produced.name, "digest": digest, "config": config}
        (staging / _META).write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        try:
            staging.replace(final)
        except OSError:  # another run stored the same key meanwhile: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        if not (final / produced.name).is_file():
            log.warning("cache entry %s could not be written; using the work copy", final)
            return CacheEntry(path=produced, digest=digest, config=config)
        return CacheEntry(path=final / produced.name, digest=digest, config=config)
