"""The statements behind users and API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiToken, User
from app.db import RawStatement


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """The user an unrevoked token belongs to, and when the token was last used."""

    user: User
    token_id: int
    last_used_at: datetime | None


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.email == email))
    return user


async def add_user(session: AsyncSession, user: User) -> User:
    session.add(user)
    await session.flush()
    return user


async def add_token(session: AsyncSession, token: ApiToken) -> None:
    session.add(token)
    await session.flush()


# Every request runs this: one prepared statement on the driver, no ORM query building.
_TOKEN_OWNER = RawStatement.compile(
    """
    SELECT u.id, u.name, u.email, u.tier, u.is_admin, u.created_at,
           t.id AS token_id, t.last_used_at
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = :token_hash AND t.revoked_at IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > now())
    """
)


async def find_token_owner(session: AsyncSession, token_hash: str) -> TokenOwner | None:
    """The owner of an unrevoked, unexpired token. The user is built from the row, not loaded
    into the session: callers read it, and none changes it."""
    row = await _TOKEN_OWNER.fetchrow(await session.connection(), {"token_hash": token_hash})
    if row is None:
        return None
    user = User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        tier=row["tier"],
        is_admin=row["is_admin"],
        created_at=row["created_at"],
    )
    return TokenOwner(user, row["token_id"], row["last_used_at"])


async def record_token_use(session: AsyncSession, token_id: int, at: datetime) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at))


async def find_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_tokens(session: AsyncSession, user_id: int) -> list[ApiToken]:
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
    )
    return list(rows)


async def get_token(session: AsyncSession, token_id: int, user_id: int) -> ApiToken | None:
    found: ApiToken | None = await session.scalar(
        select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
    )
    return found


async def revoke(session: AsyncSession, tokens: list[ApiToken], at: datetime) -> None:
    for token in tokens:
        if token.revoked_at is None:
            token.revoked_at = at
    await session.flush()
