"""The updater against a real loopback artifact server, with real bundles and onnxruntime."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.errors import RuntimeBackendError
from edge_agent.outbox import Outbox
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.telemetry import Metrics
from edge_agent.update import Deployment, State, StateStore
from edgefleet.bundle import SigningKey
from edgefleet.protocol.messages import DeploymentPhase as Phase
from edgefleet.protocol.messages import HealthPolicy
from tests.edge_agent.conftest import TOKEN, Rig
from tests.edge_agent.helpers import (
    build_bundle,
    desired_for,
    expected,
    wait_for,
)

pytestmark = pytest.mark.integration

PHASES = [
    Phase.DOWNLOADING,
    Phase.VERIFYING,
    Phase.STAGING,
    Phase.ACTIVATING,
    Phase.ACTIVE,
    Phase.VALIDATING,
    Phase.COMMITTED,
]


def _prediction(rig: Rig) -> tuple[str, np.ndarray]:
    model = rig.slot.current()
    assert model is not None
    x = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)
    (outputs,) = model.run_examples([x])
    return model.version, outputs[0]


def _install_v1(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.COMMITTED
    rig.reports.clear()


def test_good_bundle_goes_active_serves_and_survives_a_restart(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.COMMITTED
    assert rig.phases() == PHASES
    assert rig.reports[4].detail == "provider CPUExecutionProvider"
    assert all(r.deployment_id == "dep-1" and r.version == "1.0.0" for r in rig.reports)
    version, output = _prediction(rig)
    assert version == "1.0.0"
    np.testing.assert_allclose(output, expected(np.array([[0.5, -1, 2, 0]]), 1)[0], rtol=1e-5)
    assert rig.server.requests[-1] == ("/api/v1/artifacts/1", f"Bearer {TOKEN}")
    assert list((rig.data_dir / "downloads").iterdir()) == []

    state = json.loads((rig.data_dir / "state.json").read_text())
    assert state["active"]["version"] == "1.0.0"
    assert state["deployment"]["state"] == "committed"

    restarted, slot = rig.fresh_updater(backend)
    assert slot.current() is None
    restored = restarted.restore()
    assert restored is not None and slot.current() is restored
    assert (restored.version, restored.deployment_id) == ("1.0.0", "dep-1")

    # The retained desired state arriving again after the restart installs nothing; the
    # device only says again how that deployment ended (a restarted server may have missed it).
    rig.reports.clear()
    downloads = len(rig.server.requests)
    assert restarted.apply(desired_for(bundle, 1, "dep-1")) is Phase.COMMITTED
    assert len(rig.server.requests) == downloads
    assert [(r.deployment_id, r.phase, r.active_version) for r in rig.reports] == [
        ("dep-1", Phase.COMMITTED, "1.0.0")
    ]


def test_upgrade_swaps_the_model_and_keeps_one_previous(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.COMMITTED
    assert rig.phases() == PHASES
    assert _prediction(rig)[0] == "2.0.0"
    assert len(list((rig.data_dir / "models").iterdir())) == 2


def test_flipped_byte_in_model_fails_naming_it_and_keeps_serving(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(
        rig.workdir, rig.key, version="2.0.0", weights_version=2, flip_model_byte=True
    )
    rig.publish(2, bundle)
    desired = desired_for(bundle, 2, "dep-2")
    assert rig.updater.apply(desired) is Phase.FAILED
    assert rig.phases() == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.FAILED]
    assert rig.reports[-1].detail.startswith("model.onnx: sha256 mismatch")
    assert _prediction(rig)[0] == "1.0.0"

    # The same deployment again (retained desired on reconnect) is not retried: it is
    # answered with its failure again (the server may not have heard it).
    assert rig.updater.apply(desired) is Phase.FAILED
    assert rig.phases() == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.FAILED, Phase.FAILED]
    assert rig.reports[-1].detail == rig.reports[-2].detail
    state = json.loads((rig.data_dir / "state.json").read_text())
    assert state["failed"]["dep-2"]["state"] == "failed"
    assert state["failed"]["dep-2"]["detail"].startswith("model.onnx")
    assert state["active"]["version"] == "1.0.0"


def test_bundle_signed_by_an_untrusted_key_fails_naming_signature(
    rig: Rig, stranger_key: SigningKey
) -> None:
    bundle = build_bundle(rig.workdir, stranger_key, version="1.0.0")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-x")) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("signature.json: signed by key")
    assert "not trusted" in rig.reports[-1].detail
    assert rig.slot.current() is None


def test_bundle_for_another_profile_fails(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", profile="raspberry-pi/4b")
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.FAILED
    detail = rig.reports[-1].detail
    assert detail.startswith("manifest.json: built for profile raspberry-pi/4b")
    assert "x86-64/avx512-vnni" in detail
    assert _prediction(rig)[0] == "1.0.0"


def test_golden_mismatch_fails_at_staging(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(
        rig.workdir, rig.key, version="2.0.0", weights_version=2, golden_offset=0.5
    )
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.FAILED
    assert rig.phases() == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.STAGING, Phase.FAILED]
    assert rig.reports[-1].detail.startswith("golden.npz: sample 0 differs")
    assert _prediction(rig)[0] == "1.0.0"


def test_wrong_tar_hash_or_identity_fails(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    bad_hash = replace(desired_for(bundle, 1, "dep-a"), sha256="0" * 64)
    assert rig.updater.apply(bad_hash) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("bundle tar: sha256 mismatch")
    other_version = replace(desired_for(bundle, 1, "dep-b"), version="9.9.9")
    assert rig.updater.apply(other_version) is Phase.FAILED
    assert "bundle is tiny 1.0.0, desired is tiny 9.9.9" in rig.reports[-1].detail


def test_download_errors(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    missing = desired_for(bundle, 7, "dep-404")
    assert rig.updater.apply(missing) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("download: HTTP 404")
    assert "dep-404" in rig.updater.state.failed

    rig.publish(1, bundle)
    short = replace(desired_for(bundle, 1, "dep-size"), size=bundle.size - 10)
    assert rig.updater.apply(short) is Phase.FAILED
    assert "more than the announced" in rig.reports[-1].detail

    rig.server.status_override[1] = 503
    flaky = desired_for(bundle, 1, "dep-503")
    assert rig.updater.apply(flaky) is Phase.FAILED
    assert "HTTP 503" in rig.reports[-1].detail and "retrying in" in rig.reports[-1].detail
    assert "dep-503" not in rig.updater.state.failed


def test_transient_failure_is_retried_by_the_worker_with_backoff(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    rig.server.status_override[1] = 503
    rig.updater.start()
    try:
        rig.updater.submit(desired_for(bundle, 1, "dep-1"))
        wait_for(lambda: Phase.FAILED in rig.phases())
        del rig.server.status_override[1]
        wait_for(lambda: Phase.COMMITTED in rig.phases())
    finally:
        rig.updater.stop()
    assert rig.phases()[-len(PHASES) :] == PHASES


def test_same_artifact_under_a_new_deployment_is_adopted(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.COMMITTED
    rig.reports.clear()
    downloads = len(rig.server.requests)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-again")) is Phase.COMMITTED
    assert [(r.phase, r.detail) for r in rig.reports] == [
        (Phase.COMMITTED, "already serving this artifact")
    ]
    assert len(rig.server.requests) == downloads
    current = rig.slot.current()
    assert current is not None and current.deployment_id == "dep-again"


# -- the state machine: resume, anti-downgrade, crash loops, validation, hot swap ------------


def test_download_resumes_from_a_part_file_with_a_range_request(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    desired = desired_for(bundle, 1, "dep-1")
    downloads = rig.data_dir / "downloads"
    downloads.mkdir()
    stem = f"tiny-1.0.0-{bundle.sha256[:12]}"
    half = bundle.size // 2
    (downloads / f"{stem}.part").write_bytes(bundle.tar.read_bytes()[:half])
    assert rig.updater.apply(desired) is Phase.COMMITTED
    assert rig.server.ranges == [f"bytes={half}-"]
    assert _prediction(rig)[0] == "1.0.0"


def test_a_downgrade_is_refused_unless_the_deployment_is_an_explicit_rollback(rig: Rig) -> None:
    v2 = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, v2)
    assert rig.updater.apply(desired_for(v2, 2, "dep-2")) is Phase.COMMITTED
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, v1)
    rig.reports.clear()
    assert rig.updater.apply(desired_for(v1, 1, "dep-down")) is Phase.FAILED
    assert "version 1.0.0 is older than the active 2.0.0" in rig.reports[-1].detail
    assert rig.reports[-1].active_version == "2.0.0"
    assert _prediction(rig)[0] == "2.0.0"
    assert rig.updater.apply(desired_for(v1, 1, "dep-back", rollback=True)) is Phase.COMMITTED
    assert _prediction(rig)[0] == "1.0.0"


def test_a_crash_loop_in_one_state_gives_up_instead_of_looping(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, bundle)
    state = rig.updater.state
    state.deployment = Deployment(
        desired=desired_for(bundle, 2, "dep-2"),
        state=State.STAGING,
        entries={"downloading": 1, "verifying": 1, "staging": 3},
        previous=state.active,
    )
    StateStore(rig.data_dir).save(state)
    restarted, slot = rig.fresh_updater(backend)
    assert restarted.restore() is not None
    assert restarted.resume() is Phase.FAILED
    assert rig.reports[-1].phase is Phase.FAILED
    assert "entered staging 4 times (crash loop)" in rig.reports[-1].detail
    assert rig.reports[-1].active_version == "1.0.0"
    current = slot.current()
    assert current is not None and current.version == "1.0.0"


def test_a_restart_in_validating_rolls_back_to_the_previous_model(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.COMMITTED
    # Pretend the power went out while v2 was being validated.
    state = rig.updater.state
    assert state.deployment is not None
    state.deployment.state = State.VALIDATING
    StateStore(rig.data_dir).save(state)
    rig.reports.clear()
    restarted, slot = rig.fresh_updater(backend)
    assert restarted.restore() is not None
    assert restarted.resume() is Phase.ROLLED_BACK
    assert rig.phases() == [Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert rig.reports[0].detail == "agent restarted"
    assert (rig.reports[-1].active_model, rig.reports[-1].active_version) == ("tiny", "1.0.0")
    current = slot.current()
    assert current is not None and current.version == "1.0.0"
    saved = json.loads((rig.data_dir / "state.json").read_text())
    assert saved["active"]["version"] == "1.0.0"
    assert saved["failed"]["dep-2"] == {"state": "rolled_back", "detail": "agent restarted"}


def _validate_under_traffic(rig: Rig, trap: str, bad_input: list[float]) -> list[str]:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2, trap=trap)
    rig.publish(2, bundle)
    service = PredictionService(
        slot=rig.slot,
        outbox=Outbox(rig.data_dir / "outbox.sqlite"),
        metrics=Metrics(),
        monitor=rig.updater.health,
    )
    desired = desired_for(bundle, 2, "dep-2", health=HealthPolicy(window_s=20))
    result: list[Phase | None] = []
    worker = threading.Thread(target=lambda: result.append(rig.updater.apply(desired)))
    worker.start()
    failures: list[str] = []
    try:
        while worker.is_alive():
            try:
                service.predict({"input": bad_input})
            except RuntimeBackendError as exc:
                failures.append(str(exc))
            time.sleep(0.002)
    finally:
        worker.join(timeout=30)
        service.outbox.close()
    assert result == [Phase.ROLLED_BACK]
    assert rig.phases()[-3:] == [Phase.VALIDATING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert rig.reports[-1].active_version == "1.0.0"
    assert _prediction(rig)[0] == "1.0.0"
    assert "dep-2" in rig.updater.state.failed
    return failures


def test_a_model_that_returns_nan_is_rolled_back_by_itself(rig: Rig) -> None:
    _validate_under_traffic(rig, "nan", [-1.0, 0.5, 0.5, 0.5])
    assert "NaN outputs" in rig.reports[-2].detail
    assert rig.reports[-1].detail.startswith("validating:")


def test_a_model_that_fails_requests_is_rolled_back_by_itself(rig: Rig) -> None:
    failures = _validate_under_traffic(rig, "error", [5.0, 0.5, 0.5, 0.5])
    assert failures and "onnxruntime run failed" in failures[0]
    assert "error rate 100.0%" in rig.reports[-2].detail


def test_hot_swap_under_200_requests_per_second_fails_no_request(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, bundle)
    service = PredictionService(
        slot=rig.slot,
        outbox=Outbox(rig.data_dir / "outbox.sqlite"),
        metrics=Metrics(),
        monitor=rig.updater.health,
    )
    api = LocalApi(service, "127.0.0.1", 0)
    api.start()
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(*api.address, timeout=10)
        body = json.dumps({"input": [0.5, -1.0, 2.0, 0.0]})
        while not stop.is_set():
            began = time.monotonic()
            conn.request("POST", "/v1/predict", body=body)
            response = conn.getresponse()
            payload = json.loads(response.read())
            with lock:
                outcomes.append((response.status, payload.get("version", payload.get("error"))))
            stop.wait(max(0.0, 0.02 - (time.monotonic() - began)))  # 50/s per client
        conn.close()

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        desired = desired_for(bundle, 2, "dep-2", health=HealthPolicy(window_s=0.5))
        assert rig.updater.apply(desired) is Phase.COMMITTED
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=10)
        api.stop()
        service.close()
        service.outbox.close()
    statuses = {status for status, _ in outcomes}
    versions = [version for _, version in outcomes]
    assert statuses == {200}, [o for o in outcomes if o[0] != 200][:3]
    assert len(outcomes) >= 200, len(outcomes)
    assert {"1.0.0", "2.0.0"} <= set(versions)
    # Once v2 answers, v1 never answers again (one swap, no flapping).
    first_v2 = versions.index("2.0.0")
    assert "1.0.0" not in versions[first_v2 + 8 :]
