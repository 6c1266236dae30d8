"""Tokens: the operator's admin token and per-device tokens (stored only as sha256).

The admin token is given to the process (flag or environment) or generated once into
``data_dir/admin.token`` with mode 0600. Device tokens are random and shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from fleet_server.errors import ConfigError
from fleet_server.settings import FleetSettings

MIN_TOKEN_LENGTH = 8


@dataclass(frozen=True)
class AdminToken:
    value: str
    file: str | None  # where it is stored, or None when it was given to the process

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.value.encode())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def resolve_admin_token(settings: FleetSettings) -> AdminToken:
    """The given token, else the one in ``data_dir/admin.token``, created (0600) if absent."""
    if settings.admin_token is not None:
        return AdminToken(settings.admin_token, None)
    path = settings.admin_token_file
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(new_token() + "\n")
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read or create the admin token ({exc.strerror})"
        ) from exc
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{path}: the admin token must be at least {MIN_TOKEN_LENGTH} characters")
    return AdminToken(token, str(path.resolve()))
