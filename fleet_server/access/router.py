"""``/api/v1/tokens``: admins create and list operator tokens (shown once, stored hashed)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from fleet_server.access.tables import OperatorTokenRow, Role
from fleet_server.auth import Admin
from fleet_server.deps import SessionDep
from fleet_server.errors import ConflictError
from fleet_server.tokens import hash_token, new_token

router = APIRouter(prefix="/tokens", tags=["access"], dependencies=[Admin])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: Role


class TokenCreated(BaseModel):
    name: str
    role: Role
    token: str = Field(description="Shown once; the server keeps only its sha256.")


class TokenView(BaseModel):
    name: str
    role: Role
    created_at: float


@router.post("", status_code=201, responses={409: {"description": "Name taken."}})
def create_token(body: TokenCreate, session: SessionDep) -> TokenCreated:
    if session.scalar(select(OperatorTokenRow.id).where(OperatorTokenRow.name == body.name)):
        raise ConflictError(f"an operator token named {body.name!r} already exists")
    token = new_token()
    session.add(
        OperatorTokenRow(
            name=body.name,
            role=body.role.value,
            token_sha256=hash_token(token),
            created_at=time.time(),
        )
    )
    session.commit()
    return TokenCreated(name=body.name, role=body.role, token=token)


@router.get("")
def list_tokens(session: SessionDep) -> list[TokenView]:
    rows = session.scalars(select(OperatorTokenRow).order_by(OperatorTokenRow.name))
    return [TokenView(name=r.name, role=Role(r.role), created_at=r.created_at) for r in rows]
