"""FastAPI dependencies that say who may call: operators by role, or a registered device.

Roles are ordered ``viewer < operator < admin``. The admin token given to the process (flag,
environment or ``data_dir/admin.token``) is always ``admin``; further operator tokens are
created by an admin (``POST /api/v1/tokens``) and stored as sha256 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from fleet_server.access.tables import OperatorTokenRow, Role
from fleet_server.deps import RuntimeDep, SessionDep
from fleet_server.devices.tables import DeviceRow
from fleet_server.errors import ForbiddenError, UnauthorizedError
from fleet_server.tokens import hash_token

_bearer = HTTPBearer(auto_error=False, description="An operator token or a device token.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


def token_of(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise UnauthorizedError("missing token: send the header 'Authorization: Bearer <token>'")
    return credentials.credentials


def identify(token: str, runtime: Any, session: Any) -> Caller | None:
    if runtime.admin_token.matches(token):
        return Caller("admin", Role.ADMIN)
    row = session.scalar(
        select(OperatorTokenRow).where(OperatorTokenRow.token_sha256 == hash_token(token))
    )
    return None if row is None else Caller(row.name, Role(row.role))


def require(role: Role) -> Callable[..., Caller]:
    def dependency(credentials: BearerDep, runtime: RuntimeDep, session: SessionDep) -> Caller:
        caller = identify(token_of(credentials), runtime, session)
        if caller is None:
            raise UnauthorizedError(
                "the token is not the operator (admin) token nor another operator token"
            )
        if not caller.role.allows(role):
            raise ForbiddenError(f"operator {caller.name!r} is a {caller.role}; this needs {role}")
        return caller

    return dependency


def require_operator_or_device(
    credentials: BearerDep, runtime: RuntimeDep, session: SessionDep
) -> None:
    token = token_of(credentials)
    if identify(token, runtime, session) is not None:
        return
    found = session.scalar(
        select(DeviceRow.device_id).where(DeviceRow.token_sha256 == hash_token(token))
    )
    if found is None:
        raise UnauthorizedError("the token is neither the operator token nor a registered device's")


Viewer = Depends(require(Role.VIEWER))
Operator = Depends(require(Role.OPERATOR))
Admin = Depends(require(Role.ADMIN))
OperatorOrDevice = Depends(require_operator_or_device)
OperatorCaller = Annotated[Caller, Depends(require(Role.OPERATOR))]
BearerToken = BearerDep
