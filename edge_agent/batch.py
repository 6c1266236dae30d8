"""Batch mode: run a file of examples through a running agent's local API.

``edgefleet agent predict --input FILE`` reads examples from

- ``.npy``: one array; its first axis indexes the examples;
- ``.npz``: the array named ``x``, else the first array in the file; for a model with several
  inputs, one array per input name (all with the same first axis);
- ``.jsonl``: one JSON example (a nested list of numbers, or ``{input name: list}`` for a
  model with several inputs) per line; blank lines are skipped;

asks the agent for its model's input names (``GET /v1/model``), posts the examples in batches
to ``POST /v1/predict {"inputs": [...]}`` and writes the outputs to ``.npy`` (one stacked
array; single-output models), ``.npz`` (one stacked array per output name) or ``.jsonl`` (one
JSON output per line: a list, or ``{output name: list}``).
Only the standard library talks HTTP, so this runs on the device without extra packages.
"""

from __future__ import annotations

import http.client
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_agent.errors import AgentError

INPUT_FORMATS = (".npy", ".npz", ".jsonl")
OUTPUT_FORMATS = (".npy", ".npz", ".jsonl")
ADDR_FILE = "agent.addr"


class BatchError(AgentError):
    """The batch cannot run: a missing or malformed file, or no agent answering."""


@dataclass(frozen=True)
class Examples:
    """Examples read from a file: ``count`` of them, fetched by slice as JSON values.
    ``archive`` holds every array of an ``.npz``, for models with several inputs."""

    count: int
    _slice: Callable[[int, int], list[Any]]
    path: Path | None = None
    archive: Mapping[str, np.ndarray[Any, Any]] | None = None

    def batches(self, size: int) -> Iterator[list[Any]]:
        for start in range(0, self.count, size):
            yield self._slice(start, min(start + size, self.count))

    def for_inputs(self, names: Sequence[str]) -> Examples:
        """The examples a model with these inputs takes: unchanged for one input; for
        several, an ``.npz`` must hold one array per input name (``.jsonl`` lines are
        objects the agent checks)."""
        if len(names) < 2 or (
            self.archive is None and self.path is not None and self.path.suffix.lower() == ".jsonl"
        ):
            return self
        listed = ", ".join(repr(name) for name in names)
        if self.archive is None:
            raise BatchError(
                f"{self.path}: the model has inputs {listed}; give an .npz with one array per "
                "input name (or .jsonl lines of {name: list})"
            )
        missing = [name for name in names if name not in self.archive]
        if missing:
            raise BatchError(
                f"{self.path}: no array named {missing[0]!r} for the model's inputs {listed} "
                f"(the archive holds {', '.join(map(repr, self.archive))})"
            )
        arrays = {name: _checked(self.path, self.archive[name], name) for name in names}
        counts = {name: len(array) for name, array in arrays.items()}
        if len(set(counts.values())) != 1:
            raise BatchError(
                f"{self.path}: the input arrays hold different example counts {counts}"
            )

        def cut(start: int, stop: int) -> list[Any]:
            parts = {name: array[start:stop].tolist() for name, array in arrays.items()}
            return [
                {name: part[index] for name, part in parts.items()} for index in range(stop - start)
            ]

        return Examples(counts[names[0]], cut, self.path, self.archive)


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
    archive = None
    if suffix == ".npy":
        array = _read_npy(path)
    else:
        archive = _read_npz(path)
        array = archive["x" if "x" in archive else next(iter(archive))]
    array = _checked(path, array, None)
    return Examples(len(array), lambda start, stop: array[start:stop].tolist(), path, archive)


def _checked(
    path: Path | None, array: np.ndarray[Any, Any], name: str | None
) -> np.ndarray[Any, Any]:
    what = f"{path}: array {name!r}" if name else f"{path}:"
    if array.ndim == 0:
        raise BatchError(f"{what} holds a scalar; the first axis must index the examples")
    if array.dtype.kind not in "biuf":
        raise BatchError(f"{what} holds {array.dtype} values; only numbers can be predicted")
    return array


def _read_npy(path: Path) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise BatchError(f"{path}: not a readable .npy array ({exc})") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not archive.files:
                raise BatchError(f"{path}: the .npz archive holds no arrays")
            return {name: np.asarray(archive[name]) for name in archive.files}
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
    return Examples(len(examples), lambda start, stop: examples[start:stop], path)


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

    def input_names(self) -> list[str]:
        """The active model's input names, from ``GET /v1/model``."""
        status, answer = self._call("GET", "/v1/model", None)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise BatchError(f"agent at {self.where} has no model to predict with: {error}")
        try:
            return [str(spec["name"]) for spec in answer["interface"]["inputs"]]
        except (KeyError, TypeError):
            raise BatchError(f"{self.where}: GET /v1/model names no model inputs") from None

    def predict_batch(self, examples: list[Any], first_index: int) -> dict[str, Any]:
        status, answer = self._call(
            "POST", "/v1/predict", json.dumps({"inputs": examples}).encode()
        )
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            detail = _renumber(str(error), first_index) if error else f"HTTP {status}"
            raise BatchError(f"agent refused the batch at example {first_index}: {detail}")
        if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
            raise BatchError(f'{self.where}: the answer has no "outputs" list')
        return answer

    def _call(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self._conn.request(method, path, body=body, headers=headers)
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
            return response.status, json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BatchError(
                f"{self.where} answered HTTP {response.status} with a body that is not JSON; "
                "is that an edgefleet agent?"
            ) from None


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

    @property
    def npz(self) -> bool:
        return self.path is not None and self.path.suffix.lower() == ".npz"

    def write(self, outputs: Sequence[Any]) -> None:
        if self.npz:
            self._rows.extend(outputs)
        elif self.npy:
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
        elif self.npz and self.path is not None:
            rows = self._rows
            arrays: dict[str, Any] = {"y": np.asarray(rows)}  # one unnamed output
            if rows and isinstance(rows[0], dict):
                arrays = {name: np.asarray([row[name] for row in rows]) for name in rows[0]}
            np.savez(self.path, **arrays)
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
        examples = examples.for_inputs(client.input_names())
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
