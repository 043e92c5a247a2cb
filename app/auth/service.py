"""Users and API tokens. Tokens are shown once; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.models import ApiToken, User

TOKEN_PREFIX = "agt_"
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await repository.find_user(session, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await repository.find_user_by_email(session, email.lower())


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    name: str | None = None,
    tier: str = "free",
    is_admin: bool = False,
) -> User:
    user = User(email=email.lower(), name=name or email.split("@")[0], tier=tier, is_admin=is_admin)
    return await repository.add_user(session, user)


async def create_token(session: AsyncSession, user: User, name: str = "default") -> str:
    """Store a new token for ``user`` and return it; it cannot be recovered later."""
    token = new_token()
    await repository.add_token(
        session, ApiToken(user_id=user.id, name=name, token_hash=hash_token(token))
    )
    return token


async def is_token_valid(session: AsyncSession, token: str) -> bool:
    return await repository.find_token_owner(session, hash_token(token)) is not None


async def authenticate(session: AsyncSession, token: str) -> User | None:
    """The user owning an unrevoked ``token``; records its use at most once a minute."""
    owner = await repository.find_token_owner(session, hash_token(token))
    if owner is None:
        return None
    now = datetime.now(UTC)
    if owner.last_used_at is None or now - owner.last_used_at > _LAST_USED_RESOLUTION:
        await repository.record_token_use(session, owner.token_id, now)
    return owner.user
