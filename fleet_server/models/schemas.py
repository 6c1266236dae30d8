"""HTTP shapes of the model registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
    lineage: dict[str, Any] = Field(
        default_factory=dict, description="Source model and data set hashes, passes (manifest)."
    )

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
            lineage=dict(row.manifest.get("lineage") or {}),
        )


class VersionView(BaseModel):
    version: str
    artifacts: list[ArtifactOut]


class ModelView(BaseModel):
    model: str
    versions: list[VersionView] = Field(description="Newest first (semantic version order).")
    aliases: dict[str, str]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
