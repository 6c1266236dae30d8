"""Session-wide real services: a Mosquitto broker on a free port and PostgreSQL.

Integration tests use the real thing. A missing ``mosquitto`` binary or an unreachable
PostgreSQL fails the test that needs it with a message saying how to get it; it never
silently passes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.services import Mosquitto, postgres_url, start_mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_base_url() -> str:
    return postgres_url(
        os.environ.get(
            "EDGEFLEET_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    )
