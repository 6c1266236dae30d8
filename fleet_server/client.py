"""A small REST client for the operator CLI, on the standard library only.

The CLI module is imported by every ``edgefleet`` command, on devices too, so this module
must not pull in httpx or anything heavy. Every failure becomes one :class:`FleetClientError`
line that carries the server's ``detail``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fleet_server.errors import FleetClientError

DEFAULT_SERVER = "http://127.0.0.1:8000"
API = "/api/v1"


class FleetClient:
    def __init__(
        self, server: str = DEFAULT_SERVER, token: str | None = None, *, timeout: float = 300.0
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post_json(self, path: str, body: Any) -> Any:
        return self._request("POST", path, json.dumps(body).encode(), "application/json")

    def patch_json(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, json.dumps(body).encode(), "application/json")

    def put_json(self, path: str, body: Any) -> Any:
        return self._request("PUT", path, json.dumps(body).encode(), "application/json")

    def post_file(self, path: str, file: Path, content_type: str) -> Any:
        try:
            size = file.stat().st_size
            with file.open("rb") as handle:
                return self._request("POST", path, handle, content_type, length=size)
        except OSError as exc:
            raise FleetClientError(f"{file}: cannot read ({exc.strerror})") from exc

    def _request(
        self,
        method: str,
        path: str,
        data: Any = None,
        content_type: str | None = None,
        *,
        length: int | None = None,
    ) -> Any:
        url = f"{self.server}{API}{path}"
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        if length is not None:
            headers["Content-Length"] = str(length)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise FleetClientError(self._http_error(exc)) from None
        except urllib.error.URLError as exc:
            raise FleetClientError(
                f"cannot reach the fleet server at {self.server} ({exc.reason}); "
                "is `edgefleet fleet serve` running? Set --server or EDGEFLEET_SERVER"
            ) from None
        except TimeoutError:
            raise FleetClientError(
                f"the fleet server at {self.server} did not answer in time"
            ) from None
        return json.loads(body) if body else None

    def _http_error(self, exc: urllib.error.HTTPError) -> str:
        message = f"the fleet server answered {exc.code}: {_detail(exc.read())}"
        if exc.code == 401 and not self.token:
            message += (
                " (pass --token or set EDGEFLEET_TOKEN; the admin token is in DATA_DIR/admin.token)"
            )
        return message


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode(errors="replace").strip()[:500] or "(no detail)"
    detail = data.get("detail") if isinstance(data, dict) else data
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI request validation errors
        return "; ".join(_validation_item(item) for item in detail) or "invalid request"
    return json.dumps(detail)


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", []) if part != "body"]
    return f"{'.'.join(loc) or 'request'}: {item.get('msg', 'invalid')}"
