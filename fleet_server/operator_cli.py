"""``edgefleet model | device | cohort | rollout``: operate a fleet server over its REST API.

Imported by every ``edgefleet`` command, on devices too: only the standard library client,
typer and rich at module level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from edgefleet.codec import encode
from edgefleet.protocol.messages import HealthPolicy
from fleet_server.cli import JsonOpt, ServerOpt, TokenOpt, _parse_label, _print_json
from fleet_server.client import DEFAULT_SERVER, FleetClient
from fleet_server.errors import FleetClientError

model_app = typer.Typer(
    help="Model registry: push bundles, list versions, set aliases.", no_args_is_help=True
)
device_app = typer.Typer(help="Devices: list, show, enrol, label.", no_args_is_help=True)
cohort_app = typer.Typer(
    help="Cohorts: label selectors that rollouts target.", no_args_is_help=True
)
rollout_app = typer.Typer(
    help="Gated rollouts of a model version to a cohort.", no_args_is_help=True
)
_console = Console(highlight=False)

TERMINAL = {"succeeded", "aborted", "rolled_back"}

# ``model push`` and ``device ls`` are the ``fleet push`` / ``fleet devices`` commands,
# registered on these apps by fleet_server.cli.


@model_app.command("ls")
def model_ls(
    model: Annotated[str | None, typer.Argument(help="A model: its versions and aliases.")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List artifacts, or one model's versions (newest first) and aliases."""
    client = FleetClient(server, token)
    if model is None:
        from fleet_server.cli import models_command

        models_command(server=server, token=token, as_json=as_json)
        return
    view = client.get(f"/models/{model}")
    if as_json:
        _print_json(view)
        return
    aliases: dict[str, list[str]] = {}
    for alias, version in view["aliases"].items():
        aliases.setdefault(version, []).append(alias)
    table = Table("version", "aliases", "profiles", "source sha256")
    for item in view["versions"]:
        lineage = item["artifacts"][0]["lineage"] if item["artifacts"] else {}
        table.add_row(
            item["version"],
            ", ".join(sorted(aliases.get(item["version"], []))) or "-",
            ", ".join(a["profile"] for a in item["artifacts"]),
            str(lineage.get("source_model_sha256", "-"))[:12],
        )
    _console.print(table)


@model_app.command("alias")
def model_alias(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    version: Annotated[str, typer.Argument(help="Version the alias points to.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Point an alias at a version."""
    FleetClient(server, token).put_json(f"/models/{model}/aliases/{alias}", {"version": version})
    _console.print(f"{model} {alias} -> {version}")


@device_app.command("show")
def device_show(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one device."""
    from fleet_server.cli import device_command

    device_command(device_id, server=server, token=token, as_json=as_json)


@device_app.command("label")
def device_label(
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="KEY (repeatable).")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Set or remove labels (cohort membership follows)."""
    labels = dict(_parse_label(item) for item in set_ or ())
    view = FleetClient(server, token).patch_json(
        f"/devices/{device_id}/labels", {"set": labels, "remove": list(remove or ())}
    )
    _console.print(", ".join(f"{k}={v}" for k, v in sorted(view["labels"].items())) or "-")


@device_app.command("enrolment-token")
def device_enrolment_token(
    name: Annotated[str, typer.Argument(help="A name for the token.")],
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE given to devices.")
    ] = None,
    max_uses: Annotated[int | None, typer.Option("--max-uses")] = None,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Seconds until it expires.")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Create an enrolment token (printed once on stdout) that devices trade at POST /enrol."""
    created = FleetClient(server, token).post_json(
        "/enrolment-tokens",
        {
            "name": name,
            "labels": dict(_parse_label(i) for i in label or ()),
            "max_uses": max_uses,
            "ttl_s": ttl,
        },
    )
    typer.echo(created["token"])


@cohort_app.command("create")
def cohort_create(
    name: Annotated[str, typer.Argument(help="Cohort name.")],
    select: Annotated[list[str], typer.Option("--select", help="Label KEY=VALUE (repeatable).")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a cohort from an equality label selector."""
    selector = dict(_parse_label(item) for item in select)
    view = FleetClient(server, token).post_json("/cohorts", {"name": name, "selector": selector})
    if as_json:
        _print_json(view)
        return
    _console.print(f"cohort {view['name']}: {len(view['devices'])} device(s) match {selector}")


@cohort_app.command("ls")
def cohort_ls(
    server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """List cohorts with their selector, size and current version."""
    cohorts = FleetClient(server, token).get("/cohorts")
    if as_json:
        _print_json(cohorts)
        return
    table = Table("cohort", "selector", "devices", "current")
    for item in cohorts:
        table.add_row(
            item["name"],
            ", ".join(f"{k}={v}" for k, v in sorted(item["selector"].items())),
            str(len(item["devices"])),
            f"{item['current_model']} {item['current_version']}"
            if item["current_version"]
            else "-",
        )
    _console.print(table)


def _strategy(
    kind: str, waves: str, bake: float, timeout: float, gates: dict[str, Any], min_agreement: float
) -> dict[str, Any]:
    if kind == "all-at-once":
        return {"kind": "all_at_once", "bake_s": bake, "timeout_s": timeout, "gates": gates}
    steps = []
    for part in (p.strip() for p in waves.split(",") if p.strip()):
        size = (
            {"kind": "percent", "value": float(part[:-1])}
            if part.endswith("%")
            else {"kind": "count", "value": int(part)}
        )
        steps.append({"size": size, "bake_s": bake, "timeout_s": timeout})
    if kind == "canary":
        return {"kind": "canary", "waves": steps, "gates": gates}
    if kind == "shadow":
        return {
            "kind": "shadow_then_promote",
            "shadow": {
                "size": {"kind": "percent", "value": 100},
                "bake_s": bake,
                "timeout_s": timeout,
            },
            "min_agreement": min_agreement,
            "promote": steps,
            "gates": gates,
        }
    raise typer.BadParameter(
        f"strategy {kind!r}: use all-at-once, canary or shadow", param_hint="--strategy"
    )


@rollout_app.command("start")
def rollout_start(
    cohort: Annotated[str, typer.Option("--cohort", help="Target cohort.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    version: Annotated[str, typer.Option("--version", help="Version or alias.")],
    strategy: Annotated[
        str, typer.Option("--strategy", help="all-at-once | canary | shadow")
    ] = "canary",
    waves: Annotated[
        str, typer.Option("--waves", help="Cumulative: '10%,50%,100%' or counts '5,20'.")
    ] = "10%,50%,100%",
    bake: Annotated[float, typer.Option("--bake", help="Bake time per wave, seconds.")] = 60.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Device timeout per wave, s.")
    ] = 600.0,
    min_installed: Annotated[float, typer.Option("--min-installed")] = 0.9,
    max_error_rate: Annotated[float | None, typer.Option("--max-error-rate")] = 0.01,
    max_latency_ratio: Annotated[float | None, typer.Option("--max-latency-ratio")] = 1.5,
    max_drift: Annotated[float | None, typer.Option("--max-drift")] = None,
    min_agreement: Annotated[float, typer.Option("--min-agreement")] = 0.95,
    abort_failed: Annotated[
        float, typer.Option("--abort-failed", help="Abort at this failed share.")
    ] = 0.2,
    strategy_file: Annotated[
        Path | None, typer.Option("--strategy-file", help="Full strategy JSON.")
    ] = None,
    approval: Annotated[bool, typer.Option("--require-approval", help="Wait for approve.")] = False,
    health_window: Annotated[
        float, typer.Option("--health-window", help="Device validation window, seconds.")
    ] = HealthPolicy().window_s,
    health_min_requests: Annotated[
        int, typer.Option("--health-min-requests", help="Requests a device waits for.")
    ] = HealthPolicy().min_requests,
    health_max_error_rate: Annotated[
        float, typer.Option("--health-max-error-rate", help="Device rolls back above this.")
    ] = HealthPolicy().max_error_rate,
    health_max_latency_ratio: Annotated[
        float | None,
        typer.Option("--health-max-latency-ratio", help="p95 new/old above which it rolls back."),
    ] = HealthPolicy().max_latency_ratio,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a rollout of a model version to a cohort.

    Wave gates (--max-*, --min-*) judge a wave on the server; --health-* set the window in
    which each device judges the new model by itself and rolls back without waiting.
    """
    health = HealthPolicy(
        window_s=health_window,
        min_requests=health_min_requests,
        max_error_rate=health_max_error_rate,
        max_latency_ratio=health_max_latency_ratio,
    )
    success: list[dict[str, Any]] = [{"kind": "installed", "min_fraction": min_installed}]
    if max_error_rate is not None:
        success.append({"kind": "error_rate", "max": max_error_rate})
    if max_latency_ratio is not None:
        success.append({"kind": "latency_ratio", "max": max_latency_ratio})
    if max_drift is not None:
        success.append({"kind": "drift", "max": max_drift})
    gates = {"success": success, "abort": [{"kind": "failed_fraction", "min": abort_failed}]}
    if strategy_file is not None:
        spec = json.loads(strategy_file.read_text())
    else:
        spec = _strategy(strategy, waves, bake, timeout, gates, min_agreement)
    view = FleetClient(server, token).post_json(
        "/rollouts",
        {
            "cohort": cohort,
            "model": model,
            "version": version,
            "strategy": spec,
            "health": encode(health),
            "require_approval": approval,
        },
    )
    if as_json:
        _print_json(view)
        return
    _console.print(
        f"rollout {view['id']}: {model} {view['version']} to {cohort} "
        f"({len(view['waves'])} wave(s)), {view['status']}"
    )


def _render(view: dict[str, Any]) -> Group:
    head = Text.assemble(
        (f"rollout {view['id']} ", "bold"),
        f"{view['model']} {view['previous_version'] or '-'} -> {view['version']} ",
        f"on {view['cohort']}: ",
        (view["status"], "bold green" if view["status"] == "succeeded" else "bold yellow"),
        f"  {view['detail']}",
    )
    table = Table("wave", "mode", "status", "devices", "installed", "gates")
    for wave in view["waves"]:
        metrics = wave["metrics"] or {}
        done, total = (
            metrics.get("installed", 0),
            metrics.get("with_artifact", 0) or wave["target_devices"],
        )
        gates = (
            ", ".join(f"{g['gate']} {'ok' if g['ok'] else 'FAIL'}" for g in wave["gates"] or [])
            or "-"
        )
        table.add_row(
            str(wave["index"] + 1),
            "shadow" if wave["shadow"] else "install",
            wave["status"],
            str(wave["target_devices"]),
            ProgressBar(total=max(total, 1), completed=done, width=20) if total else Text("-"),
            gates,
        )
    counts = Text("devices: " + ", ".join(f"{k} {v}" for k, v in sorted(view["counts"].items())))
    parts: list[Any] = [head, table, counts]
    if view["no_artifact"]:
        parts.append(
            Text("no artifact for: " + ", ".join(d["device_id"] for d in view["no_artifact"]))
        )
    return Group(*parts)


@rollout_app.command("status")
def rollout_status(
    rollout_id: Annotated[
        int | None, typer.Argument(help="Rollout id (default: list them).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Live view until the rollout ends.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Refresh, seconds.")] = 1.0,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a rollout (waves, gates, devices); --watch follows it live."""
    client = FleetClient(server, token)
    if rollout_id is None:
        rollouts = client.get("/rollouts")
        if as_json:
            _print_json(rollouts)
            return
        table = Table("id", "cohort", "model", "version", "status", "wave")
        for item in rollouts:
            table.add_row(
                str(item["id"]),
                item["cohort"],
                item["model"],
                item["version"],
                item["status"],
                f"{min(item['current_wave'] + 1, len(item['waves']))}/{len(item['waves'])}",
            )
        _console.print(table)
        return
    view = client.get(f"/rollouts/{rollout_id}")
    if as_json and not watch:
        _print_json(view)
        return
    if not watch:
        _console.print(_render(view))
        return
    with Live(_render(view), console=_console, refresh_per_second=4) as live:
        while view["status"] not in TERMINAL:
            time.sleep(interval)
            view = client.get(f"/rollouts/{rollout_id}")
            live.update(_render(view))
    if view["status"] != "succeeded":
        raise FleetClientError(f"rollout {rollout_id} ended {view['status']}: {view['detail']}")


def _action(name: str, path: str, help_text: str) -> None:
    def command(
        rollout_id: Annotated[int, typer.Argument(help="Rollout id.")],
        server: ServerOpt = DEFAULT_SERVER,
        token: TokenOpt = None,
    ) -> None:
        view = FleetClient(server, token).post_json(f"/rollouts/{rollout_id}/{path}", None)
        _console.print(f"rollout {rollout_id}: {view['status']}")

    command.__doc__ = help_text
    rollout_app.command(name)(command)


for _name, _path, _help in (
    ("approve", "approve", "Approve a rollout that waits for approval."),
    ("pause", "pause", "Pause a rollout (no new wave starts)."),
    ("resume", "resume", "Resume a paused rollout (past a failed gate: the next wave)."),
    ("abort", "abort", "Abort: stop here, devices keep what they run."),
    (
        "rollback",
        "rollback",
        "Roll back: every device of the rollout returns to the previous version.",
    ),
):
    _action(_name, _path, _help)
