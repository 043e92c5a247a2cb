"""Accepted webhook messages: a message id is handled once; a replay gets the first answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# A concurrent duplicate waits on the primary key until the first commits (then it sees the
# stored answer) or rolls back (then it handles the message itself).
_CLAIM = text(
    """
    INSERT INTO webhook_messages (endpoint, message_id, status_code, response)
    VALUES (:endpoint, :message_id, 0, '{}'::jsonb)
    ON CONFLICT (endpoint, message_id) DO NOTHING
    RETURNING endpoint
    """
).bindparams(bindparam("endpoint", type_=String), bindparam("message_id", type_=String))

_ANSWERED = text(
    """
    SELECT status_code, response FROM webhook_messages
    WHERE endpoint = :endpoint AND message_id = :message_id
    """
).bindparams(bindparam("endpoint", type_=String), bindparam("message_id", type_=String))

_RECORD = text(
    """
    UPDATE webhook_messages SET status_code = :status_code, response = :response
    WHERE endpoint = :endpoint AND message_id = :message_id
    """
).bindparams(
    bindparam("endpoint", type_=String),
    bindparam("message_id", type_=String),
    bindparam("status_code", type_=Integer),
    bindparam("response", type_=JSONB),
)

_PRUNE = text(
    "DELETE FROM webhook_messages WHERE received_at < now() - make_interval(secs => :keep)"
)


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]


async def claim_message(session: AsyncSession, endpoint: str, message_id: str) -> Answer | None:
    """Take the message for handling (None), or the answer it got the first time."""
    params = {"endpoint": endpoint, "message_id": message_id}
    if await session.scalar(_CLAIM, params) is not None:
        return None
    row = (await session.execute(_ANSWERED, params)).one()
    return Answer(row.status_code, row.response)


async def record_answer(
    session: AsyncSession, endpoint: str, message_id: str, answer: Answer
) -> None:
    await session.execute(
        _RECORD,
        {
            "endpoint": endpoint,
            "message_id": message_id,
            "status_code": answer.status_code,
            "response": answer.body,
        },
    )


async def prune_messages(conn: AsyncConnection, keep_seconds: float) -> int:
    """Forget messages older than ``keep_seconds``; how many were forgotten."""
    result = await conn.execute(_PRUNE, {"keep": keep_seconds})
    return int(getattr(result, "rowcount", 0) or 0)
