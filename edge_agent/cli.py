"""``edgefleet agent``: run the on-device agent."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, TypeVar

import typer

app = typer.Typer(help="Run the on-device agent.", no_args_is_help=True)

TRUSTED_KEYS_DIR = "trusted_keys"
E = TypeVar("E", bound=StrEnum)


def parse_listen(value: str) -> tuple[str, int]:
    from edge_agent.errors import AgentError

    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise AgentError(f"--listen {value!r} must look like 127.0.0.1:8470 (port 0 picks one)")
    return host, int(port)


def trusted_keys(explicit: list[Path], data_dir: Path) -> list[Path]:
    """--trusted-key files plus data_dir/trusted_keys/*.pub; refuse to run with none."""
    from edge_agent.errors import AgentError

    found = [*explicit, *sorted((data_dir / TRUSTED_KEYS_DIR).glob("*.pub"))]
    if not found:
        raise AgentError(
            "no trusted public key: pass --trusted-key FILE.pub or put one in "
            f"{data_dir / TRUSTED_KEYS_DIR}/; the agent only installs signed bundles"
        )
    return found


def _choice(kind: type[E], value: str, option: str) -> E:
    from edge_agent.errors import AgentError

    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise AgentError(f"{option} {value!r} is not one of: {known}") from None


@app.command("run")
def run(
    server: Annotated[str, typer.Option(help="Fleet server base URL, e.g. http://10.0.0.2:8000.")],
    device_id: Annotated[str, typer.Option("--device-id", help="This device's id.")],
    token: Annotated[
        str, typer.Option(help="Device token from enrolment.", envvar="EDGEFLEET_DEVICE_TOKEN")
    ],
    profile: Annotated[str, typer.Option(help="Hardware profile tag, e.g. raspberry-pi/4b.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="State, models and the outbox.")],
    mqtt: Annotated[
        str | None, typer.Option(help="MQTT broker URL; default: ask the server's /api/v1/info.")
    ] = None,
    listen: Annotated[
        str, typer.Option(help="Local API address; port 0 picks a free port.")
    ] = "127.0.0.1:8470",
    socket: Annotated[
        Path | None,
        typer.Option(
            "--socket", help="Serve the local API on this Unix socket (mode 0660) instead."
        ),
    ] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help="Public key that may sign bundles (repeatable)."),
    ] = None,
    telemetry_interval: Annotated[
        float, typer.Option("--telemetry-interval", min=0.1, help="Seconds between telemetry.")
    ] = 10.0,
    ack_timeout: Annotated[
        float, typer.Option("--ack-timeout", min=0.1, help="Re-send unacknowledged records after.")
    ] = 5.0,
    outbox_mode: Annotated[
        str,
        typer.Option(
            "--outbox-mode",
            help="durable: answer after the record is committed; fast: commit right after.",
        ),
    ] = "durable",
    outbox_max_bytes: Annotated[
        int, typer.Option("--outbox-max-bytes", min=1024, help="Bound on stored records.")
    ] = 256 << 20,
    outbox_policy: Annotated[
        str, typer.Option("--outbox-policy", help="When full: drop_oldest or reject_new.")
    ] = "drop_oldest",
    input_sample_rate: Annotated[
        float,
        typer.Option(
            "--input-sample-rate", min=0.0, max=1.0, help="Share of records that keep the input."
        ),
    ] = 0.0,
    micro_batch: Annotated[
        int,
        typer.Option(
            "--micro-batch",
            min=0,
            max=10_000,
            help="Run concurrent single requests together, up to N examples (0: off).",
        ),
    ] = 0,
    micro_batch_wait_ms: Annotated[
        float,
        typer.Option(
            "--micro-batch-wait-ms", min=0.0, help="Longest wait for a micro-batch to fill."
        ),
    ] = 2.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Serve the active model on a local HTTP API, log and deliver predictions, apply updates."""
    from edge_agent.agent import Agent, AgentConfig
    from edge_agent.memory import limit_arenas
    from edge_agent.outbox import OutboxConfig, OutboxMode, OverflowPolicy
    from edgefleet.bundle import load_verify_key
    from hardware_profiles import load_profile

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("edge_agent.mqtt.paho").setLevel(logging.WARNING)
    keys = tuple(
        load_verify_key(path, isolated=True)  # keeps cryptography out of the agent process
        for path in trusted_keys(trusted_key or [], data_dir)
    )
    config = AgentConfig(
        server_url=server,
        device_id=device_id,
        token=token,
        profile=load_profile(profile),
        data_dir=data_dir,
        trusted_keys=keys,
        mqtt_url=mqtt,
        listen=parse_listen(listen),
        socket=socket,
        telemetry_interval=telemetry_interval,
        ack_timeout=ack_timeout,
        outbox=OutboxConfig(
            mode=_choice(OutboxMode, outbox_mode, "--outbox-mode"),
            max_bytes=outbox_max_bytes,
            policy=_choice(OverflowPolicy, outbox_policy, "--outbox-policy"),
        ),
        input_sample_rate=input_sample_rate,
        micro_batch=micro_batch,
        micro_batch_wait_ms=micro_batch_wait_ms,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("edge_agent").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    limit_arenas()
    agent = Agent(config)
    logging.getLogger("edge_agent").info(
        "agent %s starting (profile %s, %d trusted keys, data %s)",
        device_id,
        config.profile.tag,
        len(keys),
        data_dir,
    )
    agent.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()


@app.command("predict")
def predict(
    input_file: Annotated[
        Path, typer.Option("--input", help="Examples: .npy, .npz (array 'x' or the first), .jsonl.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", help="Write outputs to .npy or .jsonl; default: JSON lines on stdout."
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="The agent's local API address, e.g. 127.0.0.1:8470.")
    ] = None,
    socket: Annotated[
        Path | None, typer.Option("--socket", help="The agent's local API Unix socket.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The agent's data directory (reads its agent.addr)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Examples per request.")
    ] = 64,
) -> None:
    """Predict every example of a file through the running agent's local API."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from edge_agent.batch import AgentClient, OutputWriter, agent_address, read_examples, run_batch

    examples = read_examples(input_file)
    address = agent_address(listen, data_dir, socket)
    writer = OutputWriter(output, None if output is not None else sys.stdout)
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=output is None,
    ) as bar:
        task = bar.add_task(f"predicting {input_file.name}", total=examples.count)
        result = run_batch(
            examples,
            AgentClient(address),
            writer,
            batch_size=batch_size,
            progress=lambda done: bar.update(task, completed=done),
        )
    where = f" -> {result.output}" if result.output is not None else ""
    console.print(
        f"{result.count} examples predicted by {result.model} {result.version}{where}",
        highlight=False,
    )
