"""A deployment's failure reaches the server even across outages and restarts.

The last deployment's outcome needs no record of its own: ``state.json`` holds it (the
deployment in a terminal state, written together with its entry in ``failed``, before it is
reported). What can be lost is the report: published while the broker was down (paho keeps it
in memory only, gone with the process), while no server was subscribed (the broker drops it),
or not at all because the agent was killed between persisting and publishing. So:

- :class:`OutcomeReports` publishes every deployment report and, for the last deployment's
  failure, watches for the broker's PUBACK. Until it comes, the failure is published again
  after each (re)connect, including the first after a restart. The acknowledged one is
  written durably to ``data_dir/outcome-acked`` (temporary file, fsync, rename, fsync of the
  directory), so a restart does not repeat it. A file that a power cut left empty or torn
  reads as "nothing acknowledged": the failure is published once more, which is safe.
- A PUBACK is not proof that the server stored it. The server republishes a device's desired
  state when it (re)connects to the broker, and the broker hands the retained one to the agent
  on every connect: the updater answers a desired state whose deployment already failed with
  its failure again (:func:`failure_for`: the same phase, failed or rolled back, and the same
  detail it ended with), as it answers one it serves with ``committed``.

Re-sending is safe: a report names its deployment and phase, and the server stores the same
terminal report (device, deployment, phase and detail) once; a repeat changes nothing.
Committed deployments need no tracking: the desired state they answer is what the device
runs, and it is answered on every connect.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edge_agent.serving import ServedModel
from edge_agent.update.states import State
from edge_agent.update.store import AgentState, write_durably
from edgefleet.protocol.messages import DeploymentPhase, DesiredState, Report

log = logging.getLogger(__name__)

ACKED_FILE = "outcome-acked"
FAILURES = frozenset({State.FAILED, State.ROLLED_BACK})
EARLY_ACKS = 64  # PUBACKs remembered in case one arrives before its publish call returned


def last_failure(state: AgentState, current: ServedModel | None) -> Report | None:
    """The report of the last deployment when it ended failed or rolled back (not a transient
    failure: that one is retried, and its retry is reported)."""
    deployment = state.deployment
    if (
        deployment is None
        or deployment.state not in FAILURES
        or deployment.deployment_id not in state.failed
    ):
        return None
    desired = deployment.desired
    return report_for(desired, deployment.state.phase, deployment.detail, current)


def failure_for(
    state: AgentState, desired: DesiredState, current: ServedModel | None
) -> Report | None:
    """The failure to answer ``desired`` with, if its deployment failed on this device."""
    last = last_failure(state, current)
    if last is not None and last.deployment_id == desired.deployment_id:
        return last
    outcome = state.failed.get(desired.deployment_id)
    if outcome is None:
        return None
    return report_for(desired, outcome.state.phase, outcome.detail, current)


def report_for(
    desired: DesiredState, phase: DeploymentPhase, detail: str, current: ServedModel | None
) -> Report:
    """The report of ``desired``'s deployment reaching ``phase``, naming the model served."""
    return Report(
        deployment_id=desired.deployment_id,
        model=desired.model,
        version=desired.version,
        phase=phase,
        detail=detail,
        active_model=current.name if current else None,
        active_version=current.version if current else None,
    )


def _key(report: Report) -> str:
    return f"{report.deployment_id} {report.phase.value}"


def _is_key(text: str) -> bool:
    """Whether ``text`` is a whole key as :func:`_key` writes it (not a torn one)."""
    deployment_id, _, phase = text.rpartition(" ")
    return bool(deployment_id) and phase in {state.phase.value for state in FAILURES}


class OutcomeReports:
    """Publishes deployment reports; re-publishes the last failure until the broker acks it.

    ``failure`` returns the last deployment's failure (:func:`last_failure` of the updater's
    state); ``send`` publishes a report with QoS 1 and returns its message id (None without a
    link). :meth:`publish` runs on the updater's thread, :meth:`connected` and
    :meth:`acknowledged` on the MQTT network thread; no lock is held while publishing.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        failure: Callable[[], Report | None],
        send: Callable[[Report], int | None],
    ) -> None:
        self._path = data_dir / ACKED_FILE
        self._failure = failure
        self._send = send
        self._lock = threading.Lock()
        self._acked = self._read()
        self._tracked = ""
        self._mids: set[int] = set()
        self._early: deque[int] = deque(maxlen=EARLY_ACKS)

    @property
    def pending(self) -> Report | None:
        """The last failure, while the broker has not acknowledged it."""
        failure = self._failure()
        if failure is None:
            return None
        with self._lock:
            return None if _key(failure) == self._acked else failure

    def publish(self, report: Report) -> None:
        mid = self._send(report)
        failure = self._failure()
        if mid is None or failure is None or _key(failure) != _key(report):
            return
        key = _key(report)
        with self._lock:
            if key != self._tracked:
                self._tracked, self._mids = key, set()
            self._mids.add(mid)
            acked_already = mid in self._early
        if acked_already:
            self._acknowledge(key)

    def connected(self) -> None:
        """After every (re)connect: publish the failure again if it was never acknowledged."""
        pending = self.pending
        if pending is not None:
            log.info(
                "deployment %s: the broker never acknowledged its %s report; publishing it again",
                pending.deployment_id,
                pending.phase.value,
            )
            self.publish(pending)

    def acknowledged(self, mid: int) -> None:
        """The broker's PUBACK for message ``mid``."""
        with self._lock:
            if mid not in self._mids:
                self._early.append(mid)
                return
            key, self._mids = self._tracked, set()
        self._acknowledge(key)

    def _acknowledge(self, key: str) -> None:
        with self._lock:
            if key == self._acked:
                return
            self._acked = key
        try:
            write_durably(self._path, f"{key}\n".encode())
        except OSError as exc:  # a full disk: the report is only sent once more after a restart
            log.warning("cannot record the acknowledged report in %s: %s", self._path, exc)

    def _read(self) -> str:
        """The acknowledged key; "" when none, or when the file is not a whole key (torn by a
        power cut while an older agent wrote it without fsync, or damaged on disk)."""
        try:
            text = self._path.read_bytes().decode("utf-8").strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s (%s); taking nothing as acknowledged", self._path, exc)
            return ""
        if text and not _is_key(text):
            log.warning("%s holds no whole report key; taking nothing as acknowledged", self._path)
            return ""
        return text
