"""``edgefleet agent predict``: files of examples through a real agent's local API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.batch import (
    AgentClient,
    BatchError,
    OutputWriter,
    agent_address,
    read_examples,
    run_batch,
)
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edgefleet.bundle import VerifyKey
from hardware_profiles import HardwareProfile
from tests.edge_agent.helpers import IN_FEATURES, expected
from tests.edge_agent.test_api import served

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, profile: HardwareProfile, verify_key: VerifyKey
) -> Iterator[Agent]:
    base = tmp_path_factory.mktemp("batch-agent")
    config = AgentConfig(
        server_url="http://127.0.0.1:1",
        device_id="batch-dev",
        token="t",
        profile=profile,
        data_dir=base / "data",
        trusted_keys=(verify_key,),
        mqtt_url="mqtt://127.0.0.1:1",
        listen=("127.0.0.1", 0),
    )
    running = Agent(config)
    running.start()
    running.slot.swap(served(base, OnnxRuntimeBackend(profile), 1))
    try:
        yield running
    finally:
        running.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", "agent", "predict", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def examples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, IN_FEATURES), dtype=np.float32)


def test_npy_in_npy_out_through_data_dir(agent: Agent, tmp_path: Path) -> None:
    x = examples(50)
    np.save(tmp_path / "in.npy", x)
    result = cli(
        "--input",
        str(tmp_path / "in.npy"),
        "--output",
        str(tmp_path / "out.npy"),
        "--data-dir",
        str(agent.config.data_dir),
        "--batch-size",
        "7",
    )
    assert result.returncode == 0, result.stderr
    assert "50 examples predicted by tiny 1.0.0" in result.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (50, 3)
    np.testing.assert_allclose(out, expected(x, 1), rtol=1e-5, atol=1e-6)
    # 50 examples in batches of 7: 8 requests, every example logged once.
    assert agent.metrics.totals().calls >= 8
    assert agent.outbox.depth() >= 50


def test_jsonl_in_jsonl_on_stdout_through_listen(agent: Agent, tmp_path: Path) -> None:
    x = examples(5, seed=1)
    lines = [json.dumps(row) for row in x.tolist()]
    (tmp_path / "in.jsonl").write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    host, port = agent.address
    result = cli("--input", str(tmp_path / "in.jsonl"), "--listen", f"{host}:{port}")
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    np.testing.assert_allclose(np.array(outputs), expected(x, 1), rtol=1e-5, atol=1e-6)


def test_one_line_errors(agent: Agent, tmp_path: Path) -> None:
    missing = cli("--input", str(tmp_path / "nope.npy"), "--listen", "127.0.0.1:1")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.npy'}: no such input file"

    (tmp_path / "in.csv").write_text("1,2,3,4\n")
    bad_format = cli("--input", str(tmp_path / "in.csv"))
    assert bad_format.returncode == 1
    assert "unknown input format '.csv'" in bad_format.stderr
    assert len(bad_format.stderr.strip().splitlines()) == 1

    np.save(tmp_path / "in.npy", examples(3))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    down = cli("--input", str(tmp_path / "in.npy"), "--listen", f"127.0.0.1:{free}")
    assert down.returncode == 1
    assert f"no agent is listening on 127.0.0.1:{free}" in down.stderr
    assert "Traceback" not in down.stderr

    no_addr = cli("--input", str(tmp_path / "in.npy"), "--data-dir", str(tmp_path))
    assert no_addr.returncode == 1
    assert "agent.addr: not found" in no_addr.stderr


def _run(agent: Agent, path: Path, output: Path, batch_size: int = 4) -> None:
    run_batch(
        read_examples(path),
        AgentClient(agent.address),
        OutputWriter(output, None),
        batch_size=batch_size,
    )


def test_npz_takes_x_else_the_first_array(agent: Agent, tmp_path: Path) -> None:
    x = examples(6, seed=2)
    np.savez(tmp_path / "named.npz", a=np.zeros((2, 9)), x=x)
    _run(agent, tmp_path / "named.npz", tmp_path / "named.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "named.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(np.array(rows), expected(x, 1), rtol=1e-5, atol=1e-6)

    np.savez(tmp_path / "first.npz", x)  # stored as arr_0
    _run(agent, tmp_path / "first.npz", tmp_path / "first.npy")
    np.testing.assert_allclose(np.load(tmp_path / "first.npy"), expected(x, 1), rtol=1e-5)


def test_bad_files_and_bad_examples_are_named(agent: Agent, tmp_path: Path) -> None:
    (tmp_path / "broken.npy").write_bytes(b"not numpy at all")
    with pytest.raises(BatchError, match=r"broken\.npy: not a readable \.npy array"):
        read_examples(tmp_path / "broken.npy")
    (tmp_path / "broken.jsonl").write_text("[1, 2, 3, 4]\n[1, 2,\n")
    with pytest.raises(BatchError, match=r"broken\.jsonl:2: not valid JSON"):
        read_examples(tmp_path / "broken.jsonl")
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    with pytest.raises(BatchError, match="only numbers"):
        read_examples(tmp_path / "words.npy")
    with pytest.raises(BatchError, match=r"unknown output format '\.csv'"):
        OutputWriter(tmp_path / "out.csv", None)

    # Example 6 (in the second batch of 4) has 3 features: the agent's 400 names it by its
    # index in the file, and no .npy is written.
    rows = [[0.1, 0.2, 0.3, 0.4]] * 6 + [[0.1, 0.2, 0.3]]
    (tmp_path / "ragged.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(BatchError, match=r"at example 4: example 6 has shape \(3,\)"):
        _run(agent, tmp_path / "ragged.jsonl", tmp_path / "ragged.npy")
    assert not (tmp_path / "ragged.npy").exists()


def test_address_resolution(tmp_path: Path) -> None:
    assert agent_address("10.0.0.2:9000", tmp_path) == ("10.0.0.2", 9000)
    assert agent_address(None, None) == ("127.0.0.1", 8470)
    (tmp_path / "agent.addr").write_text("127.0.0.1:4242\n")
    assert agent_address(None, tmp_path) == ("127.0.0.1", 4242)
