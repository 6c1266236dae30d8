"""Write, sign, pack, unpack and verify artifact bundles.

A bundle is a directory (or a ``.tar`` of one) holding the model file(s), ``golden.npz``,
``manifest.json`` and ``signature.json``. ``manifest.json`` is written in canonical form
(sorted keys, no whitespace) and the signature covers its exact bytes, so any change to it,
or to any file it lists, is detected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgefleet.bundle.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    Signature,
)
from edgefleet.bundle.signing import SigningKey, VerifyKey
from edgefleet.codec import DecodeError, from_json, to_json
from edgefleet.errors import EdgefleetError

_META_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
_CHUNK = 1 << 20
_M = TypeVar("_M", Manifest, Signature)


class BundleError(EdgefleetError):
    """A bundle failed a check. ``file`` names the file at fault, relative to the bundle."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    manifest: Manifest
    key_id: str
    checks: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def golden_path(self) -> Path:
        return self.path / self.manifest.golden.file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def seal_bundle(directory: Path, manifest: Manifest, key: SigningKey) -> Manifest:
    """Hash every file in ``directory``, write the manifest and sign it. Returns the manifest."""
    files = {
        rel: FileEntry(sha256=sha256_file(directory / rel), size=(directory / rel).stat().st_size)
        for rel in _payload_files(directory)
    }
    for required in (manifest.model_file, manifest.golden.file):
        if required not in files:
            raise BundleError(required, "named in the manifest but not in the bundle directory")
    sealed = dataclasses.replace(manifest, files=files)
    data = sealed.canonical_bytes()
    (directory / MANIFEST_FILE).write_bytes(data)
    signature = Signature(key_id=key.key_id, signature=key.sign(data))
    (directory / SIGNATURE_FILE).write_text(to_json(signature, indent=2) + "\n")
    return sealed


def verify_bundle(directory: Path, keys: Sequence[VerifyKey]) -> VerifiedBundle:
    """Check signature, hashes and file list. Raises :class:`BundleError` naming the file."""
    if not directory.is_dir():
        raise BundleError(str(directory), "not a bundle directory")
    if not keys:
        raise BundleError(SIGNATURE_FILE, "no trusted public key was given to verify against")
    checks: list[str] = []
    manifest_bytes = _read_meta(directory, MANIFEST_FILE)
    signature = _parse(Signature, SIGNATURE_FILE, _read_meta(directory, SIGNATURE_FILE))
    trusted = {key.key_id: key for key in keys}
    key = trusted.get(signature.key_id)
    if key is None:
        raise BundleError(
            SIGNATURE_FILE,
            f"signed by key {signature.key_id}, which is not trusted "
            f"(trusted: {', '.join(sorted(trusted))})",
        )
    if not key.verify(manifest_bytes, signature.signature):
        raise BundleError(MANIFEST_FILE, f"signature by key {key.key_id} does not match")
    checks.append(f"signature: ed25519, key {key.key_id}, valid over {MANIFEST_FILE}")
    manifest = _parse(Manifest, MANIFEST_FILE, manifest_bytes)
    present = set(_payload_files(directory))
    for rel, entry in sorted(manifest.files.items()):
        if rel not in present:
            raise BundleError(rel, "listed in the manifest but missing")
        actual = sha256_file(directory / rel)
        if actual != entry.sha256:
            raise BundleError(
                rel, f"sha256 mismatch (manifest {entry.sha256[:12]}…, file {actual[:12]}…)"
            )
        checks.append(f"{rel}: sha256 {actual[:12]}… ok ({entry.size} bytes)")
    extra = sorted(present - set(manifest.files))
    if extra:
        raise BundleError(extra[0], "not listed in the manifest")
    for required in (manifest.model_file, manifest.golden.file):
        if required not in manifest.files:
            raise BundleError(required, "named by the manifest but not listed in its files")
    checks.append(f"files: {len(manifest.files)} listed, none missing, none extra")
    return VerifiedBundle(
        path=directory, manifest=manifest, key_id=key.key_id, checks=tuple(checks)
    )


def pack_bundle(directory: Path, tar_path: Path) -> Path:
    """Write a deterministic, uncompressed tar of the bundle directory."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted([*_payload_files(directory), *(_META_FILES & _names(directory))]):
            data = (directory / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def unpack_bundle(tar_path: Path, dest: Path, *, max_bytes: int = 2 << 30) -> Path:
    """Extract a bundle tar safely: regular files only, no absolute or parent paths."""
    name = tar_path.name
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                if not member.isfile():
                    raise BundleError(name, f"entry {member.name!r} is not a regular file")
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts or not parts:
                    raise BundleError(name, f"entry {member.name!r} has an unsafe path")
                total += member.size
                if total > max_bytes:
                    raise BundleError(name, f"unpacks to more than {max_bytes} bytes")
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for member in members:
                source = tar.extractfile(member)
                if source is None:
                    raise BundleError(name, f"entry {member.name!r} cannot be read")
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(name, f"not a valid bundle tar archive ({exc})") from exc
    return dest


def _payload_files(directory: Path) -> list[str]:
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).as_posix() not in _META_FILES
    )


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def _read_meta(directory: Path, name: str) -> bytes:
    path = directory / name
    if not path.is_file():
        raise BundleError(name, "missing")
    return path.read_bytes()


def _parse(model: type[_M], name: str, data: bytes) -> _M:
    try:
        return from_json(model, data)
    except DecodeError as exc:
        raise BundleError(name, str(exc)) from exc
