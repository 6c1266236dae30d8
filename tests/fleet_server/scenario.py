"""A fleet of simulated devices (real paho clients) against a real fleet server, for the
rollout scenario tests: set-up, waiting, and what each device was told."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_server.simulator import Behaviour, Scheduler, SimDevice
from tests.fleet_server.bundles import PROFILE, make_bundle
from tests.fleet_server.conftest import Fleet

MODEL = "sim"


def bundles(out_dir: Path, key: Path, versions: tuple[str, ...]) -> list[Path]:
    return [make_bundle(out_dir, key, name=MODEL, version=v) for v in versions]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class SimFleet:
    fleet: Fleet
    site: str
    scheduler: Scheduler
    devices: dict[str, SimDevice] = field(default_factory=dict)

    @property
    def cohort(self) -> str:
        return self.site

    def add(self, behaviour: Behaviour, *, start: bool = True, **labels: str) -> SimDevice:
        device_id = f"{self.site}-{len(self.devices):03d}"
        self.fleet.register(device_id, site=self.site, **labels)
        device = SimDevice(
            device_id, url=self.fleet.mqtt_url, scheduler=self.scheduler, behaviour=behaviour
        )
        self.devices[device_id] = device
        if start:
            device.start()
        return device

    def install_everywhere(self, version: str) -> None:
        for device_id in self.devices:
            response = self.fleet.http.put(
                f"/devices/{device_id}/desired",
                json={"model": MODEL, "version": version},
                headers=self.fleet.auth,
            )
            assert response.status_code == 200, response.text
        self.wait_running(version, list(self.devices))

    def wait_running(self, version: str, device_ids: list[str], timeout: float = 15.0) -> None:
        def done() -> bool:
            views = self.fleet.http.get("/devices", headers=self.fleet.auth).json()
            running = {v["device_id"]: v["reported_version"] for v in views}
            return all(running.get(d) == version for d in device_ids)

        wait_for(done, f"{device_ids} to run {version}", timeout)

    def create_cohort(self) -> None:
        response = self.fleet.http.post(
            "/cohorts",
            json={"name": self.cohort, "selector": {"site": self.site}},
            headers=self.fleet.auth,
        )
        assert response.status_code == 201, response.text

    def start_rollout(self, version: str, strategy: dict[str, Any], **extra: Any) -> int:
        response = self.fleet.http.post(
            "/rollouts",
            json={
                "cohort": self.cohort,
                "model": MODEL,
                "version": version,
                "strategy": strategy,
                **extra,
            },
            headers=self.fleet.auth,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        response = self.fleet.http.get(
            f"/rollouts/{rollout_id}", params={"devices": True}, headers=self.fleet.auth
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_rollout(self, rollout_id: int, status: str, timeout: float = 20.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            view = self.rollout(rollout_id)
            return view if view["status"] == status else None

        try:
            return dict(wait_for(reached, f"rollout {rollout_id} to be {status}", timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last view: {self.rollout(rollout_id)}") from None

    def told(self, device_id: str) -> list[tuple[str, bool, str | None]]:
        """(version, rollback, shadow version) of every distinct desired state the device got."""
        seen: dict[str, tuple[str, bool, str | None]] = {}
        for item in self.devices[device_id].received:
            seen.setdefault(item.deployment_id, (item.version, item.rollback, item.shadow_version))
        return list(seen.values())

    def close(self) -> None:
        for device in self.devices.values():
            device.stop(graceful=False)
        self.scheduler.stop()


@contextmanager
def sim_fleet(fleet: Fleet) -> Iterator[SimFleet]:
    sims = SimFleet(fleet, f"s{uuid.uuid4().hex[:8]}", Scheduler())
    try:
        yield sims
    finally:
        sims.close()


__all__ = ["MODEL", "PROFILE", "SimFleet", "bundles", "sim_fleet", "wait_for"]
