from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.runtime.ort import OnnxRuntimeBackend
from edgefleet.bundle import SigningKey, VerifyKey, generate_key_pair, load_signing_key
from hardware_profiles import HardwareProfile, load_profile
from tests.edge_agent.helpers import PROFILE


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
