"""The README's main job, `edgefleet demo`, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


def test_demo_deploys_to_three_agents_and_every_prediction_reaches_the_server(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", "demo", "--work-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo finished" in result.stdout
    ratio = re.search(r"int8, [\d.]+ KiB; ([\d.]+)x the fp32 size", result.stdout)
    assert ratio is not None and float(ratio.group(1)) <= 0.35
    rows = re.findall(r"demo-device-\d .*?digits 1\.0\.0 .*?(\d+) .*?(\d+) .*?(\d+)", result.stdout)
    assert len(rows) == 3
    for sent, _correct, received in rows:
        assert sent == received == "50"
    assert "Traceback" not in result.stderr
