"""Users and API tokens. Tokens are shown once; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiToken, User

TOKEN_PREFIX = "agt_"
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.email == email.lower()))
    return user


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    name: str | None = None,
    tier: str = "free",
    is_admin: bool = False,
) -> User:
    user = User(email=email.lower(), name=name or email.split("@")[0], tier=tier, is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


async def create_token(session: AsyncSession, user: User, name: str = "default") -> str:
    """Store a new token for ``user`` and return it; it cannot be recovered later."""
    token = new_token()
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    await session.flush()
    return token


async def is_token_valid(session: AsyncSession, token: str) -> bool:
    found = await session.scalar(
        select(ApiToken.id).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    return found is not None


async def authenticate(session: AsyncSession, token: str) -> User | None:
    """The user owning an unrevoked ``token``; records its use at most once a minute."""
    row = (
        await session.execute(
            select(User, ApiToken.id, ApiToken.last_used_at)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    user, token_id, last_used_at = row
    now = datetime.now(UTC)
    if last_used_at is None or now - last_used_at > _LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
        )
    return user
