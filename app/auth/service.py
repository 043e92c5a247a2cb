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


async def create_token(
    session: AsyncSession, user: User, name: str = "default", *, expires_at: datetime | None = None
) -> str:
    """Store a new token for ``user`` and return it; it cannot be recovered later."""
    token, _ = await issue_token(session, user, name, expires_at=expires_at)
    return token


async def issue_token(
    session: AsyncSession, user: User, name: str, *, expires_at: datetime | None = None
) -> tuple[str, ApiToken]:
    """A new token (shown once) and its stored record."""
    token = new_token()
    record = ApiToken(
        user_id=user.id, name=name, token_hash=hash_token(token), expires_at=expires_at
    )
    await repository.add_token(session, record)
    return token, record


async def list_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    return await repository.list_tokens(session, user.id)


async def revoke_token(session: AsyncSession, user: User, token_id: int) -> ApiToken | None:
    """Revoke one of ``user``'s tokens; None if they have no such token."""
    token = await repository.get_token(session, token_id, user.id)
    if token is not None:
        await repository.revoke(session, [token], datetime.now(UTC))
    return token


async def revoke_named_tokens(session: AsyncSession, user: User, name: str | None) -> int:
    """Revoke ``user``'s tokens called ``name`` (all of them with None); how many."""
    tokens = [
        t for t in await repository.list_tokens(session, user.id)
        if t.revoked_at is None and (name is None or t.name == name)
    ]  # fmt: skip
    await repository.revoke(session, tokens, datetime.now(UTC))
    return len(tokens)


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
