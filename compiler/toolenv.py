"""Tool environments: converters whose dependencies cannot share the compiler's environment,
each in its own virtual environment, run as a subprocess.

- ``litert-torch`` (PyTorch -> TFLite) pins ``typing-extensions<4.13``, which downgrades
  pydantic, and pulls jax (~0.9 GB).
- ``onnx2tf`` (ONNX -> TFLite) pins old numpy, onnx and protobuf and needs TensorFlow.

Where they live: ``$EDGEFLEET_TOOLS_DIR/<name>``; by default next to the environment that
runs edgefleet (``.venv`` -> ``.venv-tools/<name>``), or ``~/.local/share/edgefleet/tools``
outside a virtual environment. ``edgefleet tools setup NAME`` creates one.
torch in a tool environment is pinned to the version the compiler runs, so a program exported
here (``torch.export``) loads there; ``--constraint`` files are passed to pip as well.

A tool environment counts as ready once its set-up finished (a stamp file written last), so a
half-made environment is never used.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from compiler.errors import CompileError
from compiler.passes.base import Requirement

log = logging.getLogger(__name__)

STAMP = ".edgefleet-tool-ready"
SCRIPTS = Path(__file__).parent / "tools"


@dataclass(frozen=True)
class ToolEnv:
    """A named tool environment: what pip installs into it and a module that must import."""

    name: str
    packages: tuple[str, ...]
    probe: str

    @property
    def path(self) -> Path:
        return tools_dir() / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def ready(self) -> bool:
        return (self.path / STAMP).is_file() and self.python.exists()

    def hint(self) -> str:
        return f"run 'edgefleet tools setup {self.name}' to create {self.path}"

    def run_script(self, script: str, args: Sequence[str], *, timeout_s: float) -> str:
        """Run ``compiler/tools/<script>`` with this environment's Python; its stdout.
        A failure raises :class:`CompileError` with the script's last line of error."""
        if not self.ready():
            raise CompileError(f"the {self.name} tool environment is not set up: {self.hint()}")
        command = [str(self.python), str(SCRIPTS / script), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env=_clean_env(),
            )
        except subprocess.TimeoutExpired:
            raise CompileError(f"{self.name}: {script} ran past {timeout_s:.0f} s") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit status {done.returncode}, no output"
            raise CompileError(f"{self.name} failed: {last}")
        return done.stdout


class ToolRequirement(Requirement):
    """A pass's need for a tool environment (``module`` is the tool environment's name)."""

    def available(self) -> bool:
        return TOOLS[self.module].ready()

    def message(self) -> str:
        return f"needs the {self.module!r} tool environment, which is not set up: {self.install}"


def requirement(tool: ToolEnv) -> ToolRequirement:
    return ToolRequirement(tool.name, tool.hint())


LITERT_TORCH = ToolEnv("litert-torch", ("litert-torch==0.10.*",), "litert_torch")
ONNX2TF = ToolEnv(
    "onnx2tf",
    (
        "onnx2tf",
        "tensorflow==2.19.*",
        "tf-keras==2.19.*",
        "onnx-graphsurgeon",
        "sng4onnx",
        "psutil",
    ),
    "onnx2tf",
)
TOOLS: dict[str, ToolEnv] = {tool.name: tool for tool in (LITERT_TORCH, ONNX2TF)}


def tools_dir() -> Path:
    configured = os.environ.get("EDGEFLEET_TOOLS_DIR")
    if configured:
        return Path(configured).expanduser()
    if sys.prefix != sys.base_prefix:  # a virtual environment: its sibling '<name>-tools'
        prefix = Path(sys.prefix)
        return prefix.with_name(prefix.name + "-tools")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "edgefleet" / "tools"


def tool(name: str) -> ToolEnv:
    try:
        return TOOLS[name]
    except KeyError:
        known = ", ".join(sorted(TOOLS))
        raise CompileError(f"unknown tool environment {name!r}; known: {known}") from None


def setup(tool: ToolEnv, *, constraints: Sequence[Path] = (), python: str | None = None) -> float:
    """Create (or complete) ``tool``'s environment; the seconds it took. torch is pinned to
    the compiler's own version; pip's output goes to ``<env>/setup.log``."""
    for path in constraints:
        if not path.is_file():
            raise CompileError(f"--constraint {path}: no such file")
    start = time.monotonic()
    (tool.path / STAMP).unlink(missing_ok=True)
    tool.path.parent.mkdir(parents=True, exist_ok=True)
    logfile = tool.path.parent / f"{tool.name}-setup.log"
    with logfile.open("w") as output:
        if not tool.python.exists():
            _step([python or sys.executable, "-m", "venv", str(tool.path)], output, tool)
        pins = tool.path / "edgefleet-pins.txt"
        pins.write_text("".join(f"{pin}\n" for pin in _pins()))
        command = [str(tool.python), "-m", "pip", "install", "--quiet", "-c", str(pins)]
        for path in constraints:
            command += ["-c", str(path.resolve())]
        _step([*command, *tool.packages], output, tool, logfile)
        _step([str(tool.python), "-c", f"import {tool.probe}"], output, tool, logfile)
    (tool.path / STAMP).write_text(f"{' '.join(tool.packages)}\n")
    return time.monotonic() - start


def _pins() -> list[str]:
    """torch at the version the compiler runs (exported programs must load in the tool)."""
    try:
        return [f"torch=={metadata.version('torch')}"]
    except metadata.PackageNotFoundError:
        return []


def _step(command: list[str], output: IO[str], tool: ToolEnv, logfile: Path | None = None) -> None:
    log.info("%s: %s", tool.name, " ".join(command))
    done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        where = f" (see {logfile})" if logfile is not None else ""
        raise CompileError(
            f"setting up the {tool.name} tool environment failed at "
            f"'{' '.join(command[:4])} ...'{where}"
        )


def _clean_env() -> dict[str, str]:
    """The environment for a tool: without this interpreter's PYTHONPATH / virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
