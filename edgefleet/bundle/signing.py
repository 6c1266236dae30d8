"""ed25519 signing keys: generate, save, load, sign, verify. A key id names a public key.

``cryptography`` (with its own OpenSSL, ~10 MiB resident) is imported only to sign, to
generate keys and to check a signature. A public key is read from its PEM file without it
(an ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix and the 32 key bytes), so a
process that holds trusted keys costs nothing until it verifies. A long-running process that
must not keep the library resident at all (the edge agent) loads its keys with
``isolated=True``: each verification then runs in a short-lived child process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.errors import EdgefleetError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# DER of SubjectPublicKeyInfo{AlgorithmIdentifier{id-Ed25519}, BIT STRING(32 bytes)}.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_PUBLIC = ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----")
_VERIFY_TIMEOUT_S = 60.0

# The child of an isolated verification: key, signature and data on stdin, one per line
# (base64); exit status 0 when the signature is valid, _INVALID when it is not, anything
# else (an import error's 1, say) when it could not check.
_INVALID = 3
_VERIFY_CHILD = f"""
import base64, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
raw, signature, data = (base64.b64decode(line) for line in sys.stdin.read().split())
try:
    Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
except (InvalidSignature, ValueError):
    sys.exit({_INVALID})
"""


class SigningKeyError(EdgefleetError):
    """A key file is missing or not an ed25519 key."""


def key_id_of(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey

    @property
    def public(self) -> VerifyKey:
        from cryptography.hazmat.primitives import serialization

        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifyKey(raw)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private_key.sign(data)).decode()


@dataclass(frozen=True)
class VerifyKey:
    """An ed25519 public key (its 32 raw bytes). ``isolated``: verify in a child process."""

    raw: bytes
    isolated: bool = False

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    def verify(self, data: bytes, signature_b64: str) -> bool:
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            return False
        if self.isolated:
            return _verify_in_child(self.raw, signature, data)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def _verify_in_child(raw: bytes, signature: bytes, data: bytes) -> bool:
    payload = b"\n".join(base64.b64encode(part) for part in (raw, signature, data))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _VERIFY_CHILD],
            input=payload,
            capture_output=True,
            timeout=_VERIFY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SigningKeyError(f"cannot run the signature check ({exc})") from exc
    if done.returncode not in (0, _INVALID):
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SigningKeyError(f"the signature check failed to run: {reason[0]}")
    return done.returncode == 0


def generate_key_pair(out_dir: Path, name: str = "edgefleet") -> tuple[Path, Path]:
    """Write NAME.key (private, mode 0600) and NAME.pub into out_dir; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_signing_key(path: Path) -> SigningKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an ed25519 private key")
    return SigningKey(key)


def load_verify_key(path: Path, *, isolated: bool = False) -> VerifyKey:
    """Read a PEM ed25519 public key (SubjectPublicKeyInfo), without ``cryptography``."""
    der = _pem_body(path, _read_key_file(path))
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise SigningKeyError(f"{path}: not an ed25519 public key")
    return VerifyKey(der[len(_ED25519_SPKI_PREFIX) :], isolated=isolated)


def _pem_body(path: Path, data: bytes) -> bytes:
    begin, end = _PEM_PUBLIC
    text = data.decode("ascii", errors="replace").strip()
    if not (text.startswith(begin) and text.endswith(end)):
        raise SigningKeyError(f"{path}: not a PEM public key (no {begin} ... {end} block)")
    body = "".join(text[len(begin) : -len(end)].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{path}: not a PEM public key (bad base64: {exc})") from exc


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read key file ({exc.strerror})") from exc
