"""The desired-state reconciler and the update state machine that it drives.

Compare the desired state with the model being served; when they differ, walk the table in
:mod:`edge_agent.update.states`, one function per state::

    state         what runs                                             on error
    ------------  ----------------------------------------------------  -------------
    DOWNLOADING   GET artifact_url (token, Range resume, size limit)    FAILED (transient
                                                                        errors retried)
    VERIFYING     unpack, signature, every file's sha256, tar sha256,   FAILED
                  profile, name/version, no downgrade unless rollback
    STAGING       load in the backend, golden samples within tolerance  FAILED
    ACTIVATING    persist, then swap the slot: requests in flight       ROLLING_BACK
                  finish on the old model, new ones get the new one
    VALIDATING    health window: error rate, NaN outputs, p95 latency   ROLLING_BACK
                  against the model served before
    ROLLING_BACK  serve the previous model again (kept loaded)          FAILED
    COMMITTED / ROLLED_BACK / FAILED: terminal

Every state is written to ``state.json`` *before* it runs and reported to the server with
what the device serves at that moment. A state found persisted at start raises ``RESTARTED``
(see the table); entering a state more than :data:`~edge_agent.update.states.MAX_ENTRIES`
times in one deployment raises ``LOOPING``. Deployments that failed or were rolled back are
remembered by ``deployment_id`` (in the same write as their terminal state) so the retained
desired state does not loop; receiving it again is answered with the failure again (see
:mod:`edge_agent.update.reports`).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge_agent.errors import UpdateError
from edge_agent.health import HealthMonitor
from edge_agent.runtime.base import Backend
from edge_agent.serving import ModelSlot, ServedModel
from edge_agent.shadow import MEMORY_FACTOR, ShadowRunner, check_memory, model_bytes
from edge_agent.update.download import StoppedError, artifact_url, download
from edge_agent.update.golden import run_golden
from edge_agent.update.reports import FAILURES, failure_for, last_failure, report_for
from edge_agent.update.states import (
    MAX_ENTRIES,
    ROLLS_BACK_ON_RESTART,
    TERMINAL,
    Event,
    State,
    next_state,
)
from edge_agent.update.store import ActiveModel, AgentState, Deployment, StateStore
from edge_agent.update.testhook import pause_point
from edge_agent.update.versions import is_downgrade
from edgefleet.bundle import (
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

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MIN_LATENCY_SAMPLES = 20
EARLY_ERROR_REQUESTS = 20


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
    validate_poll: float = 0.05
    shadow_memory_factor: float = MEMORY_FACTOR


@dataclass
class _Work:
    """The in-memory side of one deployment (the persisted side is ``Deployment``)."""

    deployment: Deployment
    tar_path: Path
    bundle_dir: Path
    verified: VerifiedBundle | None = None
    staged: ServedModel | None = None
    previous: ServedModel | None = None
    transient: bool = False

    @property
    def desired(self) -> DesiredState:
        return self.deployment.desired


def _noop(model: ServedModel | None) -> None:
    return None


def _no_shadow(runner: ShadowRunner | None) -> None:
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
        on_activated: Callable[[ServedModel | None], None] = _noop,
        health: HealthMonitor | None = None,
        on_shadow: Callable[[ShadowRunner | None], None] = _no_shadow,
    ) -> None:
        self._on_shadow = on_shadow
        self.shadow: ShadowRunner | None = None
        self._shadow_dir: Path | None = None
        self._shadow_failed: set[str] = set()
        self.config = config
        self._backend = backend
        self._slot = slot
        self._store = store
        self._report = report
        self._on_activated = on_activated
        self.health = health or HealthMonitor()
        self.state: AgentState = store.load()
        self._downloads = config.data_dir / "downloads"
        self._models = config.data_dir / "models"
        self._lock = threading.Lock()
        self._desired: DesiredState | None = None
        self._retry_at: dict[str, float] = {}
        self._retry_delay: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgefleet-update", daemon=True)
        self._handlers: dict[State, Callable[[_Work], None]] = {
            State.DOWNLOADING: self._download,
            State.VERIFYING: self._verify,
            State.STAGING: self._stage,
            State.ACTIVATING: self._activate,
            State.VALIDATING: self._validate,
            State.ROLLING_BACK: self._roll_back,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def restore(self) -> ServedModel | None:
        """Serve the model that was active before the restart (re-verified, no golden run)."""
        active = self.state.active
        interrupted = self.interrupted()
        if interrupted is not None and interrupted.state in ROLLS_BACK_ON_RESTART:
            # The new model may be what crashed us: serve the previous one while rolling back.
            active = interrupted.previous
        if active is None:
            return None
        served = self._load_active(active)
        if served is None:
            return None
        self._slot.swap(served)
        log.info(
            "serving %s %s (restored, provider %s)", served.name, served.version, served.provider
        )
        return served

    def last_failure(self) -> Report | None:
        """The last deployment's report when it failed or was rolled back (else None)."""
        return last_failure(self.state, self._slot.current())

    def interrupted(self) -> Deployment | None:
        """The deployment a crash left in a non-terminal state, if any."""
        deployment = self.state.deployment
        if deployment is None or deployment.state in TERMINAL or deployment.state is State.IDLE:
            return None
        return deployment

    def resume(self) -> DeploymentPhase | None:
        """Continue (or roll back) a deployment that a crash interrupted; see the table."""
        deployment = self.interrupted()
        if deployment is None:
            return None
        log.warning(
            "deployment %s was interrupted in %s; resuming",
            deployment.deployment_id,
            deployment.state.value,
        )
        work = self._work_for(deployment)
        current = self._slot.current()
        if (
            deployment.previous
            and current
            and current.artifact_sha256 == deployment.previous.sha256
        ):
            work.previous = current
        return self._drive(work, Event.RESTARTED, "agent restarted")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.shadow is not None:
            self.shadow.stop()

    def submit(self, desired: DesiredState) -> None:
        """Hand over the latest desired state (from the MQTT thread); the newest one wins."""
        with self._lock:
            self._desired = desired
        self._wake.set()

    def _loop(self) -> None:
        self.resume()
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
        """Converge on ``desired``; returns the terminal phase (None when stopped midway).

        A desired state the device already runs is answered with ``committed`` again: a server
        that restarted republishes every desired state, and this is how it learns what the
        devices committed while it was down. A deployment that failed or was rolled back is
        answered with that outcome again, for the same reason (and is not tried again).
        """
        current = self._slot.current()
        if current is not None and _serves(current, desired):
            adopting = current.deployment_id != desired.deployment_id
            if adopting:
                self._adopt(current, desired)
            # The shadow runs before the deployment is reported committed: the server starts
            # judging the candidate when it hears that.
            if self._reconcile_shadow(desired):
                detail = "already serving this " + ("artifact" if adopting else "deployment")
                self._send(desired, DeploymentPhase.COMMITTED, detail)
            return DeploymentPhase.COMMITTED
        failure = failure_for(self.state, desired, current)
        if failure is not None:
            log.info(
                "deployment %s ended %s before; reporting that again, not retrying it",
                desired.deployment_id,
                failure.phase.value,
            )
            self._report(failure)
            return DeploymentPhase.FAILED
        deployment = Deployment(desired=desired, previous=self.state.active)
        work = self._work_for(deployment)
        work.previous = current
        phase = self._drive(work, Event.DONE)
        if phase is DeploymentPhase.COMMITTED:
            self._reconcile_shadow(desired)
        return phase

    # -- shadow ----------------------------------------------------------------------------

    def _reconcile_shadow(self, desired: DesiredState) -> bool:
        """Start, replace or stop the shadow candidate that ``desired.shadow`` names. False
        when the candidate cannot run (reported as failed) or the agent is stopping."""
        spec = desired.shadow
        running = self.shadow
        if spec is None:
            if running is not None:
                self.shadow, self._shadow_dir = None, None
                self._on_shadow(None)
                running.stop()
            return True
        artifact = spec.artifact
        if running is not None and running.candidate.artifact_sha256 == artifact.sha256:
            running.sample_rate = spec.sample_rate
            return True
        if artifact.sha256 in self._shadow_failed:
            self._send_shadow(desired, DeploymentPhase.FAILED, "shadow: this candidate failed")
            return False
        try:
            candidate = self._install_shadow(desired)
        except StoppedError:
            return False
        except (EdgefleetError, OSError) as exc:
            detail = str(exc) if str(exc).startswith("shadow:") else f"shadow: {exc}"
            log.error("deployment %s: %s", desired.deployment_id, detail)
            self._shadow_failed.add(artifact.sha256)
            self._send_shadow(desired, DeploymentPhase.FAILED, detail)
            return False
        runner = ShadowRunner(candidate, sample_rate=spec.sample_rate)
        runner.start()
        self.shadow = runner
        self._on_shadow(runner)
        if running is not None:
            running.stop()
        return True

    def _install_shadow(self, desired: DesiredState) -> ServedModel:
        assert desired.shadow is not None
        artifact = desired.shadow.artifact
        stem = _UNSAFE.sub(
            "_", f"shadow-{artifact.model}-{artifact.version}-{artifact.sha256[:12]}"
        )
        tar_path, bundle_dir = self._downloads / f"{stem}.tar", self._models / stem
        self._downloads.mkdir(parents=True, exist_ok=True)
        url = artifact_url(self.config.server_url, artifact.artifact_url)
        try:
            download(
                url,
                tar_path,
                size=artifact.size,
                token=self.config.token,
                timeout=self.config.download_timeout,
                stop=self._stop,
            )
            verified = self._open_bundle(
                tar_path,
                bundle_dir,
                sha256=artifact.sha256,
                size=artifact.size,
                model=artifact.model,
                version=artifact.version,
            )
        finally:
            tar_path.unlink(missing_ok=True)
        current = self._slot.current()
        active_bytes = model_bytes(current.path / current.manifest.model_file) if current else 0
        check_memory(
            model_bytes(verified.model_path),
            active_bytes,
            self.config.profile,
            factor=self.config.shadow_memory_factor,
        )
        candidate = self._load(verified, artifact.sha256, desired.deployment_id)
        run_golden(candidate, verified)
        self._shadow_dir = bundle_dir
        return candidate

    def _send_shadow(self, desired: DesiredState, phase: DeploymentPhase, detail: str) -> None:
        assert desired.shadow is not None
        current = self._slot.current()
        self._report(
            Report(
                deployment_id=desired.deployment_id,
                model=desired.shadow.artifact.model,
                version=desired.shadow.artifact.version,
                phase=phase,
                detail=detail,
                active_model=current.name if current else None,
                active_version=current.version if current else None,
            )
        )

    def _work_for(self, deployment: Deployment) -> _Work:
        desired = deployment.desired
        stem = _UNSAFE.sub("_", f"{desired.model}-{desired.version}-{desired.sha256[:12]}")
        return _Work(
            deployment=deployment,
            tar_path=self._downloads / f"{stem}.tar",
            bundle_dir=self._models / stem,
        )

    def _drive(self, work: _Work, event: Event, detail: str = "") -> DeploymentPhase | None:
        """Walk the table from the deployment's state until a terminal state is reached."""
        state = next_state(work.deployment.state, event)
        while True:
            entries = work.deployment.entries.get(state.value, 0) + 1
            if entries > MAX_ENTRIES and state not in TERMINAL:
                looping = f"entered {state.value} {entries} times (crash loop)"
                detail = f"{looping}; last: {detail}" if detail else looping
                state = next_state(state, Event.LOOPING)
                continue
            if state is State.FAILED and work.transient:
                detail = f"{detail} (retrying in {self._schedule_retry(work):g}s)"
            self._enter(work, state, detail)
            if state in TERMINAL:
                self._finish(work, state, detail)
                return state.phase
            pause_point(state.value, work.desired.version, self.config.data_dir, self._stop)
            if self._stop.is_set():
                log.info("deployment %s interrupted by shutdown", work.desired.deployment_id)
                return None
            try:
                self._handlers[state](work)
                # ROLLED_BACK reports why the deployment was rolled back.
                event = Event.DONE
                detail = work.deployment.detail if state is State.ROLLING_BACK else ""
            except StoppedError:
                log.info("deployment %s interrupted by shutdown", work.desired.deployment_id)
                return None
            except UpdateError as exc:
                event, detail, work.transient = Event.ERROR, str(exc), exc.transient
            except (EdgefleetError, OSError) as exc:
                event, detail, work.transient = Event.ERROR, str(exc), False
            if event is Event.ERROR:
                log.error(
                    "deployment %s: %s failed: %s", work.desired.deployment_id, state.value, detail
                )
            state = next_state(state, event)

    def _enter(self, work: _Work, state: State, detail: str) -> None:
        """Persist the state (with its entry count), then report it."""
        deployment = work.deployment
        deployment.state = state
        deployment.detail = detail
        deployment.entries[state.value] = deployment.entries.get(state.value, 0) + 1
        self.state.deployment = deployment
        if state in FAILURES and not (state is State.FAILED and work.transient):
            # In the same write as the state: the outcome is then known after any crash.
            self.state.remember_failure(deployment.deployment_id, detail, state=state)
        self._store.save(self.state)
        desired = deployment.desired
        log.info(
            "deployment %s (%s %s): %s%s",
            desired.deployment_id,
            desired.model,
            desired.version,
            state.value,
            f": {detail}" if detail else "",
        )
        if state in TERMINAL:
            pause_point(state.value, desired.version, self.config.data_dir, self._stop)
        self._send(desired, state.phase, detail)

    def _send(self, desired: DesiredState, phase: DeploymentPhase, detail: str = "") -> None:
        self._report(report_for(desired, phase, detail, self._slot.current()))

    def _finish(self, work: _Work, state: State, detail: str) -> None:
        desired = work.desired
        if not (work.transient and state is State.FAILED):
            self._retry_at.pop(desired.deployment_id, None)
        if state is State.COMMITTED:
            self._retry_delay.pop(desired.deployment_id, None)
            keep = {work.bundle_dir}
            if self._shadow_dir is not None:
                keep.add(self._shadow_dir)
            if work.deployment.previous is not None:
                keep.add(Path(work.deployment.previous.path))
            self._clean_models(keep)
        elif work.transient and state is State.FAILED:
            pass  # retried later: _schedule_retry set the time
        else:  # remembered as failed by _enter
            current = self._slot.current()
            if current is None or current.path != work.bundle_dir:
                shutil.rmtree(work.bundle_dir, ignore_errors=True)
        if state is not State.FAILED or not work.transient:
            work.tar_path.unlink(missing_ok=True)
            work.tar_path.with_suffix(".part").unlink(missing_ok=True)

    def _schedule_retry(self, work: _Work) -> float:
        deployment_id = work.desired.deployment_id
        delay = self._retry_delay.get(deployment_id, self.config.retry_initial)
        self._retry_delay[deployment_id] = min(delay * 2, self.config.retry_max)
        self._retry_at[deployment_id] = time.monotonic() + delay
        return delay

    # -- one function per state ------------------------------------------------------------

    def _download(self, work: _Work) -> None:
        desired = work.desired
        url = artifact_url(self.config.server_url, desired.artifact_url)
        self._downloads.mkdir(parents=True, exist_ok=True)
        resumed = download(
            url,
            work.tar_path,
            size=desired.size,
            token=self.config.token,
            timeout=self.config.download_timeout,
            stop=self._stop,
        )
        if resumed:
            log.info("download of %s resumed at byte %d", url, resumed)

    def _verify(self, work: _Work) -> None:
        desired = work.desired
        if not work.tar_path.exists():
            raise UpdateError(f"bundle tar: {work.tar_path} is missing; download again")
        verified = self._open_bundle(
            work.tar_path,
            work.bundle_dir,
            sha256=desired.sha256,
            size=desired.size,
            model=desired.model,
            version=desired.version,
        )
        active = self.state.active
        if (
            active is not None
            and active.model == desired.model
            and is_downgrade(active.version, desired.version)
            and not desired.rollback
        ):
            raise UpdateError(
                f"{MANIFEST_FILE}: version {desired.version} is older than the active "
                f"{active.version}; a downgrade needs an explicit rollback deployment"
            )
        work.verified = verified

    def _stage(self, work: _Work) -> None:
        verified = work.verified or verify_bundle(work.bundle_dir, self.config.trusted_keys)
        self._check_identity(verified, work.desired.model, work.desired.version)
        staged = self._load(verified, work.desired.sha256, work.desired.deployment_id)
        run_golden(staged, verified)
        work.verified, work.staged = verified, staged
        work.deployment.candidate = ActiveModel(
            deployment_id=work.desired.deployment_id,
            model=work.desired.model,
            version=work.desired.version,
            sha256=work.desired.sha256,
            path=str(work.bundle_dir),
        )

    def _activate(self, work: _Work) -> None:
        if work.staged is None:  # not reachable through the table; kept as a guard
            raise UpdateError("activating: no staged model")
        candidate = work.deployment.candidate
        self.state.active = candidate
        self._store.save(self.state)
        work.previous = self._slot.swap(work.staged)
        self.health.reset(work.desired.sha256)
        self._send(work.desired, DeploymentPhase.ACTIVE, f"provider {work.staged.provider}")
        self._on_activated(work.staged)

    def _validate(self, work: _Work) -> None:
        policy = work.desired.health
        key = work.desired.sha256
        previous = work.deployment.previous
        baseline = self.health.snapshot(previous.sha256) if previous else None
        started = time.monotonic()
        deadline = started + policy.window_s
        hard_deadline = started + max(3 * policy.window_s, policy.window_s + 10.0)
        while True:
            snap = self.health.snapshot(key)
            if snap.nan_outputs and not policy.allow_nan:
                raise UpdateError(
                    f"validating: {snap.nan_outputs} NaN outputs in {snap.requests} requests "
                    "(the health policy allows none)"
                )
            if snap.requests >= EARLY_ERROR_REQUESTS and snap.error_rate > policy.max_error_rate:
                break
            now = time.monotonic()
            if now >= deadline and (snap.requests >= policy.min_requests or now >= hard_deadline):
                break
            if self._stop.wait(self.config.validate_poll):
                raise StoppedError
        if snap.requests and snap.error_rate > policy.max_error_rate:
            raise UpdateError(
                f"validating: error rate {snap.error_rate:.1%} ({snap.errors} of "
                f"{snap.requests} requests) exceeds {policy.max_error_rate:.1%}"
            )
        ratio_bound = policy.max_latency_ratio
        if (
            ratio_bound is not None
            and baseline is not None
            and baseline.p95_ms
            and snap.p95_ms is not None
            and min(baseline.latency_samples, snap.latency_samples) >= MIN_LATENCY_SAMPLES
        ):
            ratio = snap.p95_ms / baseline.p95_ms
            if ratio > ratio_bound:
                raise UpdateError(
                    f"validating: p95 latency {snap.p95_ms:.3g} ms is {ratio:.2f}x the previous "
                    f"model's {baseline.p95_ms:.3g} ms (bound {ratio_bound:g}x)"
                )
        log.info(
            "validated %s %s: %d requests, %d errors, p95 %s ms",
            work.desired.model,
            work.desired.version,
            snap.requests,
            snap.errors,
            f"{snap.p95_ms:.3g}" if snap.p95_ms is not None else "-",
        )

    def _roll_back(self, work: _Work) -> None:
        previous = work.deployment.previous
        served: ServedModel | None = None
        if previous is not None:
            loaded = work.previous
            if loaded is None or loaded.artifact_sha256 != previous.sha256:
                loaded = self._load_active(previous)
            if loaded is None:
                raise UpdateError(
                    f"rolling back: the previous model {previous.model} {previous.version} "
                    f"at {previous.path} cannot be loaded"
                )
            served = loaded
        self.state.active = previous
        self._store.save(self.state)
        self._slot.swap(served)
        self._on_activated(served)

    # -- helpers ---------------------------------------------------------------------------

    def _adopt(self, current: ServedModel, desired: DesiredState) -> None:
        """A new deployment of the model already served: nothing to install; the caller
        reports it committed once its shadow (if any) runs."""
        adopted = ServedModel(
            manifest=current.manifest,
            prepared=current.prepared,
            artifact_sha256=current.artifact_sha256,
            deployment_id=desired.deployment_id,
            path=current.path,
        )
        self._slot.swap(adopted)
        if self.state.active is not None:
            self.state.active = replace(self.state.active, deployment_id=desired.deployment_id)
        deployment = Deployment(desired=desired, state=State.COMMITTED, previous=self.state.active)
        self.state.deployment = deployment
        self._store.save(self.state)

    def _load_active(self, active: ActiveModel) -> ServedModel | None:
        path = Path(active.path)
        try:
            verified = verify_bundle(path, self.config.trusted_keys)
            self._check_identity(verified, active.model, active.version)
            return self._load(verified, active.sha256, active.deployment_id)
        except (EdgefleetError, OSError) as exc:
            log.error("cannot load %s %s from %s: %s", active.model, active.version, path, exc)
            return None

    def _open_bundle(
        self, tar_path: Path, bundle_dir: Path, *, sha256: str, size: int, model: str, version: str
    ) -> VerifiedBundle:
        """Unpack and verify a downloaded bundle (the active model's or a shadow's).

        The bundle's own checks come first, because they name the file at fault; then the tar
        digest against the desired state (a mismatching tar is deleted so it is fetched
        again); then profile, identity and runtime.
        """
        shutil.rmtree(bundle_dir, ignore_errors=True)
        unpack_bundle(tar_path, bundle_dir, max_bytes=max(size * 4, 1 << 20))
        verified = verify_bundle(bundle_dir, self.config.trusted_keys)
        actual = sha256_file(tar_path)
        if actual != sha256:
            tar_path.unlink(missing_ok=True)
            raise UpdateError(
                f"bundle tar: sha256 mismatch (desired {sha256[:12]}…, downloaded {actual[:12]}…)"
            )
        self._check_identity(verified, model, version)
        return verified

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

    def _load(self, verified: VerifiedBundle, sha256: str, deployment_id: str) -> ServedModel:
        prepared = self._backend.prepare(verified.model_path, verified.manifest)
        return ServedModel(
            manifest=verified.manifest,
            prepared=prepared,
            artifact_sha256=sha256,
            deployment_id=deployment_id,
            path=verified.path,
        )

    def _clean_models(self, keep: set[Path]) -> None:
        if not self._models.is_dir():
            return
        for path in self._models.iterdir():
            if path.is_dir() and path not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _serves(current: ServedModel, desired: DesiredState) -> bool:
    return (current.name, current.version, current.artifact_sha256) == (
        desired.model,
        desired.version,
        desired.sha256,
    )
