"""Batch mode: run a file of examples through a running agent's local API.

``edgefleet agent predict --input FILE`` reads examples from

- ``.npy``: one array; its first axis indexes the examples;
- ``.npz``: the array named ``x``, else the first array in the file;
- ``.jsonl``: one JSON example (a nested list of numbers) per line; blank lines are skipped;

posts them in batches to ``POST /v1/predict {"inputs": [...]}`` and writes the outputs to
``.npy`` (one stacked array; single-output models) or ``.jsonl`` (one JSON output per line).
Only the standard library talks HTTP, so this runs on the device without extra packages.
"""

from __future__ import annotations

import http.client
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_agent.errors import AgentError

INPUT_FORMATS = (".npy", ".npz", ".jsonl")
OUTPUT_FORMATS = (".npy", ".jsonl")
ADDR_FILE = "agent.addr"


class BatchError(AgentError):
    """The batch cannot run: a missing or malformed file, or no agent answering."""


@dataclass(frozen=True)
class Examples:
    """Examples read from a file: ``count`` of them, fetched by slice as JSON values."""

    count: int
    _slice: Callable[[int, int], list[Any]]

    def batches(self, size: int) -> Iterator[list[Any]]:
        for start in range(0, self.count, size):
            yield self._slice(start, min(start + size, self.count))


def read_examples(path: Path) -> Examples:
    """Open an input file; raises :class:`BatchError` naming the file and the problem."""
    if not path.is_file():
        raise BatchError(f"{path}: no such input file")
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise BatchError(
            f"{path}: unknown input format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(INPUT_FORMATS)}"
        )
    if suffix == ".jsonl":
        return _read_jsonl(path)
    array = _read_npy(path) if suffix == ".npy" else _read_npz(path)
    if array.ndim == 0:
        raise BatchError(f"{path}: holds a scalar; the first axis must index the examples")
    if array.dtype.kind not in "biuf":
        raise BatchError(f"{path}: holds {array.dtype} values; only numbers can be predicted")
    return Examples(len(array), lambda start, stop: array[start:stop].tolist())


def _read_npy(path: Path) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise BatchError(f"{path}: not a readable .npy array ({exc})") from exc


def _read_npz(path: Path) -> np.ndarray[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if not names:
                raise BatchError(f"{path}: the .npz archive holds no arrays")
            name = "x" if "x" in names else names[0]
            return np.asarray(archive[name])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BatchError(f"{path}: not a readable .npz archive ({exc})") from exc


def _read_jsonl(path: Path) -> Examples:
    examples: list[Any] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    examples.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise BatchError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise BatchError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return Examples(len(examples), lambda start, stop: examples[start:stop])


AgentAddress = tuple[str, int] | Path
"""Where the local API listens: ``(host, port)`` on loopback TCP, or a Unix socket path."""

UNIX_PREFIX = "unix:"


def agent_address(
    listen: str | None, data_dir: Path | None, socket: Path | None = None
) -> AgentAddress:
    """``--socket PATH``, else ``--listen HOST:PORT``, else the address the agent wrote to
    DATA_DIR/agent.addr (``HOST:PORT`` or ``unix:PATH``)."""
    from edge_agent.cli import parse_listen

    if socket is not None:
        return socket
    if listen is not None:
        return parse_listen(listen)
    if data_dir is None:
        return "127.0.0.1", 8470
    path = data_dir / ADDR_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise BatchError(
            f"{path}: not found; is the agent running with --data-dir {data_dir}?"
        ) from None
    if text.startswith(UNIX_PREFIX):
        return Path(text.removeprefix(UNIX_PREFIX))
    return parse_listen(text)


class AgentClient:
    """One keep-alive HTTP connection to the agent's local API (TCP or a Unix socket)."""

    def __init__(self, address: AgentAddress, timeout: float = 60.0) -> None:
        if isinstance(address, Path):
            from edge_agent.unix_socket import UnixHTTPConnection

            self.where = f"{UNIX_PREFIX}{address}"
            self._conn: http.client.HTTPConnection = UnixHTTPConnection(address, timeout)
        else:
            host, port = address
            self.where = f"{host}:{port}"
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def close(self) -> None:
        self._conn.close()

    def predict_batch(self, examples: list[Any], first_index: int) -> dict[str, Any]:
        body = json.dumps({"inputs": examples}).encode()
        try:
            self._conn.request(
                "POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"}
            )
            response = self._conn.getresponse()
            data = response.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise BatchError(
                f"no agent is listening on {self.where} (connection refused); start it with "
                "`edgefleet agent run` or pass --listen / --socket / --data-dir"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise BatchError(f"agent at {self.where}: request failed ({exc})") from exc
        try:
            answer = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BatchError(
                f"{self.where} answered HTTP {response.status} with a body that is not JSON; "
                "is that an edgefleet agent?"
            ) from None
        if response.status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            detail = _renumber(str(error), first_index) if error else f"HTTP {response.status}"
            raise BatchError(f"agent refused the batch at example {first_index}: {detail}")
        if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
            raise BatchError(f'{self.where}: the answer has no "outputs" list')
        return answer


def _renumber(error: str, offset: int) -> str:
    """The agent names ``inputs[i]`` within the batch; name the example's index in the file."""
    import re

    return re.sub(r"inputs\[(\d+)\]", lambda m: f"example {int(m.group(1)) + offset}", error)


@dataclass(frozen=True)
class BatchResult:
    count: int
    model: str | None
    version: str | None
    output: Path | None


class OutputWriter:
    """Writes outputs as they come: ``.jsonl`` lines (file or a stream), or ``.npy`` at the end."""

    def __init__(self, path: Path | None, stream: IO[str] | None) -> None:
        self.path = path
        self._rows: list[Any] = []
        self._stream = stream
        self._handle: IO[str] | None = None
        if path is not None:
            suffix = path.suffix.lower()
            if suffix not in OUTPUT_FORMATS:
                raise BatchError(
                    f"{path}: unknown output format {suffix or '(no suffix)'!r}; "
                    f"use one of {', '.join(OUTPUT_FORMATS)}"
                )
            if not path.parent.is_dir():
                raise BatchError(f"{path}: the directory {path.parent} does not exist")
            if suffix == ".jsonl":
                self._handle = path.open("w", encoding="utf-8")
        elif stream is not None:
            self._handle = stream

    @property
    def npy(self) -> bool:
        return self.path is not None and self.path.suffix.lower() == ".npy"

    def write(self, outputs: Sequence[Any]) -> None:
        if self.npy:
            if outputs and isinstance(outputs[0], dict):
                raise BatchError(
                    f"{self.path}: the model has several outputs, which .npy cannot hold; "
                    "write .jsonl instead"
                )
            self._rows.extend(outputs)
        elif self._handle is not None:
            self._handle.writelines(json.dumps(output) + "\n" for output in outputs)

    def abort(self) -> None:
        """Close without writing a .npy (a failed run leaves at most a partial .jsonl)."""
        self._rows = []
        if self._handle is not None and self._handle is not self._stream:
            self._handle.close()

    def close(self) -> None:
        if self.npy and self.path is not None:
            np.save(self.path, np.asarray(self._rows), allow_pickle=False)
        if self._handle is not None and self._handle is not self._stream:
            self._handle.close()


def run_batch(
    examples: Examples,
    client: AgentClient,
    writer: OutputWriter,
    *,
    batch_size: int,
    progress: Callable[[int], None] = lambda done: None,
) -> BatchResult:
    """Post every batch in order; ``progress`` gets the number of examples done so far."""
    if examples.count == 0:
        raise BatchError("the input file holds no examples")
    done = 0
    model = version = None
    finished = False
    try:
        for batch in examples.batches(batch_size):
            answer = client.predict_batch(batch, done)
            outputs = answer["outputs"]
            if len(outputs) != len(batch):
                raise BatchError(
                    f"agent at {client.where} returned {len(outputs)} outputs for "
                    f"{len(batch)} examples"
                )
            writer.write(outputs)
            model, version = answer.get("model"), answer.get("version")
            done += len(batch)
            progress(done)
        finished = True
    finally:
        client.close()
        if not finished:
            writer.abort()
    writer.close()
    return BatchResult(done, model, version, writer.path)
