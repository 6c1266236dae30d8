"""The desired-state reconciler: bring the served model to what the fleet server wants.

Compare the desired state with the model being served; when they differ, run the steps and
report each phase::

    phase        step                                                 on failure
    -----------  ---------------------------------------------------  ----------------------
    DOWNLOADING  GET artifact_url with the device token, streamed to   FAILED; transient errors
                 data_dir/downloads/, at most desired.size bytes       are retried with back-off
    VERIFYING    unpack, signature + every file's sha256 (names the    FAILED, never retried for
                 corrupt file), tar sha256, profile, name and version  this deployment_id
    STAGING      load in the backend, golden samples within tolerance  FAILED, never retried
    ACTIVE       atomic swap under the slot's lock; persist; report    -

Each phase is persisted in ``state.json`` before it runs. On any failure the current model
keeps serving. A deployment that failed for good is remembered by ``deployment_id``, so the
retained desired state arriving again on every reconnect does not loop.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import UpdateError
from edge_agent.runtime.base import Array, Backend
from edge_agent.serving import ModelSlot, ServedModel, check_servable
from edge_agent.state import ActiveModel, Deployment, StateStore
from edgefleet.bundle import (
    GOLDEN_INPUTS,
    GOLDEN_OUTPUTS,
    MANIFEST_FILE,
    VerifiedBundle,
    VerifyKey,
    sha256_file,
    unpack_bundle,
    verify_bundle,
)
from edgefleet.errors import EdgefleetError
from edgefleet.protocol.messages import DeploymentPhase, DesiredState, Report
from hardware_profiles.schema import HardwareProfile

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class UpdaterConfig:
    server_url: str
    token: str
    profile: HardwareProfile
    data_dir: Path
    trusted_keys: tuple[VerifyKey, ...]
    download_timeout: float = 30.0
    retry_initial: float = 2.0
    retry_max: float = 600.0


class _StoppedError(Exception):
    """The agent is stopping; abandon the deployment without reporting it as failed."""


@dataclass
class _Work:
    desired: DesiredState
    tar_path: Path
    bundle_dir: Path
    verified: VerifiedBundle | None = None
    served: ServedModel | None = None


def _noop(model: ServedModel) -> None:
    return None


class Updater:
    """Runs deployments on its own thread; :meth:`apply` is the synchronous core."""

    def __init__(
        self,
        *,
        config: UpdaterConfig,
        backend: Backend,
        slot: ModelSlot,
        store: StateStore,
        report: Callable[[Report], None],
        on_activated: Callable[[ServedModel], None] = _noop,
    ) -> None:
        self.config = config
        self._backend = backend
        self._slot = slot
        self._store = store
        self._report = report
        self._on_activated = on_activated
        self.state = store.load()
        self._downloads = config.data_dir / "downloads"
        self._models = config.data_dir / "models"
        self._lock = threading.Lock()
        self._desired: DesiredState | None = None
        self._retry_at: dict[str, float] = {}
        self._retry_delay: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgefleet-update", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def restore(self) -> ServedModel | None:
        """Serve the model that was active before the restart (re-verified, no golden run)."""
        active = self.state.active
        if active is None:
            return None
        path = Path(active.path)
        try:
            verified = verify_bundle(path, self.config.trusted_keys)
            self._check_identity(verified, active.model, active.version)
            served = self._load(verified, active.sha256, active.deployment_id)
        except (EdgefleetError, OSError) as exc:
            log.error("cannot restore %s %s from %s: %s", active.model, active.version, path, exc)
            return None
        self._slot.swap(served)
        log.info(
            "serving %s %s (restored, provider %s)", served.name, served.version, served.provider
        )
        return served

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def submit(self, desired: DesiredState) -> None:
        """Hand over the latest desired state (from the MQTT thread); the newest one wins."""
        with self._lock:
            self._desired = desired
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._seconds_to_retry())
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                desired = self._desired
            if desired is None:
                continue
            retry_at = self._retry_at.get(desired.deployment_id)
            if retry_at is not None and time.monotonic() < retry_at:
                continue
            self.apply(desired)

    def _seconds_to_retry(self) -> float | None:
        with self._lock:
            desired = self._desired
        if desired is None or desired.deployment_id not in self._retry_at:
            return None
        return max(0.05, self._retry_at[desired.deployment_id] - time.monotonic())

    # -- the reconciler --------------------------------------------------------------------

    def apply(self, desired: DesiredState) -> DeploymentPhase | None:
        """Converge on ``desired``; returns the final phase (None when stopped midway)."""
        current = self._slot.current()
        if current is not None and _serves(current, desired):
            if current.deployment_id != desired.deployment_id:
                self._adopt(current, desired)
            return DeploymentPhase.ACTIVE
        if desired.deployment_id in self.state.failed:
            log.debug("deployment %s failed before; not retrying it", desired.deployment_id)
            return DeploymentPhase.FAILED
        stem = _UNSAFE.sub("_", f"{desired.model}-{desired.version}-{desired.sha256[:12]}")
        work = _Work(
            desired=desired,
            tar_path=self._downloads / f"{stem}.tar",
            bundle_dir=self._models / stem,
        )
        steps: Sequence[tuple[DeploymentPhase, Callable[[_Work], None]]] = (
            (DeploymentPhase.DOWNLOADING, self._download),
            (DeploymentPhase.VERIFYING, self._verify),
            (DeploymentPhase.STAGING, self._stage),
        )
        try:
            for phase, step in steps:
                self._enter(desired, phase)
                step(work)
            self._activate(work)
        except _StoppedError:
            log.info("deployment %s interrupted by shutdown", desired.deployment_id)
            return None
        except UpdateError as exc:
            self._fail(work, str(exc), transient=exc.transient)
            return DeploymentPhase.FAILED
        except (EdgefleetError, OSError) as exc:
            self._fail(work, str(exc), transient=False)
            return DeploymentPhase.FAILED
        finally:
            work.tar_path.unlink(missing_ok=True)
            work.tar_path.with_suffix(".part").unlink(missing_ok=True)
        return DeploymentPhase.ACTIVE

    def _enter(self, desired: DesiredState, phase: DeploymentPhase, detail: str = "") -> None:
        self.state.deployment = Deployment(
            deployment_id=desired.deployment_id,
            model=desired.model,
            version=desired.version,
            phase=phase,
            detail=detail,
        )
        self._store.save(self.state)
        log.info(
            "deployment %s (%s %s): %s%s",
            desired.deployment_id,
            desired.model,
            desired.version,
            phase.value,
            f": {detail}" if detail else "",
        )
        self._send(desired, phase, detail)

    def _send(self, desired: DesiredState, phase: DeploymentPhase, detail: str = "") -> None:
        self._report(
            Report(
                deployment_id=desired.deployment_id,
                model=desired.model,
                version=desired.version,
                phase=phase,
                detail=detail,
            )
        )

    # -- one function per phase ------------------------------------------------------------

    def _download(self, work: _Work) -> None:
        desired = work.desired
        url = _artifact_url(self.config.server_url, desired.artifact_url)
        self._downloads.mkdir(parents=True, exist_ok=True)
        part = work.tar_path.with_suffix(".part")
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.config.token}"}
        )
        received = 0
        try:
            with (
                urllib.request.urlopen(request, timeout=self.config.download_timeout) as response,
                part.open("wb") as out,
            ):
                while chunk := response.read(_CHUNK):
                    if self._stop.is_set():
                        raise _StoppedError
                    received += len(chunk)
                    if received > desired.size:
                        raise UpdateError(
                            f"download: {url} sent more than the announced {desired.size} bytes"
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            transient = exc.code >= 500 or exc.code in (408, 429)
            raise UpdateError(
                f"download: HTTP {exc.code} {exc.reason} from {url}", transient=transient
            ) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpdateError(f"download: {url} unreachable ({reason})", transient=True) from exc
        if received != desired.size:
            raise UpdateError(
                f"download: got {received} of {desired.size} bytes from {url}", transient=True
            )
        part.replace(work.tar_path)

    def _verify(self, work: _Work) -> None:
        desired = work.desired
        unpack_bundle(work.tar_path, work.bundle_dir, max_bytes=max(desired.size * 4, 1 << 20))
        verified = verify_bundle(work.bundle_dir, self.config.trusted_keys)
        actual = sha256_file(work.tar_path)
        if actual != desired.sha256:
            raise UpdateError(
                f"bundle tar: sha256 mismatch (desired {desired.sha256[:12]}…, "
                f"downloaded {actual[:12]}…)"
            )
        self._check_identity(verified, desired.model, desired.version)
        work.verified = verified

    def _stage(self, work: _Work) -> None:
        assert work.verified is not None
        served = self._load(work.verified, work.desired.sha256, work.desired.deployment_id)
        run_golden(served, work.verified)
        work.served = served

    def _activate(self, work: _Work) -> None:
        assert work.served is not None
        desired, served = work.desired, work.served
        previous = self._slot.swap(served)
        self.state.active = ActiveModel(
            deployment_id=desired.deployment_id,
            model=desired.model,
            version=desired.version,
            sha256=desired.sha256,
            path=str(work.bundle_dir),
        )
        self._retry_at.pop(desired.deployment_id, None)
        self._retry_delay.pop(desired.deployment_id, None)
        self._enter(desired, DeploymentPhase.ACTIVE, f"provider {served.provider}")
        self._on_activated(served)
        self._clean_models(keep={work.bundle_dir, previous.path if previous else None})

    # -- helpers ---------------------------------------------------------------------------

    def _adopt(self, current: ServedModel, desired: DesiredState) -> None:
        """A new deployment of the model already served: nothing to install, just report."""
        adopted = ServedModel(
            manifest=current.manifest,
            prepared=current.prepared,
            artifact_sha256=current.artifact_sha256,
            deployment_id=desired.deployment_id,
            path=current.path,
        )
        self._slot.swap(adopted)
        if self.state.active is not None:
            self.state.active = self.state.active.model_copy(
                update={"deployment_id": desired.deployment_id}
            )
        self._enter(desired, DeploymentPhase.ACTIVE, "already serving this artifact")

    def _check_identity(self, verified: VerifiedBundle, model: str, version: str) -> None:
        manifest = verified.manifest
        if manifest.profile != self.config.profile.tag:
            raise UpdateError(
                f"{MANIFEST_FILE}: built for profile {manifest.profile}, "
                f"but this device is {self.config.profile.tag}"
            )
        if (manifest.name, manifest.version) != (model, version):
            raise UpdateError(
                f"{MANIFEST_FILE}: bundle is {manifest.name} {manifest.version}, "
                f"desired is {model} {version}"
            )
        if not self._backend.supports(manifest):
            raise UpdateError(
                f"{MANIFEST_FILE}: format {manifest.format} cannot run on the "
                f"{self._backend.name} runtime of this device"
            )
        check_servable(manifest)

    def _load(self, verified: VerifiedBundle, sha256: str, deployment_id: str) -> ServedModel:
        prepared = self._backend.prepare(verified.model_path, verified.manifest)
        return ServedModel(
            manifest=verified.manifest,
            prepared=prepared,
            artifact_sha256=sha256,
            deployment_id=deployment_id,
            path=verified.path,
        )

    def _fail(self, work: _Work, detail: str, *, transient: bool) -> None:
        desired = work.desired
        current = self._slot.current()
        if current is None or current.path != work.bundle_dir:
            shutil.rmtree(work.bundle_dir, ignore_errors=True)
        if transient:
            delay = self._retry_delay.get(desired.deployment_id, self.config.retry_initial)
            self._retry_delay[desired.deployment_id] = min(delay * 2, self.config.retry_max)
            self._retry_at[desired.deployment_id] = time.monotonic() + delay
            detail = f"{detail} (retrying in {delay:g}s)"
        else:
            self.state.remember_failure(desired.deployment_id, detail)
        log.error("deployment %s failed: %s", desired.deployment_id, detail)
        self._enter(desired, DeploymentPhase.FAILED, detail)

    def _clean_models(self, keep: set[Path | None]) -> None:
        if not self._models.is_dir():
            return
        for path in self._models.iterdir():
            if path.is_dir() and path not in keep:
                shutil.rmtree(path, ignore_errors=True)


def run_golden(served: ServedModel, verified: VerifiedBundle) -> None:
    """Run the bundle's golden samples; raise UpdateError naming golden.npz on any mismatch.

    ``golden.npz`` holds ``inputs`` (count, *example shape) and ``outputs`` (count, *output
    example shape), the artifact's own host outputs for batch-1 runs (see compiler.golden).
    Only the first output is checked (single-output models for now).
    """
    golden = verified.manifest.golden
    name = golden.file
    try:
        with np.load(verified.golden_path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise UpdateError(f"{name}: cannot read golden samples ({exc})") from exc
    for key in (GOLDEN_INPUTS, GOLDEN_OUTPUTS):
        if key not in arrays:
            raise UpdateError(f"{name}: missing array {key!r} (has: {sorted(arrays)})")
    inputs, expected = arrays[GOLDEN_INPUTS], arrays[GOLDEN_OUTPUTS]
    if len(inputs) != len(expected):
        raise UpdateError(f"{name}: {len(inputs)} inputs but {len(expected)} expected outputs")
    # One sample at a time (batch 1), as the compiler computed the expected outputs.
    actual: list[list[Array]] = []
    for index, sample in enumerate(inputs):
        example = served.coerce(sample.tolist(), where=f"{name}: sample {index}")
        actual.extend(served.run_examples([example]))
    atol, rtol = golden.atol, golden.rtol
    for index, (outputs, want) in enumerate(zip(actual, expected, strict=True)):
        got = outputs[0]
        if got.shape != want.shape:
            raise UpdateError(
                f"{name}: sample {index} output has shape {got.shape}, expected {want.shape}"
            )
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        if not np.allclose(got64, want64, atol=atol, rtol=rtol):
            error = float(np.max(np.abs(got64 - want64)))
            raise UpdateError(
                f"{name}: sample {index} differs from the expected output on "
                f"{served.provider} (max abs error {error:.3g}; atol {atol:g}, rtol {rtol:g})"
            )
    log.info(
        "golden samples: %d of %d within atol %g, rtol %g on %s",
        len(actual),
        len(actual),
        atol,
        rtol,
        served.provider,
    )


def _serves(current: ServedModel, desired: DesiredState) -> bool:
    return (current.name, current.version, current.artifact_sha256) == (
        desired.model,
        desired.version,
        desired.sha256,
    )


def _artifact_url(server_url: str, artifact_url: str) -> str:
    if artifact_url.startswith(("http://", "https://")):
        return artifact_url
    return server_url.rstrip("/") + "/" + artifact_url.lstrip("/")
