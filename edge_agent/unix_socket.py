"""A Unix domain socket for the local API: bound safely, and an HTTP client for it.

:func:`bind_unix_socket` never takes a path from a live server and never replaces a file that
is not a socket. A stale socket (one left by an agent that died: nobody accepts on it) is
removed. The socket is bound inside a private (0700) directory, given its mode there, then
hard-linked into place, so it is never reachable with looser permissions and two agents
starting at once cannot both take the path (``link`` fails when the name exists).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
"""Owner and group may connect: give the applications that call the agent its group."""


def _check_existing(path: Path) -> None:
    """Remove a stale socket at ``path``; refuse a live one or anything that is not a socket."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise AgentError(f"--socket {path}: the path exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        log.info("removing the stale socket %s (nothing listens on it)", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    except OSError as exc:
        raise AgentError(f"--socket {path}: cannot check the existing socket ({exc})") from exc
    finally:
        probe.close()
    raise AgentError(
        f"--socket {path} is in use by a running server (another agent?); stop it or choose "
        "another path"
    )


@dataclass(frozen=True)
class BoundSocket:
    sock: socket.socket
    path: Path
    inode: tuple[int, int]
    """(st_dev, st_ino) of the socket file, to remove only our own file on close."""

    def remove(self) -> None:
        """Remove the socket file if it is still ours (not a successor's)."""
        with contextlib.suppress(OSError):
            info = self.path.lstat()
            if (info.st_dev, info.st_ino) == self.inode:
                self.path.unlink()


def bind_unix_socket(path: Path, mode: int = SOCKET_MODE) -> BoundSocket:
    """An AF_UNIX socket bound at ``path`` with ``mode``, ready to listen."""
    path = path.absolute()
    if not path.parent.is_dir():
        raise AgentError(f"--socket {path}: the directory {path.parent} does not exist")
    _check_existing(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private = Path(tempfile.mkdtemp(prefix=".edgefleet-sock-", dir=path.parent))
        staged = private / "api.sock"
        try:
            sock.bind(str(staged))
            staged.chmod(mode)
            os.link(staged, path)
            info = path.lstat()
        finally:
            staged.unlink(missing_ok=True)
            private.rmdir()
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EEXIST:
            raise AgentError(
                f"--socket {path}: another process created it while this agent started"
            ) from exc
        raise AgentError(f"--socket {path}: cannot bind ({exc.strerror})") from exc
    return BoundSocket(sock, path, (info.st_dev, info.st_ino))


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` over a Unix domain socket."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
