"""An ordered list of passes, checked against a profile before anything runs, then run with
every intermediate recorded (parent, pass, config digest) and cached by content digest."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edgefleet
from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassContext, record
from compiler.passes.cache import PassCache
from hardware_profiles import HardwareProfile

log = logging.getLogger(__name__)


class PipelineError(CompileError):
    """A pipeline that cannot run for a profile: the message names the pass and the reason."""


class Pipeline:
    """Passes in order, from an artifact of format ``source``."""

    def __init__(self, passes: Sequence[Pass[Any]], *, source: Format) -> None:
        self.passes = tuple(passes)
        self.source = source

    @property
    def output_format(self) -> Format:
        return self.passes[-1].output_format if self.passes else self.source

    def problems(self, profile: HardwareProfile | None) -> list[str]:
        """Every reason this pipeline cannot run for ``profile``, each naming its pass."""
        found: list[str] = []
        current = self.source
        for step in self.passes:
            if current not in step.input_formats:
                accepted = ", ".join(sorted(f.value for f in step.input_formats))
                found.append(
                    f"pass {step.name!r}: takes {accepted}, but gets {current.value} "
                    "from the step before"
                )
            found.extend(f"pass {step.name!r}: {reason}" for reason in step.problems(profile))
            current = step.output_format
        if profile is not None and self.passes:
            container = self.output_format.container
            if container != profile.format.value:
                found.append(
                    f"pass {self.passes[-1].name!r}: produces {container}, but profile "
                    f"{profile.tag} runs {profile.format.value} models"
                )
        return found

    def check(self, profile: HardwareProfile | None) -> None:
        """Raise :class:`PipelineError` with the first problem; nothing has run yet."""
        found = self.problems(profile)
        if found:
            where = f"{profile.tag}: " if profile is not None else ""
            raise PipelineError(where + found[0])

    def run(self, source: Artifact, context: PassContext, cache: PassCache) -> Artifact:
        """Run every pass from ``source``; the result's ``parent`` chain is the lineage."""
        if source.format is not self.source:
            raise PipelineError(
                f"pipeline starts from {self.source.value}, got a {source.format.value} artifact"
            )
        self.check(None)
        current = source
        for step in self.passes:
            current = run_pass(step, current, context, cache)
            if context.on_pass is not None:
                context.on_pass(f"{step.name} (cached)" if current.cached else step.name)
        return current


def run_pass(step: Pass[Any], source: Artifact, context: PassContext, cache: PassCache) -> Artifact:
    """Run one pass on ``source`` unless its result is cached."""
    parts = [
        source.digest,
        step.name,
        str(step.version),
        step.config.digest(),
        edgefleet.__version__,
    ]
    if step.uses_calibration:
        parts.append(context.calibration.sha256 if context.calibration is not None else "-")
    key = cache.key(*parts)
    hit = cache.get(key)
    if hit is not None:
        effective = type(step.config).model_validate(hit.config)
        log.info("%s: cached (%s)", step.name, key[:12])
        return Artifact(
            format=step.output_format,
            digest=hit.digest,
            path=hit.path,
            parent=source,
            made_by=record(step.name, effective),
            cached=True,
        )
    context.workdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{step.name}-", dir=context.workdir))
    out = stage / f"model{step.output_format.suffix}"
    step_context = PassContext(
        workdir=stage,
        calibration=context.calibration,
        torch_model=context.torch_model,
        seed=context.seed,
    )
    effective = step.run(source, out, step_context)
    entry = cache.put(key, out, effective.model_dump(mode="json"))
    return Artifact(
        format=step.output_format,
        digest=entry.digest,
        path=entry.path,
        parent=source,
        made_by=record(step.name, effective),
    )
