"""HTTP shapes of ingested data."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fleet_server.ingest.tables import PredictionRow


class PredictionOut(BaseModel):
    device_id: str
    seq: int
    record_id: str
    model: str
    model_version: str
    artifact_sha256: str
    input_digest: str
    input: Any | None
    output: Any
    latency_ms: float
    ts: float
    received_at: float

    @classmethod
    def of(cls, row: PredictionRow) -> PredictionOut:
        return cls(
            device_id=row.device_id,
            seq=row.seq,
            record_id=row.record_id,
            model=row.model,
            model_version=row.model_version,
            artifact_sha256=row.artifact_sha256,
            input_digest=row.input_digest,
            input=row.input,
            output=row.output,
            latency_ms=row.latency_ms,
            ts=row.ts,
            received_at=row.received_at,
        )
