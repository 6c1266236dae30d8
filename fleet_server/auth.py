"""FastAPI dependencies that say who may call: the operator, or a registered device."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from fleet_server.deps import RuntimeDep, SessionDep
from fleet_server.devices.tables import DeviceRow
from fleet_server.errors import UnauthorizedError
from fleet_server.tokens import hash_token

_bearer = HTTPBearer(auto_error=False, description="The operator (admin) token or a device token.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise UnauthorizedError("missing token: send the header 'Authorization: Bearer <token>'")
    return credentials.credentials


def require_operator(credentials: BearerDep, runtime: RuntimeDep) -> None:
    if not runtime.admin_token.matches(_token(credentials)):
        raise UnauthorizedError("the token is not the operator (admin) token")


def require_operator_or_device(
    credentials: BearerDep, runtime: RuntimeDep, session: SessionDep
) -> None:
    token = _token(credentials)
    if runtime.admin_token.matches(token):
        return
    found = session.scalar(
        select(DeviceRow.device_id).where(DeviceRow.token_sha256 == hash_token(token))
    )
    if found is None:
        raise UnauthorizedError("the token is neither the operator token nor a registered device's")


Operator = Depends(require_operator)
OperatorOrDevice = Depends(require_operator_or_device)
