"""``edgefleet fleet``: run the fleet server, and operate it over its REST API.

Imported by every ``edgefleet`` command, on devices too: nothing heavy at module level.
``serve`` imports FastAPI, SQLAlchemy and uvicorn when it runs; the operator commands speak
HTTP with the standard library (:mod:`fleet_server.client`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from fleet_server.client import DEFAULT_SERVER, FleetClient
from fleet_server.settings import DEFAULT_DATA_DIR

app = typer.Typer(help="Run and operate the fleet server.", no_args_is_help=True)
_console = Console(highlight=False)
_stderr = Console(stderr=True, highlight=False)

ADMIN_TOKEN_ENV = "EDGEFLEET_ADMIN_TOKEN"

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="EDGEFLEET_SERVER", help="Fleet server base URL.")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="EDGEFLEET_TOKEN", help="Operator token (DATA_DIR/admin.token)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="HTTP address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (0 picks a free one).")] = 8000,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Database, artifacts, admin token, trusted keys.")
    ] = DEFAULT_DATA_DIR,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="EDGEFLEET_DATABASE_URL",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
            "(default: the SQLite file DATA_DIR/fleet.db).",
        ),
    ] = None,
    mqtt: Annotated[
        str | None,
        typer.Option("--mqtt", help="Broker URL mqtt://HOST:PORT (default: an embedded broker)."),
    ] = None,
    mqtt_port: Annotated[
        int, typer.Option("--mqtt-port", help="Port of the embedded broker (0 picks a free one).")
    ] = 1883,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            help=f"Operator token (default: ${ADMIN_TOKEN_ENV}, else DATA_DIR/admin.token, "
            "generated on first start).",
        ),
    ] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted-key",
            help="Public key that signs bundles (repeatable); DATA_DIR/trusted_keys/*.pub too.",
        ),
    ] = None,
    executor_interval: Annotated[
        float, typer.Option("--executor-interval", help="Seconds between rollout executor ticks.")
    ] = 1.0,
) -> None:
    """Run the fleet server (REST API, MQTT ingest, embedded broker unless --mqtt is given)."""
    from fleet_server.serve import serve
    from fleet_server.settings import FleetSettings

    token_source = "--admin-token"
    if admin_token is None and os.environ.get(ADMIN_TOKEN_ENV):
        admin_token, token_source = os.environ[ADMIN_TOKEN_ENV], f"${ADMIN_TOKEN_ENV}"
    settings = FleetSettings(
        data_dir=data_dir,
        database_url=database_url,
        mqtt_url=mqtt,
        mqtt_port=mqtt_port,
        admin_token=admin_token,
        trusted_keys=tuple(trusted_key or ()),
        host=host,
        port=port,
        executor_interval_s=executor_interval,
    )
    serve(settings, token_source=token_source)


@app.command("push")
def push_command(
    bundle: Annotated[
        Path, typer.Argument(help="Signed bundle .tar.", exists=True, dir_okay=False, readable=True)
    ],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a signed bundle; the server verifies it before storing it."""
    artifact = FleetClient(server, token).post_file("/models", bundle, "application/x-tar")
    if as_json:
        _print_json(artifact)
        return
    _console.print(
        f"artifact {artifact['artifact_id']}: {artifact['model']} {artifact['version']} "
        f"for {artifact['profile']} ({artifact['precision']}, {artifact['size']} bytes, "
        f"sha256 {artifact['sha256'][:12]}…)"
    )


@app.command("models")
def models_command(
    server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """List registered artifacts."""
    artifacts = FleetClient(server, token).get("/models")
    if as_json:
        _print_json(artifacts)
        return
    table = Table("id", "model", "version", "profile", "precision", "size", "sha256")
    for item in artifacts:
        table.add_row(
            str(item["artifact_id"]),
            item["model"],
            item["version"],
            item["profile"],
            item["precision"],
            str(item["size"]),
            item["sha256"][:12],
        )
    _console.print(table)


@app.command("register")
def register_command(
    device_id: Annotated[str, typer.Argument(help="Device id: letters, digits, '.', '_', '-'.")],
    profile: Annotated[str, typer.Option("--profile", help="Hardware profile tag.")],
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Label KEY=VALUE (repeatable).")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrol a device and print its token (shown once) on stdout."""
    labels = dict(_parse_label(item) for item in label or ())
    created = FleetClient(server, token).post_json(
        "/devices", {"device_id": device_id, "profile": profile, "labels": labels}
    )
    if as_json:
        _print_json(created)
        return
    _stderr.print(f"device {created['device_id']} registered ({profile}); its token:")
    typer.echo(created["token"])


@app.command("devices")
def devices_command(
    server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """List devices with what they report and what they should run."""
    devices = FleetClient(server, token).get("/devices")
    if as_json:
        _print_json(devices)
        return
    widest = max((len(item["device_id"]) for item in devices), default=6)
    table = Table(
        Column("device", no_wrap=True, min_width=widest),
        "profile",
        "online",
        "running",
        "desired",
        "phase",
        "predictions",
    )
    for item in devices:
        table.add_row(
            item["device_id"],
            item["profile"],
            "yes" if item["online"] else "no",
            _model_version(item["reported_model"], item["reported_version"]),
            _model_version(item["desired_model"], item["desired_version"]),
            item["deployment_phase"] or "-",
            str(item["predictions_received"]),
        )
    _console.print(table)


@app.command("device")
def device_command(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one device."""
    item = FleetClient(server, token).get(f"/devices/{device_id}")
    if as_json:
        _print_json(item)
        return
    labels = ", ".join(f"{k}={v}" for k, v in sorted(item["labels"].items())) or "-"
    detail = item["deployment_detail"]
    rows = [
        ("device", item["device_id"]),
        ("profile", item["profile"]),
        ("labels", labels),
        ("online", "yes" if item["online"] else "no"),
        ("last seen", _when(item["last_seen"])),
        ("running", _model_version(item["reported_model"], item["reported_version"])),
        ("desired", _model_version(item["desired_model"], item["desired_version"])),
        ("deployment", (item["deployment_phase"] or "-") + (f" ({detail})" if detail else "")),
        ("predictions", str(item["predictions_received"])),
        ("telemetry", json.dumps(item["last_telemetry"]) if item["last_telemetry"] else "-"),
    ]
    for key, value in rows:
        _console.print(f"{key:<12} {value}")


@app.command("assign")
def assign_command(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    version: Annotated[str, typer.Option("--version", help="Model version.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the model a device should run (the artifact built for its profile)."""
    desired = FleetClient(server, token).put_json(
        f"/devices/{device_id}/desired", {"model": model, "version": version}
    )
    if as_json:
        _print_json(desired)
        return
    _console.print(
        f"{device_id} should run {desired['model']} {desired['version']} "
        f"({desired['artifact_url']}, deployment {desired['deployment_id']})"
    )


def _parse_label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"label {item!r} must be KEY=VALUE", param_hint="--label")
    return key, value


def _model_version(model: str | None, version: str | None) -> str:
    if version is None:
        return "-"
    return f"{model or '?'} {version}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    import datetime

    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


# The operator sub-apps (``edgefleet model | device | cohort | rollout``) are exposed here so
# the CLI root imports only ``fleet_server.cli``; they reuse the commands above.
from fleet_server.operator_cli import cohort_app, device_app, model_app, rollout_app  # noqa: E402

model_app.command("push")(push_command)
device_app.command("ls")(devices_command)

__all__ = ["app", "cohort_app", "device_app", "model_app", "rollout_app"]
