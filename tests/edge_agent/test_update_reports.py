"""A deployment's failure is reported again until it is known to have arrived.

The updater against a real artifact server and onnxruntime; :class:`OutcomeReports` through a
real :class:`MqttLink` and a Mosquitto of the test's own (a test-side subscriber plays the
server, and is absent when the server is down).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.mqtt import MqttLink
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.update import State, StateStore, Updater
from edge_agent.update.reports import ACKED_FILE, OutcomeReports, failure_for
from edge_agent.update.store import Outcome
from edgefleet.protocol.messages import DeploymentPhase as Phase
from edgefleet.protocol.messages import DesiredState, DeviceState, Report, Status
from edgefleet.protocol.topics import Channel
from tests.edge_agent.conftest import Rig
from tests.edge_agent.helpers import (
    BuiltBundle,
    FleetSide,
    build_bundle,
    desired_for,
    wait_for,
)
from tests.support.services import Mosquitto, own_mosquitto

pytestmark = pytest.mark.integration

DEVICE = "dev-reports"


def _install_v1_then_fail_v2(rig: Rig, updater: Updater) -> DesiredState:
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, v1)
    assert updater.apply(desired_for(v1, 1, "dep-1")) is Phase.COMMITTED
    v2 = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2, golden_offset=0.5)
    rig.publish(2, v2)
    desired = desired_for(v2, 2, "dep-2")
    assert updater.apply(desired) is Phase.FAILED
    return desired


def test_a_failed_deployment_is_answered_with_its_failure_again(rig: Rig) -> None:
    desired = _install_v1_then_fail_v2(rig, rig.updater)
    failed = rig.reports[-1]
    saved = json.loads((rig.data_dir / "state.json").read_text())
    # The terminal state and the memory of the failure are one write.
    assert saved["deployment"]["state"] == "failed" and "dep-2" in saved["failed"]
    rig.reports.clear()
    downloads = len(rig.server.requests)
    assert rig.updater.apply(desired) is Phase.FAILED
    [again] = rig.reports
    assert (again.deployment_id, again.phase, again.detail) == (
        "dep-2",
        Phase.FAILED,
        failed.detail,
    )
    assert again.detail.startswith("golden.npz")
    assert (again.active_model, again.active_version) == ("tiny", "1.0.0")
    assert len(rig.server.requests) == downloads  # not tried again


def _roll_back_dep_2_after_a_power_cut(
    rig: Rig, backend: OnnxRuntimeBackend, v1: BuiltBundle, v2: BuiltBundle
) -> Updater:
    """dep-1 installs v1, dep-2 v2; the power goes out while dep-2 validates, and the
    restarted updater rolls it back. Returns that restarted updater."""
    rig.publish(1, v1)
    rig.publish(2, v2)
    assert rig.updater.apply(desired_for(v1, 1, "dep-1")) is Phase.COMMITTED
    assert rig.updater.apply(desired_for(v2, 2, "dep-2")) is Phase.COMMITTED
    state = rig.updater.state
    assert state.deployment is not None
    state.deployment.state = State.VALIDATING  # the power went out while validating
    StateStore(rig.data_dir).save(state)
    restarted, _ = rig.fresh_updater(backend)
    restarted.restore()
    assert restarted.resume() is Phase.ROLLED_BACK
    return restarted


def test_a_rollback_found_after_a_restart_is_answered_as_rolled_back(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    v2 = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    _roll_back_dep_2_after_a_power_cut(rig, backend, v1, v2)
    rig.reports.clear()
    # Another restart: the outcome is read back from state.json and answered again.
    again, _ = rig.fresh_updater(backend)
    again.restore()
    assert again.resume() is None
    failure = again.last_failure()
    assert failure is not None and failure.phase is Phase.ROLLED_BACK
    assert again.apply(desired_for(v2, 2, "dep-2")) is Phase.FAILED
    [report] = rig.reports
    assert (report.phase, report.detail, report.active_version) == (
        Phase.ROLLED_BACK,
        "agent restarted",
        "1.0.0",
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with own_mosquitto(tmp_path) as broker:
        yield broker


class Wired:
    """An updater whose reports go through OutcomeReports and a real MqttLink, wired as the
    agent wires them (the link comes later, as after a start while the server is down)."""

    def __init__(self, rig: Rig, backend: OnnxRuntimeBackend, url: str) -> None:
        self.link: MqttLink | None = None
        self.sent: list[int] = []
        self.updater = Updater(
            config=rig.updater.config,
            backend=backend,
            slot=ModelSlot(),
            store=StateStore(rig.data_dir),
            report=lambda report: self.reports.publish(report),
        )
        self.reports = OutcomeReports(
            rig.data_dir, failure=self.updater.last_failure, send=self._send
        )
        self._url = url

    def _send(self, report: Report) -> int | None:
        if self.link is None:
            return None
        mid = self.link.send(Channel.REPORT, report)
        self.sent.append(mid)
        return mid

    def connect(self) -> MqttLink:
        link = MqttLink(
            self._url,
            DEVICE,
            status=lambda: Status(state=DeviceState.ONLINE, profile="p"),
            on_desired=lambda desired: None,
            on_ack=lambda ack: None,
            on_connected=self.reports.connected,
            on_published=self.reports.acknowledged,
        )
        self.link = link
        link.start()
        assert link.wait_connected(10)
        return link


def _failures(fleet: FleetSide) -> list[Report]:
    return [r for r in fleet.of("report") if r.phase is Phase.FAILED]


def test_a_failure_reported_without_a_link_is_published_on_connect_until_acknowledged(
    rig: Rig, backend: OnnxRuntimeBackend, broker: Mosquitto
) -> None:
    wired = Wired(rig, backend, broker.url)
    _install_v1_then_fail_v2(rig, wired.updater)  # no link yet: the failure went nowhere
    assert wired.reports.pending is not None
    assert not (rig.data_dir / ACKED_FILE).exists()

    # Connected, but nobody subscribed (the server is down): the broker says so (MQTT 5
    # reason 0x10), and the failure stays pending.
    link = wired.connect()
    try:
        wait_for(lambda: wired.sent, 10, "the failure published on connect")
        time.sleep(0.5)  # the broker's PUBACK (0x10) comes within milliseconds
        assert wired.reports.pending is not None
        assert not (rig.data_dir / ACKED_FILE).exists()
    finally:
        link.stop()

    with FleetSide(broker.url, DEVICE, auto_ack=False) as fleet:
        link = wired.connect()  # a reconnect: published again, now acknowledged
        try:
            wait_for(lambda: _failures(fleet), 10, "the failure at the fleet side")
            wait_for(lambda: wired.reports.pending is None, 10, "the broker's PUBACK")
        finally:
            link.stop()
        [report] = _failures(fleet)
        assert (report.deployment_id, report.detail[:10]) == ("dep-2", "golden.npz")
        assert (rig.data_dir / ACKED_FILE).read_text().strip() == "dep-2 failed"

        # After a restart the acknowledged failure is not published again on connect.
        restarted = Wired(rig, backend, broker.url)
        restarted.updater.restore()
        assert restarted.updater.last_failure() is not None
        assert restarted.reports.pending is None
        statuses = len(fleet.of("status"))
        link = restarted.connect()
        try:
            wait_for(lambda: len(fleet.of("status")) > statuses, 10, "the restarted link")
            time.sleep(0.5)
        finally:
            link.stop()
        assert restarted.sent == []
        assert len(_failures(fleet)) == 1


def test_an_older_rolled_back_deployment_is_answered_as_rolled_back_after_a_restart(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    """dep-2 rolled back, dep-3 came after it: asked for dep-2 again after a restart, the agent
    answers with the report dep-2 ended with (rolled back, same detail), not a failure."""
    bundles = [
        build_bundle(rig.workdir, rig.key, version=f"{n}.0.0", weights_version=n) for n in (1, 2, 3)
    ]
    rig.publish(3, bundles[2])
    restarted = _roll_back_dep_2_after_a_power_cut(rig, backend, bundles[0], bundles[1])
    rolled_back = rig.reports[-1]
    assert restarted.apply(desired_for(bundles[2], 3, "dep-3")) is Phase.COMMITTED

    again, _ = rig.fresh_updater(backend)
    again.restore()
    assert again.last_failure() is None  # dep-3, the last deployment, committed
    rig.reports.clear()
    again.apply(desired_for(bundles[1], 2, "dep-2"))
    [report] = rig.reports
    assert (report.deployment_id, report.phase, report.detail) == (
        "dep-2",
        Phase.ROLLED_BACK,
        "agent restarted",
    )
    assert (report.phase, report.detail) == (rolled_back.phase, rolled_back.detail)
    assert report.active_version == "3.0.0"


def _desired(deployment_id: str) -> DesiredState:
    return DesiredState(
        deployment_id=deployment_id,
        model="tiny",
        version="2.0.0",
        artifact_url="/api/v1/artifacts/2",
        sha256="0" * 64,
        size=1,
    )


def test_a_store_written_before_outcomes_were_kept_is_read_with_them(tmp_path: Path) -> None:
    """An older agent's state.json maps a deployment to its detail alone ("rolled back: ..."
    for a rollback): read after an upgrade, each keeps how it ended."""
    (tmp_path / "state.json").write_text(
        json.dumps(
            {
                "active": None,
                "deployment": None,
                "failed": {
                    "dep-1": "model.onnx: sha256 mismatch",
                    "dep-2": "rolled back: agent restarted",
                    "dep-3": {"state": "rolled_back", "detail": "golden.npz: mismatch"},
                },
            }
        )
    )
    state = StateStore(tmp_path).load()
    assert state.failed == {
        "dep-1": Outcome(state=State.FAILED, detail="model.onnx: sha256 mismatch"),
        "dep-2": Outcome(state=State.ROLLED_BACK, detail="agent restarted"),
        "dep-3": Outcome(state=State.ROLLED_BACK, detail="golden.npz: mismatch"),
    }
    answers = {d: failure_for(state, _desired(d), None) for d in ("dep-1", "dep-2", "dep-4")}
    assert {d: (r.phase, r.detail) if r else None for d, r in answers.items()} == {
        "dep-1": (Phase.FAILED, "model.onnx: sha256 mismatch"),
        "dep-2": (Phase.ROLLED_BACK, "agent restarted"),
        "dep-4": None,
    }
    StateStore(tmp_path).save(state)  # written back in the new form, read back the same
    assert StateStore(tmp_path).load() == state


FAILED_REPORT = Report(
    deployment_id="dep-2", model="tiny", version="2.0.0", phase=Phase.FAILED, detail="golden"
)


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00\x81", b"\x00" * 13, b"dep-2 fa", b"dep-2"],
    ids=["empty", "not-utf8", "zeros", "torn", "no-phase"],
)
def test_a_torn_acked_file_reads_as_nothing_acknowledged(tmp_path: Path, content: bytes) -> None:
    """What a power cut can leave of ``outcome-acked``: the failure is pending again."""
    (tmp_path / ACKED_FILE).write_bytes(content)
    reports = OutcomeReports(tmp_path, failure=lambda: FAILED_REPORT, send=lambda report: None)
    assert reports.pending == FAILED_REPORT


def test_a_whole_acked_file_is_read_as_acknowledged(tmp_path: Path) -> None:
    (tmp_path / ACKED_FILE).write_bytes(b"dep-2 failed\n")
    reports = OutcomeReports(tmp_path, failure=lambda: FAILED_REPORT, send=lambda report: None)
    assert reports.pending is None


ACKNOWLEDGE = """
import sys
from pathlib import Path
from edge_agent.update.reports import OutcomeReports
from edgefleet.protocol.messages import DeploymentPhase, Report

report = Report(deployment_id="dep-2", model="m", version="2", phase=DeploymentPhase.FAILED)
reports = OutcomeReports(Path(sys.argv[1]), failure=lambda: report, send=lambda r: 7)
reports.publish(report)
reports.acknowledged(7)
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_the_acknowledgement_is_written_durably(tmp_path: Path) -> None:
    """A real agent process, traced: the file is fsynced before it is renamed into place,
    and the directory after, so a power cut leaves the old file or the whole new one."""
    data_dir, trace = tmp_path / "agent", tmp_path / "trace.txt"
    data_dir.mkdir()
    command = ["strace", "-f", "-y", "-e", "trace=fsync,rename,renameat,renameat2", "-o"]
    done = subprocess.run(
        [*command, str(trace), sys.executable, "-c", ACKNOWLEDGE, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert (data_dir / ACKED_FILE).read_text() == "dep-2 failed\n"
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if " " in line]
    steps = [step for call in calls if (step := _durable_step(call, data_dir / ACKED_FILE))]
    assert steps == ["fsync file", "rename", "fsync directory"]


def _durable_step(call: str, path: Path) -> str | None:
    """What a traced system call does to ``path`` (``strace -y`` names each descriptor)."""
    if call.startswith("fsync(") and f"<{path}.tmp>" in call:
        return "fsync file"
    if call.startswith("rename") and f'"{path}.tmp", ' in call and f'"{path}"' in call:
        return "rename"
    if call.startswith("fsync(") and f"<{path.parent}>" in call:
        return "fsync directory"
    return None
