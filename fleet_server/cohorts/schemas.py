"""HTTP shapes of cohorts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fleet_server.cohorts.tables import CohortRow


class CohortCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    selector: dict[str, str] = Field(
        description="Equality selector: a device belongs when every label matches."
    )


class CohortView(BaseModel):
    name: str
    selector: dict[str, str]
    current_model: str | None
    current_version: str | None
    devices: list[str]

    @classmethod
    def of(cls, row: CohortRow, devices: list[str]) -> CohortView:
        return cls(
            name=row.name,
            selector={str(k): str(v) for k, v in row.selector.items()},
            current_model=row.current_model,
            current_version=row.current_version,
            devices=devices,
        )
