"""HTTP shapes of the model registry."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fleet_server.models.tables import ArtifactRow


class ArtifactOut(BaseModel):
    artifact_id: int
    model: str
    version: str
    profile: str
    precision: str
    format: str
    sha256: str = Field(description="sha256 of the bundle tar")
    size: int = Field(description="Size of the bundle tar in bytes")

    @classmethod
    def of(cls, row: ArtifactRow) -> ArtifactOut:
        return cls(
            artifact_id=row.id,
            model=row.name,
            version=row.version,
            profile=row.profile,
            precision=row.precision,
            format=row.format,
            sha256=row.sha256,
            size=row.size,
        )
