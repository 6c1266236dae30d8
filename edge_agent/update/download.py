"""Resumable, size-limited artifact download.

The bytes go to ``TARGET.part``; a restart finds the part file and asks for the rest with
``Range: bytes=N-``. A server that answers 206 continues the file; one that answers 200
(no range support) sends it all again and the part file starts over. More bytes than the
desired state announced is an error, never a bigger file.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent.errors import UpdateError

_CHUNK = 1 << 20


class StoppedError(Exception):
    """The agent is stopping; abandon the step without reporting it as failed."""


def artifact_url(server_url: str, artifact_url: str) -> str:
    if artifact_url.startswith(("http://", "https://")):
        return artifact_url
    return server_url.rstrip("/") + "/" + artifact_url.lstrip("/")


def download(
    url: str,
    target: Path,
    *,
    size: int,
    token: str,
    timeout: float,
    stop: threading.Event,
) -> int:
    """Fetch ``url`` into ``target`` (exactly ``size`` bytes); returns the bytes resumed from."""
    if target.exists() and target.stat().st_size == size:
        return size
    part = target.with_suffix(".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    headers = {"Authorization": f"Bearer {token}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    resumed = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status == 206:
                resumed = have
            else:
                have = 0
            received = have
            with part.open("ab" if have else "wb") as out:
                while chunk := response.read(_CHUNK):
                    if stop.is_set():
                        out.flush()
                        os.fsync(out.fileno())
                        raise StoppedError
                    received += len(chunk)
                    if received > size:
                        raise UpdateError(
                            f"download: {url} sent more than the announced {size} bytes"
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # our range is past the end: the part file is stale
            part.unlink(missing_ok=True)
        transient = exc.code >= 500 or exc.code in (408, 416, 429)
        raise UpdateError(
            f"download: HTTP {exc.code} {exc.reason} from {url}", transient=transient
        ) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpdateError(f"download: {url} unreachable ({reason})", transient=True) from exc
    if received != size:
        raise UpdateError(f"download: got {received} of {size} bytes from {url}", transient=True)
    part.replace(target)
    return resumed
