from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.update import StateStore, Updater, UpdaterConfig
from edgefleet.bundle import SigningKey, VerifyKey, generate_key_pair, load_signing_key
from edgefleet.protocol.messages import DeploymentPhase, Report
from hardware_profiles import HardwareProfile, load_profile
from tests.edge_agent.helpers import PROFILE, ArtifactServer, BuiltBundle, serve_artifacts

TOKEN = "device-token"


@pytest.fixture(scope="session")
def profile() -> HardwareProfile:
    return load_profile(PROFILE)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_key_pair(directory, "trusted")
    generate_key_pair(directory, "stranger")
    return directory


@pytest.fixture(scope="session")
def signing_key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir / "trusted.key")


@pytest.fixture(scope="session")
def stranger_key(key_dir: Path) -> SigningKey:
    return load_signing_key(key_dir / "stranger.key")


@pytest.fixture(scope="session")
def verify_key(signing_key: SigningKey) -> VerifyKey:
    return signing_key.public


@pytest.fixture
def backend(profile: HardwareProfile) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(profile)


@dataclass
class Rig:
    server: ArtifactServer
    updater: Updater
    slot: ModelSlot
    reports: list[Report]
    data_dir: Path
    workdir: Path
    key: SigningKey

    def publish(self, artifact_id: int, bundle: BuiltBundle) -> None:
        self.server.add(artifact_id, bundle)

    def phases(self) -> list[DeploymentPhase]:
        return [report.phase for report in self.reports]

    def fresh_updater(self, backend: OnnxRuntimeBackend) -> tuple[Updater, ModelSlot]:
        slot = ModelSlot()
        updater = Updater(
            config=self.updater.config,
            backend=backend,
            slot=slot,
            store=StateStore(self.data_dir),
            report=self.reports.append,
        )
        return updater, slot


@pytest.fixture
def rig(
    tmp_path: Path,
    profile: HardwareProfile,
    backend: OnnxRuntimeBackend,
    signing_key: SigningKey,
    verify_key: VerifyKey,
) -> Iterator[Rig]:
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    with serve_artifacts(ArtifactServer(token=TOKEN)) as server:
        slot = ModelSlot()
        reports: list[Report] = []
        updater = Updater(
            config=UpdaterConfig(
                server_url=server.url,
                token=TOKEN,
                profile=profile,
                data_dir=data_dir,
                trusted_keys=(verify_key,),
                retry_initial=0.2,
            ),
            backend=backend,
            slot=slot,
            store=StateStore(data_dir),
            report=reports.append,
        )
        yield Rig(server, updater, slot, reports, data_dir, tmp_path / "build", signing_key)
