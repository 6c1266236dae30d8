"""Settings of one fleet server process: a plain pydantic model, filled by the CLI or a test."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DATA_DIR = Path("edgefleet-data")
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class FleetSettings(BaseModel):
    """Where the server keeps its data and how it is reached.

    ``database_url=None`` means the SQLite file ``data_dir/fleet.db``; ``mqtt_url=None`` means
    an embedded broker on ``127.0.0.1:mqtt_port`` (0 picks a free port); ``admin_token=None``
    means the token stored in ``data_dir/admin.token`` (generated on first start).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    mqtt_url: str | None = None
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    admin_token: str | None = Field(default=None, min_length=8)
    trusted_keys: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_upload_bytes: int = Field(default=DEFAULT_MAX_UPLOAD_BYTES, ge=1)
    executor_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between two ticks of the rollout executor."
    )
    executor_enabled: bool = True
    mqtt_shared: bool | None = Field(
        default=None,
        description="Shared subscriptions ($share/fleet/...): None = when the broker speaks "
        "MQTT 5 (probed at start), False = never.",
    )

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fleet.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def trusted_keys_dir(self) -> Path:
        return self.data_dir / "trusted_keys"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"
