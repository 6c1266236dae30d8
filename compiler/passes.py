"""The base of every compiler pass config, and the lineage record each pass leaves.

A pass takes a typed, frozen pydantic config (``extra="forbid"``, so a misspelt option is an
error, not a silent default). Its digest, the sha256 of the canonical JSON of the config, goes
into the bundle's lineage with the config itself, so an artifact says exactly how it was made.

Writing a pass config::

    from compiler.passes import PassConfig, record

    class PruneConfig(PassConfig):
        ratio: float = 0.5

    config = PruneConfig(ratio=0.3)
    lineage_entry = record("prune", config)  # PassRecord(name, config_digest, config)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgefleet.bundle import PassRecord


class PassConfig(BaseModel):
    """Typed, static, frozen configuration of one pass."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def canonical_json(self) -> bytes:
        data: dict[str, Any] = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace) of this config."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


def record(name: str, config: PassConfig) -> PassRecord:
    """The lineage entry for a pass that ran with ``config``."""
    config_json = config.model_dump(mode="json")
    return PassRecord(name=name, config_digest=config.digest(), config=config_json)
