from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.executions.transitions import ALL_STATUSES

_STATUS_CHECK = "status IN (" + ", ".join(f"'{s}'" for s in ALL_STATUSES) + ")"


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Execution(Base):
    __tablename__ = "agent_executions"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        Index("ix_agent_executions_user_id_status", "user_id", "status"),
        Index("ix_agent_executions_user_id_created_at", "user_id", "created_at"),
        Index("ix_agent_executions_status_created_at", "status", "created_at"),
        # The admin list, newest first with no filter (scanned backwards). ``created_at`` and
        # ``id`` never change, so step UPDATEs stay HOT.
        Index("ix_agent_executions_created_at_id", "created_at", "id"),
        # The sweep's index of running executions leaves ``heartbeat_at`` out on purpose: a
        # step's UPDATE then changes no indexed column and stays a HOT update (no index writes).
        Index("ix_agent_executions_running", "id", postgresql_where=text("status = 'running'")),
        # Retention: finished executions by age, and the subagents sharing a workspace.
        Index(
            "ix_agent_executions_completed_at",
            "completed_at",
            postgresql_where=text("completed_at IS NOT NULL"),
        ),
        Index(
            "ix_agent_executions_workspace_id",
            "workspace_id",
            postgresql_where=text("workspace_id IS NOT NULL"),
        ),
        Index(
            "ix_agent_executions_awaiting_event",
            text("(wait ->> 'event')"),
            postgresql_where=text("status = 'awaiting_event'"),
        ),
        # Room in each page for the new row version of a HOT update.
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    agent_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    queue: Mapped[str] = mapped_column(String(100))
    # The routing rule that chose the queue (NULL for subagents: their spec's queue).
    queue_reason: Mapped[str | None] = mapped_column(String(20))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("agent_executions.id", ondelete="CASCADE"), index=True
    )
    depth: Mapped[int] = mapped_column(Integer, server_default="0")
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    state_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    step_count: Mapped[int] = mapped_column(Integer, server_default="0")
    token_usage: Mapped[int] = mapped_column(Integer, server_default="0")
    # A subagent's root (the execution started over the API its tree grew from); None for roots.
    root_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # On a root: the tokens of every subagent below it, counted against its own max_tokens.
    descendant_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    usage: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("""'{"input_tokens": 0, "output_tokens": 0}'::jsonb""")
    )
    lease: Mapped[int] = mapped_column(Integer, server_default="0")
    chunk_count: Mapped[int] = mapped_column(Integer, server_default="0")
    recovery_count: Mapped[int] = mapped_column(Integer, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wait: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set for subagents by the step that spawns them: the execution whose workspace directory
    # this one shares (NULL: its own) and the model settings it inherited.
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    inherited: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ExecutionMessage(Base):
    """One conversation turn; append-only, so a step writes only what it adds."""

    __tablename__ = "agent_messages"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("agent_executions.id", ondelete="CASCADE"),
        primary_key=True,
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()


class ExecutionLog(Base):
    """A step or status change; its id is the event id of live streams."""

    __tablename__ = "agent_logs"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (Index("ix_agent_logs_execution_id_id", "execution_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("agent_executions.id", ondelete="CASCADE")
    )
    level: Mapped[str] = mapped_column(String(10))
    event_type: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created_at()


class ExecutionSignal(Base):
    __tablename__ = "agent_signals"
    __table_args__ = (
        Index(
            "ix_agent_signals_unprocessed",
            "execution_id",
            postgresql_where=text("NOT processed"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("agent_executions.id", ondelete="CASCADE")
    )
    signal_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    processed: Mapped[bool] = mapped_column(Boolean, server_default="false")
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` of ``POST /api/agents``: the request it came with (a hash) and the
    response to replay; forgotten after a day."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
