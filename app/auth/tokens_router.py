from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.auth import service
from app.auth.dependencies import CurrentUser
from app.deps import SessionDep
from app.errors import NotFound, Unauthorized

router = APIRouter(prefix="/api/tokens", tags=["users"])


class TokenNotFound(NotFound):
    type = "token-not-found"
    title = "Token not found"


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    expires_in_days: float | None = Field(
        default=None, gt=0, le=3650, description="None: the token does not expire."
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(
        description="The token itself: shown only this once (only its hash is kept)."
    )


_AUTH: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi()}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    operation_id="createToken",
    summary="A new API token for yourself (shown once)",
    responses=_AUTH,
)
async def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> TokenCreated:
    expires_at = None
    if body.expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    token, record = await service.issue_token(session, user, body.name, expires_at=expires_at)
    return TokenCreated(**TokenOut.model_validate(record).model_dump(), token=token)


@router.get(
    "",
    response_model=list[TokenOut],
    operation_id="listTokens",
    summary="Your API tokens (never the tokens themselves)",
    responses=_AUTH,
)
async def list_tokens(user: CurrentUser, session: SessionDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in await service.list_tokens(session, user)]


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revokeToken",
    summary="Revoke one of your tokens (it stops working at once)",
    responses={**_AUTH, **TokenNotFound.openapi()},
)
async def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> Response:
    if await service.revoke_token(session, user, token_id) is None:
        raise TokenNotFound(f"You have no token {token_id}.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
