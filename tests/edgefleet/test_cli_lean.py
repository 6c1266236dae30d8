"""`edgefleet agent run` is parsed by argparse from its typer signature: same values as typer,
the same refusals, and no pydantic in the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main

from edge_agent.cli import app as agent_app
from edge_agent.cli import run
from edgefleet.cli.lean import lean_command, parse

BASE = [
    "--server", "http://127.0.0.1:9", "--device-id", "dev-1", "--token", "t0k3n",
    "--profile", "x86-64/avx512-vnni", "--data-dir", "/var/lib/edgefleet",
]  # fmt: skip

COMMAND_LINES = [
    BASE,
    [*BASE, "--mqtt", "mqtt://broker:1883", "--listen", "0.0.0.0:8000", "-v"],
    [*BASE, "--trusted-key", "a.pub", "--trusted-key", "b.pub", "--socket", "/run/agent.sock"],
    [*BASE, "--telemetry-interval", "0.5", "--ack-timeout", "2", "--outbox-mode", "fast"],
    [*BASE, "--outbox-max-bytes", "4096", "--outbox-policy", "reject_new", "--verbose"],
    [*BASE, "--input-sample-rate", "0.25", "--micro-batch", "16", "--micro-batch-wait-ms", "1"],
    # tokens are URL-safe base64: one may start with '-', and must still be the value
    [*BASE[:4], "--token", "-Xf3_q", *BASE[6:], "--listen", "127.0.0.1:0"],
    [*BASE[:4], "--token", "--Xf3", *BASE[6:]],
]


def typer_values(argv: list[str]) -> dict[str, Any]:
    command = typer.main.get_command(agent_app).commands["run"]  # type: ignore[attr-defined]
    with command.make_context("run", list(argv)) as context:
        return dict(context.params)


@pytest.mark.parametrize("argv", COMMAND_LINES)
def test_the_same_values_as_typer(argv: list[str]) -> None:
    expected = typer_values(argv)
    expected["trusted_key"] = expected["trusted_key"] or None  # typer: () when never given
    assert parse(run, argv, "edgefleet agent run") == expected


def test_the_token_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [arg for arg in BASE if arg not in ("--token", "t0k3n")]
    monkeypatch.setenv("EDGEFLEET_DEVICE_TOKEN", "from-env")
    assert parse(run, argv, "x")["token"] == "from-env" == typer_values(argv)["token"]
    assert parse(run, [*argv, "--token", "flag"], "x")["token"] == "flag"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--telemetry-interval", "0.01"], "--telemetry-interval: 0.01 is not in the range 0.1.."),
        (["--micro-batch", "20000"], "--micro-batch: 20000 is not in the range 0..10000"),
        (["--micro-batch", "many"], "argument --micro-batch: invalid int value: 'many'"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
    ],
)
def test_a_bad_command_line_exits_2_naming_the_option(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(run, [*BASE, *extra], "edgefleet agent run")
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("edgefleet agent run: error: ")
    assert err.count("\n") == 1


def test_a_missing_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(run, BASE[2:], "edgefleet agent run")
    assert "the following arguments are required: --server" in capsys.readouterr().err


def test_only_agent_run_is_parsed_here_and_help_goes_to_typer() -> None:
    assert lean_command(["agent", "predict", "--input", "x.npy"]) is None
    assert lean_command(["agent", "run", "--help"]) is None
    assert lean_command(["profiles", "list"]) is None
    assert lean_command(["agent", "run", *BASE]) is not None


def test_an_option_kind_it_cannot_parse_is_refused() -> None:
    def command(when: Annotated[complex, typer.Option()]) -> None:
        del when

    with pytest.raises(TypeError, match="--when"):
        parse(command, ["--when", "1j"], "x")


def test_agent_run_parses_without_loading_pydantic(tmp_path: Path) -> None:
    """Through the real `python -m edgefleet` entry point: the run refuses for want of a
    trusted key, after its options were parsed and the agent's modules imported."""
    code = (
        "import sys\n"
        "from edgefleet.cli import main\n"
        f"sys.argv = ['edgefleet', 'agent', 'run', *{BASE[:-1]!r}, {str(tmp_path)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, sorted(m for m in sys.modules if m.startswith('pydantic')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "1 []"
    assert "no trusted public key" in result.stderr
