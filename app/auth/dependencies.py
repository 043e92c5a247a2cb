"""Who is calling: the bearer token of a request, and the ``CurrentUser`` / ``AdminUser``
dependencies the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth.models import User
from app.auth.service import authenticate
from app.deps import SessionDep
from app.errors import Forbidden, Unauthorized


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it holds."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_current_user(request: Request, session: SessionDep) -> User:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("Send an API token as 'Authorization: Bearer <token>'.")
    user = await authenticate(session, token)
    if user is None:
        raise Unauthorized("The API token is unknown or revoked.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user, scope="function")]


async def get_admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("This route needs an admin token.")
    return user


AdminUser = Annotated[User, Depends(get_admin_user, scope="function")]
