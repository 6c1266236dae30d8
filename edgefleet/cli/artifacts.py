"""``edgefleet keys`` and ``edgefleet bundle``: signing keys and bundle verification."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefleet.bundle import generate_key_pair, load_verify_key, unpack_bundle, verify_bundle

keys_app = typer.Typer(help="Signing keys for bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Inspect and verify artifact bundles.", no_args_is_help=True)
_console = Console(highlight=False)


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option(help="Directory for NAME.key and NAME.pub.")] = Path("keys"),
    name: Annotated[str, typer.Option(help="File name stem of the key pair.")] = "edgefleet",
) -> None:
    """Make an ed25519 key pair: NAME.key signs bundles, NAME.pub verifies them."""
    private_path, public_path = generate_key_pair(out, name)
    key_id = load_verify_key(public_path).key_id
    _console.print(f"private key  {private_path}  (keep secret; the compiler signs with it)")
    _console.print(f"public key   {public_path}  (give to the fleet server and devices)")
    _console.print(f"key id       {key_id}")


@bundle_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Bundle directory or .tar file.")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key (repeatable).")],
) -> None:
    """Check a bundle's signature and every file's sha256; exit 1 on any failure."""
    keys = [load_verify_key(k) for k in key]
    if path.is_file():
        with tempfile.TemporaryDirectory(prefix="edgefleet-verify-") as tmp:
            _report(path, verify_bundle(unpack_bundle(path, Path(tmp) / "bundle"), keys).checks)
    else:
        _report(path, verify_bundle(path, keys).checks)


def _report(path: Path, checks: tuple[str, ...]) -> None:
    _console.print(f"[bold]{path}[/]")
    for line in checks:
        _console.print(f"  [green]ok[/] {line}")
    _console.print("[bold green]bundle verified[/]")
